"""Payout's use cases: reserve on approval (or queue, or hold), issue vouchers to the
gateway, record each hop the treasury/bank reports, resolve payouts the bank left in
doubt, retry, release, top up, correct accounts, close. Every state change and its
events commit in one transaction (outbox); business counters move only after that
commit (``shared.messaging.after_commit``).

No bank call inside a database transaction: a payout is claimed for issue (``issuing``,
reserved → committed) and committed, the gateway is called with no transaction open and
no row locked, and its answer is recorded in a short transaction of its own.

Lock order, everywhere: the fund row first (``FOR NO KEY UPDATE``), then payout rows
(``FOR UPDATE``); several funds or payouts in the order of their ids. A use case that
starts from a claim or payout id reads the payout's fund id unlocked (it never
changes), locks the fund, then the payout. The queue drain, under its fund's lock, takes
queued payouts in queue order. A deadlock is still retried (the consumer treats it as
transient; HTTP routes retry it), but this order leaves none between payout's own paths.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import asyncpg

from services.payout.adapters.gateway import (
    GatewayUnavailable,
    InstructionStatus,
    Notice,
    PaymentGateway,
    PaymentInstruction,
)
from services.payout.domain.model import (
    CANCELLABLE,
    COMMITTED,
    CORRECTABLE,
    IN_DOUBT,
    RESERVED,
    WAITING,
    PayoutStatus,
    after_approval,
    backoff_seconds,
    fund_of,
    notice_position,
    target_of_notice,
    voucher_kind,
    voucher_no,
)
from services.payout.metrics import (
    FAILURES,
    FUND_BUDGET,
    FUND_REMAINING,
    FUND_RESERVED,
    HOP_SECONDS,
    PAID_YUAN,
    PAYOUTS,
    STUCK,
    TIME_TO_PAYMENT,
)
from services.payout.metrics import WAITING as WAITING_GAUGE
from shared.contracts import (
    BankAccount,
    EventEnvelope,
    EventPayload,
    PayoutAcceptedV1,
    PayoutAccountCorrectedV1,
    PayoutConfirmedV1,
    PayoutFailedV1,
    PayoutHeldV1,
    PayoutIssuedV1,
    PayoutQueuedV1,
    PayoutReleasedV1,
    PayoutRequestedV1,
    PayoutRetryScheduledV1,
    PayoutReturnedV1,
    PayoutSentV1,
    ReviewDecidedV1,
)
from shared.contracts.topics import PAYOUT_EVENTS
from shared.db import DbConnection
from shared.messaging.after_commit import after_commit, after_commit_scope
from shared.messaging.consumer import TransientError
from shared.messaging.outbox import stage_events
from shared.programs import Catalogue, load_catalogue
from shared.table_gauges import SingleExporter

SERVICE = "payout"
T = TypeVar("T")
log = logging.getLogger(__name__)


class NotFound(LookupError):
    pass


class Conflict(Exception):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 0.5
    max_s: float = 60.0
    max_attempts: int = 8
    claim_lease_s: float = 60.0
    """A payout left ``issuing`` this long (its instance died mid-call) is resolved by
    asking the bank, like an ``unknown`` one."""


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[DbConnection]:
    """A connection in a transaction of its own; the business counters its work defers
    (``after_commit``) move once it has committed, never when it rolls back."""
    with after_commit_scope() as pending:
        async with pool.acquire() as conn, conn.transaction():
            yield conn
    pending.run()


def _count(claim_kind: str, status: PayoutStatus | str) -> None:
    """claimflow_payouts_total, once the transaction has committed."""
    label = str(status)
    after_commit(lambda: PAYOUTS.labels(claim_kind, label).inc())


def _count_failure(fund_id: str, kind: str) -> None:
    after_commit(lambda: FAILURES.labels(fund_id, kind).inc())


async def _lock_payout(
    conn: DbConnection, *, payout_id: uuid.UUID | None = None, claim_id: uuid.UUID | None = None
) -> asyncpg.Record | None:
    """The payout row, locked in the one lock order: its fund first, then the payout."""
    column, key = ("payout_id", payout_id) if payout_id is not None else ("claim_id", claim_id)
    fund_id = await conn.fetchval(f"SELECT fund_id FROM payouts WHERE {column} = $1", key)
    if fund_id is not None:
        await conn.execute("SELECT 1 FROM funds WHERE fund_id = $1 FOR NO KEY UPDATE", fund_id)
    return await conn.fetchrow(f"SELECT * FROM payouts WHERE {column} = $1 FOR UPDATE", key)


async def _lock_payouts(conn: DbConnection, payout_ids: list[uuid.UUID]) -> None:
    """Several payouts in the one lock order: their funds, then them, each by id."""
    await conn.execute(
        """SELECT 1 FROM funds WHERE fund_id IN
               (SELECT fund_id FROM payouts WHERE payout_id = ANY($1::uuid[]))
           ORDER BY fund_id FOR NO KEY UPDATE""",
        payout_ids,
    )
    await conn.execute(
        "SELECT 1 FROM payouts WHERE payout_id = ANY($1::uuid[]) ORDER BY payout_id FOR UPDATE",
        payout_ids,
    )


# --- funds ----------------------------------------------------------------------------


def fund_map(catalogue: Catalogue) -> dict[str, str]:
    """'vat_refund' or a program id → its fund id."""
    found = {"vat_refund": catalogue.vat_refund.fund}
    found.update({p.id: p.fund for p in catalogue.programs})
    return found


async def seed_funds(conn: DbConnection, catalogue: Catalogue, treasury_cap_fen: int | None) -> int:
    """Create the catalogue's funds that do not exist yet; existing budgets are kept
    (they change only by audited top-ups). Returns how many were created."""
    rows: list[tuple[str, str, str, int | None]] = [
        (catalogue.vat_refund.fund, "vat_refund", catalogue.vat_refund.name, treasury_cap_fen)
    ]
    rows += [(p.fund, "subsidy", p.name, p.budget_fen) for p in catalogue.programs]
    created = 0
    for fund_id, kind, name, budget in rows:
        created += bool(
            await conn.fetchval(
                """INSERT INTO funds (fund_id, claim_kind, name, budget_fen)
                   VALUES ($1, $2, $3, $4) ON CONFLICT (fund_id) DO NOTHING RETURNING true""",
                fund_id,
                kind,
                name,
                budget,
            )
        )
    return created


async def _try_reserve(conn: DbConnection, fund_id: str, amount_fen: int) -> bool:
    """The budget guard: a conditional update; the CHECK constraint backs it up."""
    return bool(
        await conn.fetchval(
            """UPDATE funds SET reserved_fen = reserved_fen + $2
               WHERE fund_id = $1
                 AND (budget_fen IS NULL OR budget_fen - reserved_fen - committed_fen >= $2)
               RETURNING true""",
            fund_id,
            amount_fen,
        )
    )


async def _documents(conn: DbConnection, claim_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM claim_documents WHERE claim_id = $1", claim_id)


def _wrap(
    payload: EventPayload,
    claim_id: uuid.UUID,
    at: datetime,
    cause: EventEnvelope | None = None,
) -> EventEnvelope:
    return EventEnvelope.wrap(
        payload,
        claim_id=claim_id,
        producer=SERVICE,
        correlation_id=cause.correlation_id if cause else None,
        causation_id=cause.event_id if cause else None,
        occurred_at=at,
    )


async def _hop(
    conn: DbConnection,
    payout_id: uuid.UUID,
    issue_no: int,
    attempt: int,
    hop: str,
    at: datetime,
    detail: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO payout_hops (payout_id, issue_no, attempt, hop, at, detail)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (payout_id, issue_no, attempt, hop) DO NOTHING""",
        payout_id,
        issue_no,
        attempt,
        hop,
        at,
        detail,
    )


async def _after_reserved(
    conn: DbConnection, row: asyncpg.Record, now: datetime, cause: EventEnvelope | None
) -> EventEnvelope:
    """Move a payout whose amount was just reserved to held or requested."""
    docs = await _documents(conn, row["claim_id"])
    pending = bool(row["documents_pending"]) and not (docs and docs["documents_completed_at"])
    status = after_approval(reserved=True, documents_pending=pending)
    await conn.execute(
        """UPDATE payouts SET status = $2::text, reserved_at = $3::timestamptz,
               held_at = CASE WHEN $2::text = 'held' THEN $3::timestamptz END,
               documents_pending = $4
           WHERE payout_id = $1""",
        row["payout_id"],
        status.value,
        now,
        pending,
    )
    issue_no: int = row["issue_no"]
    await _hop(conn, row["payout_id"], issue_no, 0, "reserved", now)
    _count(row["claim_kind"], status)
    if status is PayoutStatus.HELD:
        await _hop(conn, row["payout_id"], issue_no, 0, "held", now, "documents pending (容缺)")
        return _wrap(
            PayoutHeldV1(
                payout_id=row["payout_id"], fund_id=row["fund_id"], amount_fen=row["amount_fen"]
            ),
            row["claim_id"],
            now,
            cause,
        )
    return _wrap(
        PayoutRequestedV1(
            payout_id=row["payout_id"],
            amount_fen=row["amount_fen"],
            payee=BankAccount.model_validate_json(row["payee"]),
        ),
        row["claim_id"],
        now,
        cause,
    )


async def drain_queue(conn: DbConnection, fund_id: str, now: datetime) -> list[EventEnvelope]:
    """Reserve for queued payouts of a fund, first come first served, until one does not
    fit (it stays at the head). Call inside the transaction that freed the money."""
    await conn.execute("SELECT 1 FROM funds WHERE fund_id = $1 FOR NO KEY UPDATE", fund_id)
    events: list[EventEnvelope] = []
    queued = await conn.fetch(
        """SELECT * FROM payouts WHERE fund_id = $1 AND status = 'queued'
           ORDER BY queue_seq FOR UPDATE""",
        fund_id,
    )
    for row in queued:
        if not await _try_reserve(conn, fund_id, row["amount_fen"]):
            break
        events.append(await _after_reserved(conn, row, now, None))
    return events


# --- events from review and intake ----------------------------------------------------


async def on_review_decided(conn: DbConnection, envelope: EventEnvelope) -> None:
    decided = envelope.parse_payload()
    assert isinstance(decided, ReviewDecidedV1)
    if decided.decision != "approved" or decided.approved_amount_fen <= 0:
        return
    fund_id = fund_of(decided.claim_kind, decided.program_id, fund_map(load_catalogue()))
    # The fund's row lock serialises every reservation on the fund (taken before the
    # payout row, whose foreign key would otherwise share-lock the fund first).
    if not await conn.fetchval(
        "SELECT true FROM funds WHERE fund_id = $1 FOR NO KEY UPDATE", fund_id
    ):
        # Funds are seeded when the service starts; read the batch again shortly.
        raise TransientError(f"fund {fund_id!r} not seeded yet")
    payout_id = uuid.uuid4()
    now = datetime.now(UTC)
    row = await conn.fetchrow(
        """INSERT INTO payouts (payout_id, claim_id, claim_kind, amount_fen,
               approved_amount_fen, payee, status, claim_received_at, requested_at, fund_id,
               program_id, voucher_kind, documents_pending)
           VALUES ($1, $2, $3, $4, $4, $5::jsonb, 'queued', $6, $7, $8, $9, $10, $11)
           ON CONFLICT (claim_id) DO NOTHING RETURNING *""",
        payout_id,
        envelope.claim_id,
        decided.claim_kind,
        decided.approved_amount_fen,
        decided.payee.model_dump_json(),
        decided.claim_received_at,
        now,
        fund_id,
        decided.program_id,
        voucher_kind(decided.claim_kind),
        decided.documents_pending,
    )
    if row is None:
        return  # a second approval for a claim already in payout pays nothing more
    docs = await _documents(conn, envelope.claim_id)
    if docs and (docs["lapsed_at"] or docs["withdrawn_at"]):
        reason = "lapsed" if docs["lapsed_at"] else "withdrawn"
        events = [await _release(conn, row, f"claim {reason} before approval", now, envelope)]
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
        return
    # A claim that finds others waiting joins the queue behind them (first come, first
    # served), even when it would fit.
    someone_waiting = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM payouts WHERE fund_id = $1 AND status = 'queued' "
        "AND payout_id <> $2)",
        fund_id,
        payout_id,
    )
    if not someone_waiting and await _try_reserve(conn, fund_id, decided.approved_amount_fen):
        events = [await _after_reserved(conn, row, now, envelope)]
    else:
        seq = await conn.fetchval(
            """UPDATE payouts SET queue_seq = nextval('payout_queue_seq'), queued_at = $2
               WHERE payout_id = $1 RETURNING queue_seq""",
            payout_id,
            now,
        )
        position = await _queue_position(conn, fund_id, seq)
        await _hop(conn, payout_id, 1, 0, "queued", now, f"position {position}")
        _count(decided.claim_kind, PayoutStatus.QUEUED)
        events = [
            _wrap(
                PayoutQueuedV1(
                    payout_id=payout_id,
                    fund_id=fund_id,
                    amount_fen=decided.approved_amount_fen,
                    position=position,
                ),
                envelope.claim_id,
                now,
                envelope,
            )
        ]
    await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)


async def _queue_position(conn: DbConnection, fund_id: str, queue_seq: int) -> int:
    """Where a payout queued as ``queue_seq`` stands in its fund's queue (1 = next)."""
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM payouts
               WHERE fund_id = $1 AND status = 'queued' AND queue_seq <= $2""",
            fund_id,
            queue_seq,
        )
    )


async def _release(
    conn: DbConnection,
    row: asyncpg.Record,
    reason: str,
    now: datetime,
    cause: EventEnvelope | None,
) -> EventEnvelope:
    """A cancellable payout → released, giving its reservation or commitment back."""
    status = PayoutStatus(row["status"])
    if status in RESERVED:
        await conn.execute(
            "UPDATE funds SET reserved_fen = reserved_fen - $2 WHERE fund_id = $1",
            row["fund_id"],
            row["amount_fen"],
        )
    elif status in COMMITTED:  # retrying or returned: no money is with the bank
        await conn.execute(
            "UPDATE funds SET committed_fen = committed_fen - $2 WHERE fund_id = $1",
            row["fund_id"],
            row["amount_fen"],
        )
    await conn.execute(
        """UPDATE payouts SET status = 'released', released_at = $2, release_reason = $3,
               queue_seq = NULL
           WHERE payout_id = $1""",
        row["payout_id"],
        now,
        reason,
    )
    await _hop(conn, row["payout_id"], row["issue_no"], row["attempts"], "released", now, reason)
    _count(row["claim_kind"], PayoutStatus.RELEASED)
    return _wrap(
        PayoutReleasedV1(
            payout_id=row["payout_id"],
            fund_id=row["fund_id"],
            amount_fen=row["amount_fen"],
            reason=reason,
        ),
        row["claim_id"],
        now,
        cause,
    )


async def on_documents_completed(conn: DbConnection, envelope: EventEnvelope) -> None:
    now = datetime.now(UTC)
    await conn.execute(
        """INSERT INTO claim_documents (claim_id, documents_completed_at) VALUES ($1, $2)
           ON CONFLICT (claim_id) DO UPDATE
               SET documents_completed_at = coalesce(claim_documents.documents_completed_at,
                                                     excluded.documents_completed_at),
                   updated_at = now()""",
        envelope.claim_id,
        envelope.occurred_at,
    )
    row = await _lock_payout(conn, claim_id=envelope.claim_id)
    if row is None:
        return  # recorded: the approval, when it comes, will find the documents complete
    if row["status"] == PayoutStatus.QUEUED:
        await conn.execute(
            "UPDATE payouts SET documents_pending = false WHERE payout_id = $1", row["payout_id"]
        )
        return
    if row["status"] != PayoutStatus.HELD:
        return
    await conn.execute(
        """UPDATE payouts SET status = 'requested', documents_pending = false
           WHERE payout_id = $1""",
        row["payout_id"],
    )
    _count(row["claim_kind"], PayoutStatus.REQUESTED)
    event = _wrap(
        PayoutRequestedV1(
            payout_id=row["payout_id"],
            amount_fen=row["amount_fen"],
            payee=BankAccount.model_validate_json(row["payee"]),
        ),
        row["claim_id"],
        now,
        envelope,
    )
    await stage_events(conn, SERVICE, PAYOUT_EVENTS, [event])


async def _on_claim_ended(conn: DbConnection, envelope: EventEnvelope, ending: str) -> None:
    column = "lapsed_at" if ending == "lapsed" else "withdrawn_at"
    await conn.execute(
        f"""INSERT INTO claim_documents (claim_id, {column}, reason) VALUES ($1, $2, $3)
            ON CONFLICT (claim_id) DO UPDATE
                SET {column} = coalesce(claim_documents.{column}, excluded.{column}),
                    reason = coalesce(claim_documents.reason, excluded.reason),
                    updated_at = now()""",
        envelope.claim_id,
        envelope.occurred_at,
        f"claim {ending}",
    )
    row = await _lock_payout(conn, claim_id=envelope.claim_id)
    if row is None:
        return  # recorded: a later approval releases at once
    now = datetime.now(UTC)
    status = PayoutStatus(row["status"])
    if status in CANCELLABLE:
        events = [await _release(conn, row, f"claim {ending}", now, envelope)]
        events += await drain_queue(conn, row["fund_id"], now)
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    elif status is not PayoutStatus.RELEASED:
        # Payment has started or finished, or the bank may have the money (issuing,
        # unknown): never un-pay; record and surface it.
        note = f"claim {ending} at {envelope.occurred_at.isoformat()} while payout {status}"
        await conn.execute(
            """UPDATE payouts SET late_cancellation = coalesce(late_cancellation, $2)
               WHERE payout_id = $1""",
            row["payout_id"],
            note,
        )
        await _hop(
            conn,
            row["payout_id"],
            row["issue_no"],
            row["attempts"],
            "late_cancellation",
            now,
            note,
        )


async def on_claim_lapsed(conn: DbConnection, envelope: EventEnvelope) -> None:
    await _on_claim_ended(conn, envelope, "lapsed")


async def on_claim_withdrawn(conn: DbConnection, envelope: EventEnvelope) -> None:
    await _on_claim_ended(conn, envelope, "withdrawn")


# --- the gateway: claim, call the bank outside any transaction, record -----------------


@dataclass(frozen=True)
class _Claimed:
    """A payout claimed for issue (committed as ``issuing``) and what to send."""

    payout_id: uuid.UUID
    claim_kind: str
    instruction: PaymentInstruction


async def dispatch_requested(
    pool: asyncpg.Pool,
    gateway: PaymentGateway,
    policy: RetryPolicy | None = None,
    limit: int = 100,
) -> int:
    """Issue requested payouts and due retries: claim them in one short transaction,
    call the bank with no transaction open, record each answer in its own transaction.

    A crash after the claim leaves the payout ``issuing``; the bank's notices move it on
    if the bank has it, and after ``claim_lease_s`` the resolver asks the bank."""
    policy = policy or RetryPolicy()
    claimed = await _claim_for_issue(pool, limit)
    for c in claimed:
        i = c.instruction
        try:
            reference = await gateway.submit(i)
            held = i.attempt
            if i.attempt > 1:
                # A retry: the bank answers "in hand" also when it holds an earlier attempt
                # of this key (one still on its way when the bank was asked): learn which.
                answer = await gateway.status(i.payout_id, i.issue_no)
                held = answer.attempt if answer.attempt is not None else i.attempt
        except GatewayUnavailable as exc:
            # The bank may have taken it before the line went quiet: unknown, not failed.
            await _record_submit(pool, c, None, f"no answer from the bank: {exc}", policy)
        else:
            await _record_submit(pool, c, reference, None, policy, held_attempt=held)
    return len(claimed)


async def _claim_for_issue(pool: asyncpg.Pool, limit: int) -> list[_Claimed]:
    due = """(status = 'requested' OR (status = 'retrying' AND next_attempt_at <= now()))"""
    async with transaction(pool) as conn:
        candidates = await conn.fetch(
            f"SELECT payout_id FROM payouts WHERE {due} ORDER BY requested_at LIMIT $1", limit
        )
        if not candidates:
            return []
        ids = [r["payout_id"] for r in candidates]
        # Lock order: the funds, then the payouts (another instance's claims are skipped).
        await conn.execute(
            """SELECT 1 FROM funds WHERE fund_id IN
                   (SELECT fund_id FROM payouts WHERE payout_id = ANY($1::uuid[]))
               ORDER BY fund_id FOR NO KEY UPDATE""",
            ids,
        )
        rows = await conn.fetch(
            f"""SELECT * FROM payouts WHERE payout_id = ANY($1::uuid[]) AND {due}
                ORDER BY payout_id FOR UPDATE SKIP LOCKED""",
            ids,
        )
        claimed: list[_Claimed] = []
        events: list[EventEnvelope] = []
        now = datetime.now(UTC)
        for r in sorted(rows, key=lambda r: r["requested_at"]):
            if r["status"] == PayoutStatus.REQUESTED:
                # The reservation becomes a commitment: the money is leaving.
                await conn.execute(
                    """UPDATE funds SET reserved_fen = reserved_fen - $2,
                           committed_fen = committed_fen + $2
                       WHERE fund_id = $1""",
                    r["fund_id"],
                    r["amount_fen"],
                )
            payee = BankAccount.model_validate_json(r["payee"])
            attempt: int = r["attempts"] + 1
            kind = r["voucher_kind"] or voucher_kind(r["claim_kind"])
            number = voucher_no(kind, r["payout_id"], r["issue_no"])
            await conn.execute(
                """INSERT INTO vouchers (payout_id, issue_no, voucher_no, voucher_kind,
                       amount_fen, bank_name, account_name, account_number, issued_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT (payout_id, issue_no) DO NOTHING""",
                r["payout_id"],
                r["issue_no"],
                number,
                kind,
                r["amount_fen"],
                payee.bank_name,
                payee.account_name,
                payee.account_number,
                now,
            )
            await conn.execute(
                """UPDATE payouts SET status = 'issuing', attempts = $2, issued_at = $3,
                       next_attempt_at = NULL
                   WHERE payout_id = $1""",
                r["payout_id"],
                attempt,
                now,
            )
            await _hop(conn, r["payout_id"], r["issue_no"], attempt, "issued", now, number)
            _count(r["claim_kind"], PayoutStatus.ISSUED)
            events.append(
                _wrap(
                    PayoutIssuedV1(
                        payout_id=r["payout_id"],
                        voucher_no=number,
                        voucher_kind=kind,
                        issue_no=r["issue_no"],
                        attempt=attempt,
                        amount_fen=r["amount_fen"],
                    ),
                    r["claim_id"],
                    now,
                )
            )
            claimed.append(
                _Claimed(
                    payout_id=r["payout_id"],
                    claim_kind=r["claim_kind"],
                    instruction=PaymentInstruction(
                        payout_id=r["payout_id"],
                        issue_no=r["issue_no"],
                        attempt=attempt,
                        voucher_no=number,
                        voucher_kind=kind,
                        amount_fen=r["amount_fen"],
                        bank_name=payee.bank_name,
                        account_number=payee.account_number,
                        account_name=payee.account_name,
                    ),
                )
            )
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    return claimed


async def _record_submit(
    pool: asyncpg.Pool,
    c: _Claimed,
    reference: str | None,
    error: str | None,
    policy: RetryPolicy,
    held_attempt: int | None = None,
) -> None:
    """The bank's answer to one submit, in its own short transaction. Its notices may
    have moved the payout on already (another instance, or a fast bank): then only the
    reference is kept. ``held_attempt``: the attempt the bank holds for the key, when
    it is an earlier one than submitted; the payout adopts it, so its notices match."""
    i = c.instruction
    async with transaction(pool) as conn:
        row = await _lock_payout(conn, payout_id=c.payout_id)
        if row is None or (row["issue_no"], row["attempts"]) != (i.issue_no, i.attempt):
            return
        if reference is not None:
            issuing = row["status"] == PayoutStatus.ISSUING
            attempt = held_attempt if issuing and held_attempt is not None else i.attempt
            await conn.execute(
                """UPDATE payouts SET gateway_reference = $2, attempts = $3,
                       status = CASE WHEN status = 'issuing' THEN 'issued' ELSE status END
                   WHERE payout_id = $1""",
                c.payout_id,
                reference,
                attempt,
            )
            if attempt != i.attempt:
                detail = f"the bank has attempt {attempt}, not {i.attempt}"
                now = datetime.now(UTC)
                await _hop(conn, c.payout_id, i.issue_no, attempt, "bank_status", now, detail)
            return
        if row["status"] != PayoutStatus.ISSUING:
            return  # a notice already told what the bank did with it
        now = datetime.now(UTC)
        wait = backoff_seconds(i.attempt, base_s=policy.base_s, max_s=policy.max_s)
        await conn.execute(
            "UPDATE payouts SET status = 'unknown', next_attempt_at = $2 WHERE payout_id = $1",
            c.payout_id,
            now + timedelta(seconds=wait),
        )
        await _hop(conn, c.payout_id, i.issue_no, i.attempt, "unknown", now, error)
        _count(c.claim_kind, PayoutStatus.UNKNOWN)


async def resolve_unknown(
    pool: asyncpg.Pool,
    gateway: PaymentGateway,
    policy: RetryPolicy | None = None,
    limit: int = 100,
) -> int:
    """Ask the bank about payouts in doubt: ``unknown`` ones whose wait is over and
    ``issuing`` ones older than the claim lease (their instance died mid-call). The bank
    has the attempt → issued (its notices follow); it never got it → retrying (or failed
    after the last attempt). Bank queries run with no transaction open. Returns how many
    were resolved."""
    policy = policy or RetryPolicy()
    rows = await pool.fetch(
        """SELECT payout_id, issue_no, attempts FROM payouts
           WHERE (status = 'unknown' AND next_attempt_at <= now())
              OR (status = 'issuing' AND status_at < now() - make_interval(secs => $2))
           ORDER BY status_at LIMIT $1""",
        limit,
        policy.claim_lease_s,
    )
    resolved = 0
    for r in rows:
        try:
            answer = await gateway.status(r["payout_id"], r["issue_no"])
        except GatewayUnavailable:
            continue  # ask again on the next round; the payout stays in doubt
        resolved += await _apply_bank_status(
            pool, r["payout_id"], r["issue_no"], r["attempts"], answer, policy
        )
    return resolved


async def _apply_bank_status(
    pool: asyncpg.Pool,
    payout_id: uuid.UUID,
    issue_no: int,
    attempts: int,
    answer: InstructionStatus,
    policy: RetryPolicy,
) -> int:
    async with transaction(pool) as conn:
        row = await _lock_payout(conn, payout_id=payout_id)
        if (
            row is None
            or row["status"] not in (PayoutStatus.UNKNOWN, PayoutStatus.ISSUING)
            or (row["issue_no"], row["attempts"]) != (issue_no, attempts)
        ):
            return 0  # moved on meanwhile (a notice came)
        now = datetime.now(UTC)
        # Not received: the bank has no such key, or only an earlier attempt it rejected.
        never_got_it = answer.attempt is None or (
            answer.attempt < attempts and answer.state == "rejected"
        )
        if not never_got_it:
            # The bank holds this key: adopt the attempt it has, so its notices match.
            assert answer.attempt is not None
            await conn.execute(
                """UPDATE payouts SET status = 'issued', attempts = $2, next_attempt_at = NULL,
                       gateway_reference = coalesce($3, gateway_reference)
                   WHERE payout_id = $1""",
                payout_id,
                answer.attempt,
                answer.reference,
            )
            detail = f"the bank has attempt {answer.attempt} ({answer.state})"
            await _hop(conn, payout_id, issue_no, answer.attempt, "bank_status", now, detail)
            return 1
        detail = f"the bank never received attempt {attempts}"
        await _hop(conn, payout_id, issue_no, attempts, "bank_status", now, detail)
        fund, kind = row["fund_id"], row["claim_kind"]
        if attempts >= policy.max_attempts:
            events = await _fail(conn, row, issue_no, now, f"retries exhausted: {detail}")
            events += await drain_queue(conn, fund, now)
        else:
            await conn.execute(
                "UPDATE payouts SET status = 'retrying', next_attempt_at = $2 WHERE payout_id = $1",
                payout_id,
                now,
            )
            _count(kind, PayoutStatus.RETRYING)
            _count_failure(fund, "transient")
            events = [
                _wrap(
                    PayoutRetryScheduledV1(
                        payout_id=payout_id, reason=detail, attempt=attempts, next_attempt_at=now
                    ),
                    row["claim_id"],
                    now,
                )
            ]
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
        return 1


async def _end_issue(
    conn: DbConnection,
    payout_id: uuid.UUID,
    issue_no: int,
    outcome: Literal["failed", "returned"],
    at: datetime,
    reason: str,
) -> None:
    """Record on the payout and on its current voucher that the issue ended so."""
    # ``outcome`` is one of two literals (never input): it names the status and the
    # ``failed_at`` / ``returned_at`` columns.
    await conn.execute(
        f"""UPDATE payouts SET status = '{outcome}', {outcome}_at = $2, failure_reason = $3
           WHERE payout_id = $1""",
        payout_id,
        at,
        reason,
    )
    await conn.execute(
        f"""UPDATE vouchers SET {outcome}_at = $3, outcome = '{outcome}', reason = $4
           WHERE payout_id = $1 AND issue_no = $2""",
        payout_id,
        issue_no,
        at,
        reason,
    )


async def _fail(
    conn: DbConnection, row: asyncpg.Record, issue_no: int, at: datetime, reason: str
) -> list[EventEnvelope]:
    """Final failure of the current issue: the commitment goes back to the fund."""
    pid, fund, amount = row["payout_id"], row["fund_id"], row["amount_fen"]
    await _end_issue(conn, pid, issue_no, "failed", at, reason)
    await conn.execute(
        "UPDATE funds SET committed_fen = committed_fen - $2 WHERE fund_id = $1", fund, amount
    )
    _count(row["claim_kind"], PayoutStatus.FAILED)
    _count_failure(fund, "permanent")
    return [
        _wrap(PayoutFailedV1(payout_id=pid, reason=reason, permanent=True), row["claim_id"], at)
    ]


async def record_notices(
    pool: asyncpg.Pool,
    gateway: PaymentGateway,
    policy: RetryPolicy | None = None,
    limit: int = 500,
) -> int:
    """Apply the bank's notices in order. Notices behind the payout (an issue or attempt
    it has left) and repeats change nothing and are acknowledged; notices ahead of it
    (an attempt it has not recorded yet) are kept, unacknowledged, until it catches up.
    Returns how many notices were acknowledged."""
    policy = policy or RetryPolicy()
    notices = await gateway.due_notices(limit)
    if not notices:
        return 0
    kept: set[int] = set()
    async with transaction(pool) as conn:
        await _lock_payouts(conn, sorted({n.payout_id for n in notices}))
        events: list[EventEnvelope] = []
        for n in notices:
            applied = await _apply_notice(conn, n, policy)
            if applied is None:
                kept.add(n.notice_id)
            else:
                events += applied
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    done = [n.notice_id for n in notices if n.notice_id not in kept]
    if done:
        await gateway.acknowledge(done)
    if kept:
        log.info("%d bank notices ahead of their payouts kept for later", len(kept))
    return len(done)


async def _apply_notice(
    conn: DbConnection, n: Notice, policy: RetryPolicy
) -> list[EventEnvelope] | None:
    """The events of one notice; None when the notice is ahead of the payout (keep it)."""
    row = await conn.fetchrow("SELECT * FROM payouts WHERE payout_id = $1 FOR UPDATE", n.payout_id)
    if row is None:
        return []  # not ours (the bank's books are shared with other clients' tests)
    position = notice_position(row["issue_no"], row["attempts"], n.issue_no, n.attempt)
    in_doubt = row["status"] in (PayoutStatus.ISSUING, PayoutStatus.UNKNOWN)
    if position == "behind" and in_doubt and n.issue_no == row["issue_no"]:
        # An earlier attempt of this issue while the current one is in doubt: the bank
        # may hold that earlier one (it was on its way when the bank was asked). Kept
        # until the bank's answer settles which attempt is live.
        return None
    if position == "behind":
        return []  # a late copy about an issue or attempt the payout has left
    if position == "ahead":
        return None
    current = PayoutStatus(row["status"])
    target = target_of_notice(
        current, n.hop, permanent=n.permanent, attempts=n.attempt, max_attempts=policy.max_attempts
    )
    if target is None:
        return []
    pid, claim_id, kind, fund = row["payout_id"], row["claim_id"], row["claim_kind"], row["fund_id"]
    amount = row["amount_fen"]
    number = voucher_no(row["voucher_kind"] or voucher_kind(kind), pid, n.issue_no)
    at = n.at
    voucher = await conn.fetchrow(
        "SELECT * FROM vouchers WHERE payout_id = $1 AND issue_no = $2", pid, n.issue_no
    )
    hop_name = {PayoutStatus.PAID: "arrived", PayoutStatus.RETRYING: "failed_transient"}.get(
        target, target.value
    )
    await _hop(conn, pid, n.issue_no, n.attempt, hop_name, at, n.reason)
    if target is not PayoutStatus.FAILED:  # _fail counts its own
        _count(kind, target)
    payload: EventPayload
    extra: list[EventEnvelope] = []
    if target is PayoutStatus.ACCEPTED:
        await conn.execute(
            """UPDATE payouts SET status = 'accepted', accepted_at = $2,
                   gateway_reference = coalesce(gateway_reference, $3)
               WHERE payout_id = $1""",
            pid,
            at,
            n.bank_reference,
        )
        await conn.execute(
            "UPDATE vouchers SET accepted_at = $3 WHERE payout_id = $1 AND issue_no = $2",
            pid,
            n.issue_no,
            at,
        )
        if voucher is not None:
            secs = (at - voucher["issued_at"]).total_seconds()
            after_commit(lambda: HOP_SECONDS.labels("issued_to_accepted").observe(secs))
        payload = PayoutAcceptedV1(payout_id=pid, voucher_no=number, accepted_at=at)
    elif target is PayoutStatus.SENT:
        await conn.execute(
            """UPDATE payouts SET status = 'sent', sent_at = $2,
                   gateway_reference = coalesce(gateway_reference, $3)
               WHERE payout_id = $1""",
            pid,
            at,
            n.bank_reference,
        )
        await conn.execute(
            "UPDATE vouchers SET sent_at = $3 WHERE payout_id = $1 AND issue_no = $2",
            pid,
            n.issue_no,
            at,
        )
        if voucher is not None and voucher["accepted_at"] is not None:
            secs = (at - voucher["accepted_at"]).total_seconds()
            after_commit(lambda: HOP_SECONDS.labels("accepted_to_sent").observe(secs))
        payload = PayoutSentV1(payout_id=pid, amount_fen=amount, gateway_reference=n.bank_reference)
    elif target is PayoutStatus.PAID:
        await conn.execute(
            """UPDATE payouts SET status = 'paid', paid_at = $2,
                   paid_amount_fen = paid_amount_fen + amount_fen
               WHERE payout_id = $1""",
            pid,
            at,
        )
        await conn.execute(
            """UPDATE vouchers SET arrived_at = $3, outcome = 'arrived'
               WHERE payout_id = $1 AND issue_no = $2""",
            pid,
            n.issue_no,
            at,
        )
        await conn.execute(
            "UPDATE funds SET paid_fen = paid_fen + $2 WHERE fund_id = $1", fund, amount
        )
        ttp = max(0.0, (at - row["claim_received_at"]).total_seconds())
        sent_at = voucher["sent_at"] if voucher is not None else None
        hop_secs = (at - sent_at).total_seconds() if sent_at is not None else None

        def observe_paid() -> None:
            PAID_YUAN.labels(kind).inc(amount / 100)
            TIME_TO_PAYMENT.labels(kind).observe(ttp)
            if hop_secs is not None:
                HOP_SECONDS.labels("sent_to_arrived").observe(hop_secs)

        after_commit(observe_paid)
        payload = PayoutConfirmedV1(
            payout_id=pid, amount_fen=amount, arrived_at=at, time_to_payment_seconds=ttp
        )
    elif target is PayoutStatus.RETRYING:
        delay = backoff_seconds(n.attempt, base_s=policy.base_s, max_s=policy.max_s)
        next_at = datetime.now(UTC) + timedelta(seconds=delay)
        await conn.execute(
            "UPDATE payouts SET status = 'retrying', next_attempt_at = $2 WHERE payout_id = $1",
            pid,
            next_at,
        )
        _count_failure(fund, "transient")
        payload = PayoutRetryScheduledV1(
            payout_id=pid,
            reason=n.reason or "transient failure",
            attempt=n.attempt,
            next_attempt_at=next_at,
        )
    elif target is PayoutStatus.FAILED:
        reason = n.reason or "failed at the bank"
        if not n.permanent:
            reason = f"retries exhausted after {n.attempt} attempts: {reason}"
        # Final failure: the commitment goes back to the fund, and the queue may move.
        failed = await _fail(conn, row, n.issue_no, at, reason)
        return failed + await drain_queue(conn, fund, datetime.now(UTC))
    else:  # RETURNED
        reason = n.reason or "returned by the bank"
        await _end_issue(conn, pid, n.issue_no, "returned", at, reason)
        _count_failure(fund, "returned")
        payload = PayoutReturnedV1(
            payout_id=pid, voucher_no=number, amount_fen=amount, reason=reason
        )
    return [_wrap(payload, claim_id, at), *extra]


# --- finance staff's actions ----------------------------------------------------------
#
# Each action has a form that works inside a caller's transaction (``*_in``: the HTTP
# routes run it in the transaction that also stores the Idempotency-Key's response) and
# a form that opens its own, retried after a deadlock.


async def retried_on_conflict(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` (one whole transaction) again after a deadlock or serialization
    failure: five tries, a short and growing pause between them."""
    for n in range(5):
        try:
            return await attempt()
        except (
            asyncpg.exceptions.DeadlockDetectedError,
            asyncpg.exceptions.SerializationError,
        ):
            if n == 4:
                raise
            await asyncio.sleep(0.05 * (n + 1))
    raise AssertionError("unreachable")


async def with_retry(pool: asyncpg.Pool, work: Callable[[DbConnection], Awaitable[T]]) -> T:
    """Run work in a transaction, again after a deadlock or serialization failure;
    deferred counters run once, after the commit that counts."""

    async def once() -> T:
        async with transaction(pool) as conn:
            return await work(conn)

    return await retried_on_conflict(once)


async def _audit_payout_action(
    conn: DbConnection,
    actor: str,
    action: Literal["account_correction", "close"],
    row: asyncpg.Record,
    reason: str,
    detail: dict[str, Any],
) -> None:
    """The finance_audit row of a finance action on one payout (``row``)."""
    await conn.execute(
        """INSERT INTO finance_audit (actor, action, fund_id, payout_id, amount_fen, reason,
               detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)""",
        actor,
        action,
        row["fund_id"],
        row["payout_id"],
        row["amount_fen"],
        reason,
        json.dumps(detail),
    )


async def top_up_in(
    conn: DbConnection, fund_id: str, amount_fen: int, actor: str, reason: str
) -> list[EventEnvelope]:
    """Add to a fund's budget (audited) and pay the queue from it."""
    fund = await conn.fetchrow("SELECT * FROM funds WHERE fund_id = $1 FOR NO KEY UPDATE", fund_id)
    if fund is None:
        raise NotFound(f"no fund {fund_id!r}")
    if fund["budget_fen"] is None:
        raise Conflict(f"fund {fund_id!r} has no cap; there is nothing to top up")
    await conn.execute(
        "UPDATE funds SET budget_fen = budget_fen + $2 WHERE fund_id = $1", fund_id, amount_fen
    )
    await conn.execute(
        """INSERT INTO finance_audit (actor, action, fund_id, amount_fen, reason, detail)
           VALUES ($1, 'top_up', $2, $3, $4, $5::jsonb)""",
        actor,
        fund_id,
        amount_fen,
        reason,
        json.dumps({"budget_before_fen": fund["budget_fen"]}),
    )
    events = await drain_queue(conn, fund_id, datetime.now(UTC))
    await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    return events


async def top_up(
    pool: asyncpg.Pool, fund_id: str, amount_fen: int, actor: str, reason: str
) -> list[EventEnvelope]:
    return await with_retry(pool, lambda conn: top_up_in(conn, fund_id, amount_fen, actor, reason))


async def correct_account_in(
    conn: DbConnection, payout_id: uuid.UUID, payee: BankAccount, actor: str, reason: str
) -> tuple[int, PayoutStatus]:
    """A returned or permanently failed payout gets the corrected account and is issued
    again as the next issue number, same amount. Returned: the money came back and the
    commitment was kept, so it is re-issued at once (retrying). Failed: the commitment
    went back to the fund at the failure, so it is reserved again (requested) or, when
    the fund cannot cover it or others wait, joins the queue. Returns (issue, status)."""
    row = await _lock_payout(conn, payout_id=payout_id)
    if row is None:
        raise NotFound(f"no payout {payout_id}")
    status = PayoutStatus(row["status"])
    if status not in CORRECTABLE:
        raise Conflict(
            f"payout is {status}; only a returned or permanently failed payout is corrected"
        )
    now = datetime.now(UTC)
    issue_no: int = row["issue_no"] + 1
    events: list[EventEnvelope] = []
    await conn.execute(
        """UPDATE payouts SET payee = $2::jsonb, issue_no = $3, attempts = 0,
               failure_reason = NULL, failed_at = NULL
           WHERE payout_id = $1""",
        payout_id,
        payee.model_dump_json(),
        issue_no,
    )
    await _audit_payout_action(
        conn,
        actor,
        "account_correction",
        row,
        reason,
        {"before": json.loads(row["payee"]), "after": payee.model_dump(), "was": status},
    )
    await _hop(conn, payout_id, issue_no, 0, "account_corrected", now, reason)
    events.append(
        _wrap(
            PayoutAccountCorrectedV1(
                payout_id=payout_id, payee=payee, next_issue_no=issue_no, corrected_by=actor
            ),
            row["claim_id"],
            now,
        )
    )
    if status is PayoutStatus.RETURNED:
        target = PayoutStatus.RETRYING
        await conn.execute(
            "UPDATE payouts SET status = 'retrying', next_attempt_at = $2 WHERE payout_id = $1",
            payout_id,
            now,
        )
    else:
        fund_id, amount = row["fund_id"], row["amount_fen"]
        someone_waiting = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM payouts WHERE fund_id = $1 AND status = 'queued')",
            fund_id,
        )
        if not someone_waiting and await _try_reserve(conn, fund_id, amount):
            target = PayoutStatus.REQUESTED
            await conn.execute(
                """UPDATE payouts SET status = 'requested', reserved_at = $2,
                       documents_pending = false
                   WHERE payout_id = $1""",
                payout_id,
                now,
            )
            await _hop(conn, payout_id, issue_no, 0, "reserved", now)
        else:
            target = PayoutStatus.QUEUED
            seq = await conn.fetchval(
                """UPDATE payouts SET status = 'queued', documents_pending = false,
                       queue_seq = nextval('payout_queue_seq'), queued_at = $2
                   WHERE payout_id = $1 RETURNING queue_seq""",
                payout_id,
                now,
            )
            position = await _queue_position(conn, fund_id, seq)
            await _hop(conn, payout_id, issue_no, 0, "queued", now, f"position {position}")
            events.append(
                _wrap(
                    PayoutQueuedV1(
                        payout_id=payout_id,
                        fund_id=fund_id,
                        amount_fen=amount,
                        position=position,
                    ),
                    row["claim_id"],
                    now,
                )
            )
    _count(row["claim_kind"], target)
    await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    return issue_no, target


async def correct_account(
    pool: asyncpg.Pool, payout_id: uuid.UUID, payee: BankAccount, actor: str, reason: str
) -> int:
    """correct_account_in in its own transaction; returns the new issue number."""
    issue_no, _ = await with_retry(
        pool, lambda conn: correct_account_in(conn, payout_id, payee, actor, reason)
    )
    return issue_no


CLOSED_BY_FINANCE = "closed by finance: "
"""Prefix of the ``payout.released`` reason when finance closes a payout (intake's
tracker reads a release of a claim whose payout failed as closed)."""


async def close_payout_in(
    conn: DbConnection, payout_id: uuid.UUID, actor: str, reason: str
) -> asyncpg.Record:
    """Finance gives up on a returned or permanently failed payout, with a reason: it is
    released (a returned one's commitment goes back to the fund; a failed one's went back
    at the failure) and the queue may move. Returns the released row."""
    row = await _lock_payout(conn, payout_id=payout_id)
    if row is None:
        raise NotFound(f"no payout {payout_id}")
    if PayoutStatus(row["status"]) not in CORRECTABLE:
        raise Conflict(
            f"payout is {row['status']}; only a returned or permanently failed payout is closed"
        )
    now = datetime.now(UTC)
    events = [await _release(conn, row, CLOSED_BY_FINANCE + reason, now, None)]
    await _audit_payout_action(conn, actor, "close", row, reason, {"was": row["status"]})
    events += await drain_queue(conn, row["fund_id"], now)
    await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    closed = await conn.fetchrow("SELECT * FROM payouts WHERE payout_id = $1", payout_id)
    assert closed is not None
    return closed


async def close_payout(
    pool: asyncpg.Pool, payout_id: uuid.UUID, actor: str, reason: str
) -> asyncpg.Record:
    return await with_retry(pool, lambda conn: close_payout_in(conn, payout_id, actor, reason))


# --- views ----------------------------------------------------------------------------


async def fund_views(conn: DbConnection) -> list[dict[str, Any]]:
    funds = await conn.fetch("SELECT * FROM funds ORDER BY fund_id")
    stats = await conn.fetch(
        """SELECT fund_id, status, count(*) AS n, coalesce(sum(amount_fen), 0) AS fen
           FROM payouts WHERE fund_id IS NOT NULL GROUP BY fund_id, status"""
    )
    by_fund: dict[str, dict[str, tuple[int, int]]] = {}
    for s in stats:
        by_fund.setdefault(s["fund_id"], {})[s["status"]] = (int(s["n"]), int(s["fen"]))
    views = []
    for f in funds:
        counts = by_fund.get(f["fund_id"], {})
        budget = f["budget_fen"]
        waiting = {reason: counts.get(status.value, (0, 0)) for status, reason in WAITING.items()}
        views.append(
            {
                "fund_id": f["fund_id"],
                "claim_kind": f["claim_kind"],
                "name": f["name"],
                "budget_fen": budget,
                "reserved_fen": f["reserved_fen"],
                "committed_fen": f["committed_fen"],
                "paid_fen": f["paid_fen"],
                "remaining_fen": None
                if budget is None
                else budget - f["reserved_fen"] - f["committed_fen"],
                "waiting_claims": counts.get("queued", (0, 0))[0],
                "waiting_fen": counts.get("queued", (0, 0))[1],
                "waiting": {r: {"claims": n, "amount_fen": fen} for r, (n, fen) in waiting.items()},
                "payouts": {
                    st: {"claims": n, "amount_fen": fen} for st, (n, fen) in counts.items()
                },
            }
        )
    return views


async def stuck_payouts(conn: DbConnection, *, stuck_after_s: float) -> dict[str, int]:
    """Payouts with the bank and no news (issuing, unknown, issued) for longer than
    ``stuck_after_s``, by status (only statuses with any)."""
    rows = await conn.fetch(
        """SELECT status, count(*) AS n FROM payouts
           WHERE status = ANY($1::text[]) AND status_at < now() - make_interval(secs => $2)
           GROUP BY status""",
        [s.value for s in IN_DOUBT],
        stuck_after_s,
    )
    return {r["status"]: int(r["n"]) for r in rows}


_TABLE_GAUGES = (FUND_BUDGET, FUND_REMAINING, FUND_RESERVED, WAITING_GAUGE, STUCK)


class GaugeExporter(SingleExporter):
    """Sets the gauges computed from whole-table counts (budgets, waiting, stuck) — in
    one payout instance only, so that two instances do not double them on a dashboard
    that sums. The exporter is whoever holds the PostgreSQL advisory lock named after
    ``name`` (shared/table_gauges); when that instance dies its session ends and another
    takes over. The others export none of these series."""

    def __init__(self, name: str) -> None:
        super().__init__(name, list(_TABLE_GAUGES))

    async def refresh(self, pool: asyncpg.Pool, *, stuck_after_s: float) -> bool:
        """Export (when this instance is the exporter) or withdraw the gauges. Returns
        whether this instance exports them."""
        if not await self.holds(pool):
            return False
        async with pool.acquire() as conn:
            views = await fund_views(conn)
            stuck = await stuck_payouts(conn, stuck_after_s=stuck_after_s)
        for v in views:
            fund = v["fund_id"]
            if v["budget_fen"] is not None:
                FUND_BUDGET.labels(fund).set(v["budget_fen"] / 100)
                FUND_REMAINING.labels(fund).set(v["remaining_fen"] / 100)
            FUND_RESERVED.labels(fund).set(v["reserved_fen"] / 100)
            for reason, w in v["waiting"].items():
                WAITING_GAUGE.labels(fund, reason).set(w["claims"])
        for status in IN_DOUBT:
            STUCK.labels(status.value).set(stuck.get(status.value, 0))
        return True
