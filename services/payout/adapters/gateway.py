"""The payment gateway port and a simulated treasury/bank behind it."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol

import asyncpg

from shared.db import migrate


@dataclass(frozen=True)
class PaymentInstruction:
    payout_id: uuid.UUID
    amount_fen: int
    account_number: str
    account_name: str


@dataclass(frozen=True)
class Confirmation:
    payout_id: uuid.UUID
    outcome: Literal["settled", "failed"]
    at: datetime
    reason: str | None


class PaymentGateway(Protocol):
    async def submit(self, instruction: PaymentInstruction) -> str:
        """Hand over an instruction; the payout id is the idempotency key. Returns a reference."""

    async def due_confirmations(self, limit: int) -> list[Confirmation]:
        """Outcomes the bank has reached and not yet had acknowledged."""

    async def acknowledge(self, payout_ids: list[uuid.UUID]) -> None:
        """Outcomes recorded by payout; the bank stops re-sending them."""


class SimulatedGateway:
    """A bank that settles asynchronously after a random delay, with an optional failure rate.

    It keeps its books in its own schema (``bank_sim``), so a payout id submitted twice,
    even across restarts, is paid once, and unacknowledged outcomes are re-delivered.
    """

    SCHEMA = "bank_sim"

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        min_delay_s: float,
        max_delay_s: float,
        failure_rate: float,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.min_delay_s = min_delay_s
        self.max_delay_s = max(min_delay_s, max_delay_s)
        self.failure_rate = failure_rate
        self.rng = rng or random.Random()

    @classmethod
    async def prepare(cls, dsn: str) -> None:
        await migrate(dsn, cls.SCHEMA, Path(__file__).parent / "bank_sim_migrations")

    async def submit(self, instruction: PaymentInstruction) -> str:
        delay = self.rng.uniform(self.min_delay_s, self.max_delay_s)
        fails = self.rng.random() < self.failure_rate
        await self.pool.execute(
            """INSERT INTO bank_sim.instructions (payout_id, amount_fen, account_number,
                   account_name, status, settle_after, failure_reason)
               VALUES ($1, $2, $3, $4, 'accepted', now() + make_interval(secs => $5), $6)
               ON CONFLICT (payout_id) DO NOTHING""",
            instruction.payout_id,
            instruction.amount_fen,
            instruction.account_number,
            instruction.account_name,
            delay,
            "account closed" if fails else None,
        )
        return f"SIM-{instruction.payout_id.hex[:12].upper()}"

    async def due_confirmations(self, limit: int) -> list[Confirmation]:
        rows = await self.pool.fetch(
            """UPDATE bank_sim.instructions
               SET status = CASE WHEN failure_reason IS NULL THEN 'settled' ELSE 'failed' END,
                   settled_at = coalesce(settled_at, now())
               WHERE payout_id IN (
                   SELECT payout_id FROM bank_sim.instructions
                   WHERE NOT notified AND settle_after <= now()
                   ORDER BY settle_after LIMIT $1)
               RETURNING payout_id, status, settled_at, failure_reason""",
            limit,
        )
        return [
            Confirmation(r["payout_id"], r["status"], r["settled_at"], r["failure_reason"])
            for r in rows
        ]

    async def acknowledge(self, payout_ids: list[uuid.UUID]) -> None:
        await self.pool.execute(
            "UPDATE bank_sim.instructions SET notified = true WHERE payout_id = ANY($1::uuid[])",
            payout_ids,
        )
