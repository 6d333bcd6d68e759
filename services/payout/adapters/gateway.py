"""The payment gateway port and a simulated treasury/bank behind it."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

import asyncpg

from shared.db import migrate

Outcome = Literal["arrive", "transient", "permanent", "return"]
NoticeHop = Literal["accepted", "sent", "arrived", "failed", "returned"]


@dataclass(frozen=True)
class PaymentInstruction:
    payout_id: uuid.UUID
    issue_no: int
    attempt: int
    voucher_no: str
    voucher_kind: str
    amount_fen: int
    bank_name: str
    account_number: str
    account_name: str


@dataclass(frozen=True)
class Notice:
    """One hop the treasury/bank reports back for (payout id, issue, attempt)."""

    notice_id: int
    payout_id: uuid.UUID
    issue_no: int
    attempt: int
    hop: NoticeHop
    at: datetime
    reason: str | None
    permanent: bool
    bank_reference: str


BankState = Literal["in_hand", "settled", "rejected", "failed", "returned"]


@dataclass(frozen=True)
class InstructionStatus:
    """What the bank holds for one key (payout id, issue number).

    ``attempt`` is None when the bank never received that key. ``rejected``: the
    attempt failed transiently and the key is free for the next attempt.
    """

    attempt: int | None
    state: BankState | None
    reference: str | None

    @property
    def received(self) -> bool:
        return self.attempt is not None


class GatewayUnavailable(Exception):
    """No answer from the gateway (refused, timed out, connection lost). Whether the bank
    took the instruction is unknown: ask ``status`` before deciding anything."""


class PaymentGateway(Protocol):
    async def submit(self, instruction: PaymentInstruction) -> str:
        """Hand over an instruction. (payout id, issue no) is the idempotency key: the same
        key submitted again is ignored unless its previous attempt failed transiently.
        Returns the bank's reference. Raises GatewayUnavailable when it cannot take it."""

    async def due_notices(self, limit: int) -> list[Notice]:
        """Hops the treasury/bank has reached and not yet had acknowledged, in order."""

    async def acknowledge(self, notice_ids: list[int]) -> None:
        """Notices recorded by payout; the bank stops re-sending them."""

    async def status(self, payout_id: uuid.UUID, issue_no: int) -> InstructionStatus:
        """The bank's own record of an instruction key (a query, changes nothing).
        Raises GatewayUnavailable when the bank cannot be asked now."""


Planner = Callable[[PaymentInstruction], Outcome]

# Simulator hooks: account numbers ending in these digits force an outcome, so that tests
# and demos can steer single claims. Only on the first attempt/issue, so a retry or a
# re-issue goes through.
MAGIC_SUFFIXES: dict[str, Outcome] = {
    "0000001": "transient",
    "0000002": "permanent",
    "0000003": "return",
}
LOST_ANSWER_SUFFIX = "0000004"
"""The bank takes the voucher (and pays it) but its answer is lost: submit times out."""


PlannedNotice = tuple[NoticeHop, float, str | None, bool]
"""(hop, delay in seconds, reason, permanent) of a notice the simulator will send."""


def _planned_notices(outcome: Outcome, d1: float, d2: float, d3: float) -> list[PlannedNotice]:
    """The notices an outcome sends, each after its delay (cumulative: hops in order)."""
    match outcome:
        case "transient":
            return [("failed", d1, "treasury system busy (TIPS timeout)", False)]
        case "permanent":
            return [
                ("accepted", d1, None, False),
                ("failed", d1 + d2, "payee account closed", True),
            ]
        case "return":
            return [
                ("accepted", d1, None, False),
                ("sent", d1 + d2, None, False),
                ("returned", d1 + d2 + d3, "account name does not match", False),
            ]
        case _:
            return [
                ("accepted", d1, None, False),
                ("sent", d1 + d2, None, False),
                ("arrived", d1 + d2 + d3, None, False),
            ]


class SimulatedGateway:
    """A treasury + agency bank with asynchronous notices after configurable delays and
    configurable transient/permanent failure and return rates.

    Its books live in its own schema (``bank_sim``): an instruction key is taken once,
    at most one issue of a payout is live or settled (a unique index), and notices not
    acknowledged are delivered again.
    """

    SCHEMA = "bank_sim"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        min_delay_s: float,
        max_delay_s: float,
        transient_failure_rate: float = 0.0,
        permanent_failure_rate: float = 0.0,
        return_rate: float = 0.0,
        lost_answer_rate: float = 0.0,
        magic_accounts: bool = True,
        rng: random.Random | None = None,
        planner: Planner | None = None,
        client: str = "payout",
    ) -> None:
        self.pool = pool
        self.client = client
        self.min_delay_s = min_delay_s
        self.max_delay_s = max(min_delay_s, max_delay_s)
        self.transient_failure_rate = transient_failure_rate
        self.permanent_failure_rate = permanent_failure_rate
        self.return_rate = return_rate
        self.lost_answer_rate = lost_answer_rate
        self.magic_accounts = magic_accounts
        self.rng = rng or random.Random()
        self.planner = planner

    @classmethod
    async def prepare(cls, dsn: str) -> None:
        await migrate(dsn, cls.SCHEMA, Path(__file__).parent / "bank_sim_migrations")

    def plan(self, instruction: PaymentInstruction) -> Outcome:
        if self.planner is not None:
            return self.planner(instruction)
        if self.magic_accounts and instruction.attempt == 1 and instruction.issue_no == 1:
            for suffix, outcome in MAGIC_SUFFIXES.items():
                if instruction.account_number.endswith(suffix):
                    return outcome
        draw = self.rng.random()
        if draw < self.transient_failure_rate:
            return "transient"
        draw -= self.transient_failure_rate
        if draw < self.permanent_failure_rate:
            return "permanent"
        draw -= self.permanent_failure_rate
        if draw < self.return_rate:
            return "return"
        return "arrive"

    def answer_lost(self, instruction: PaymentInstruction) -> bool:
        """Whether the answer to this submit is lost after the bank took it."""
        first = instruction.attempt == 1 and instruction.issue_no == 1
        if (
            self.magic_accounts
            and first
            and instruction.account_number.endswith(LOST_ANSWER_SUFFIX)
        ):
            return True
        return self.lost_answer_rate > 0 and self.rng.random() < self.lost_answer_rate

    def _delay(self) -> float:
        return self.rng.uniform(self.min_delay_s, self.max_delay_s)

    @staticmethod
    def reference_of(payout_id: uuid.UUID, issue_no: int) -> str:
        return f"SIM-{payout_id.hex[:12].upper()}-{issue_no}"

    async def submit(self, instruction: PaymentInstruction) -> str:
        reference = self.reference_of(instruction.payout_id, instruction.issue_no)
        outcome = self.plan(instruction)
        lost = self.answer_lost(instruction)
        d1, d2, d3 = self._delay(), self._delay(), self._delay()
        async with self.pool.acquire() as conn, conn.transaction():
            taken = await conn.fetchval(
                """INSERT INTO bank_sim.instructions AS i (payout_id, issue_no, attempt,
                       amount_fen, account_number, account_name, status, settle_after)
                   VALUES ($1, $2, $3, $4, $5, $6, 'accepted', now())
                   ON CONFLICT (payout_id, issue_no) DO UPDATE
                       SET attempt = excluded.attempt, status = 'accepted',
                           received_at = now(), failure_reason = NULL, settled_at = NULL
                       WHERE i.status = 'rejected' AND i.attempt < excluded.attempt
                   RETURNING true""",
                instruction.payout_id,
                instruction.issue_no,
                instruction.attempt,
                instruction.amount_fen,
                instruction.account_number,
                instruction.account_name,
            )
            if not taken:
                return reference  # the same key again: already in hand, nothing new
            notices = _planned_notices(outcome, d1, d2, d3)
            await conn.executemany(
                """INSERT INTO bank_sim.notices (payout_id, issue_no, attempt, hop, due_at,
                       reason, permanent, bank_reference, client)
                   VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, $7, $8, $9)""",
                [
                    (
                        instruction.payout_id,
                        instruction.issue_no,
                        instruction.attempt,
                        hop,
                        delay,
                        reason,
                        permanent,
                        reference,
                        self.client,
                    )
                    for hop, delay, reason, permanent in notices
                ],
            )
        if lost:
            raise GatewayUnavailable("simulated: read timeout after the bank took the voucher")
        return reference

    async def due_notices(self, limit: int) -> list[Notice]:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT id, payout_id, issue_no, attempt, hop, due_at, reason, permanent,
                          bank_reference
                   FROM bank_sim.notices
                   WHERE NOT notified AND client = $2 AND due_at <= now()
                   ORDER BY due_at, id LIMIT $1""",
                limit,
                self.client,
            )
            # The bank's own book moves when it reports the outcome, so a retry submitted
            # after the payout hears of a transient failure finds the key free again. Only
            # the notice of the attempt the key holds moves it: a notice not acknowledged
            # is delivered again, and a late copy of attempt 1's failure must not mark the
            # retry that took the key since (attempt 2, maybe paid) rejected.
            for r in rows:
                if r["hop"] in ("arrived", "failed", "returned"):
                    status = {
                        "arrived": "settled",
                        "returned": "returned",
                        "failed": "failed" if r["permanent"] else "rejected",
                    }[r["hop"]]
                    await conn.execute(
                        """UPDATE bank_sim.instructions
                           SET status = $3, settled_at = coalesce(settled_at, $4),
                               failure_reason = $5
                           WHERE payout_id = $1 AND issue_no = $2 AND attempt = $6
                             AND status = 'accepted'""",
                        r["payout_id"],
                        r["issue_no"],
                        status,
                        r["due_at"],
                        r["reason"],
                        r["attempt"],
                    )
        return [
            Notice(
                notice_id=r["id"],
                payout_id=r["payout_id"],
                issue_no=r["issue_no"],
                attempt=r["attempt"],
                hop=r["hop"],
                at=r["due_at"],
                reason=r["reason"],
                permanent=r["permanent"],
                bank_reference=r["bank_reference"],
            )
            for r in rows
        ]

    async def acknowledge(self, notice_ids: list[int]) -> None:
        await self.pool.execute(
            "UPDATE bank_sim.notices SET notified = true WHERE id = ANY($1::bigint[])",
            notice_ids,
        )

    async def status(self, payout_id: uuid.UUID, issue_no: int) -> InstructionStatus:
        row = await self.pool.fetchrow(
            """SELECT attempt, status FROM bank_sim.instructions
               WHERE payout_id = $1 AND issue_no = $2""",
            payout_id,
            issue_no,
        )
        if row is None:
            return InstructionStatus(attempt=None, state=None, reference=None)
        states: dict[str, BankState] = {
            "accepted": "in_hand",
            "settled": "settled",
            "rejected": "rejected",
            "failed": "failed",
            "returned": "returned",
        }
        state = states[row["status"]]
        return InstructionStatus(
            attempt=row["attempt"], state=state, reference=self.reference_of(payout_id, issue_no)
        )
