"""The demo's figures, read from the services and straight from the payout database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from rich.table import Table

from shared.money import fen_to_yuan

FINAL = {"paid", "rejected", "payout_failed", "withdrawn", "lapsed"}


@dataclass
class DemoResult:
    submitted: int = 0
    rejected_at_window: int = 0
    statuses: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    double_paid: int = 0
    paid_fen: int = 0

    def counts(self) -> dict[str, int]:
        values = list(self.statuses.values())
        return {
            "submitted": self.submitted,
            "approved": sum(
                v in ("approved", "payout_requested", "payout_sent", "paid", "payout_failed")
                for v in values
            ),
            "rejected": values.count("rejected"),
            "paid": values.count("paid"),
            "failed": values.count("payout_failed"),
            "in_flight": sum(v not in FINAL for v in values),
            "double_paid": self.double_paid,
        }


async def payout_facts(dsn: str, claim_ids: list[str]) -> tuple[int, int]:
    """Read straight from the payout and bank databases: payouts beyond one per claim,
    counting both payout rows and settled bank instructions, and the total paid."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [uuid.UUID(i) for i in claim_ids]
        extra_rows = await conn.fetchval(
            """SELECT coalesce(sum(n - 1), 0) FROM (
                   SELECT count(*) AS n FROM payout.payouts WHERE claim_id = ANY($1::uuid[])
                   GROUP BY claim_id) x""",
            ids,
        )
        extra_settled = await conn.fetchval(
            """SELECT coalesce(sum(n - 1), 0) FROM (
                   SELECT count(*) AS n FROM bank_sim.instructions i
                   JOIN payout.payouts p USING (payout_id)
                   WHERE p.claim_id = ANY($1::uuid[]) AND i.status = 'settled'
                   GROUP BY p.claim_id) x""",
            ids,
        )
        paid = await conn.fetchval(
            """SELECT coalesce(sum(amount_fen), 0) FROM payout.payouts
               WHERE status = 'paid' AND claim_id = ANY($1::uuid[])""",
            ids,
        )
    finally:
        await conn.close()
    return int(extra_rows) + int(extra_settled), int(paid)


def summary_table(result: DemoResult) -> Table:
    table = Table(title=f"claimflow demo — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.counts().items():
        table.add_row(key, str(value))
    table.add_row("paid (yuan)", f"{fen_to_yuan(result.paid_fen):,}")
    table.add_row("seconds", f"{result.seconds:.1f}")
    return table
