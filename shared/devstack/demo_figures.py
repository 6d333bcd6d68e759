"""The demo's figures, read from the services and straight from the payout database."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from rich.table import Table

from shared.money import fen_to_yuan

WAITING = "waiting"
"""Demo-side status of a claim whose payout waits for a person: for budget (queued) or
for documents (held, 容缺)."""
RETURNED = "returned"
"""Demo-side status of a claim whose payment came back: waits for an account correction."""
PAYOUT_WAITING_STATUSES = ("queued", "held", "returned")
SETTLED = {"paid", "rejected", "payout_failed", "lapsed", "withdrawn", "closed"}
"""Final for good."""
FINAL = SETTLED | {WAITING, RETURNED}
"""Final for the demo's exit: settled, or waiting for a person (reported as such)."""


@dataclass
class FundFigures:
    paid: int = 0
    paid_fen: int = 0
    failed: int = 0
    failed_fen: int = 0
    returned: int = 0
    returned_fen: int = 0
    waiting: int = 0
    waiting_fen: int = 0
    in_flight: int = 0
    in_flight_fen: int = 0


@dataclass
class PayoutFacts:
    """Straight from the payout and bank databases."""

    double_paid: int = 0
    paid_fen: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    funds: dict[str, FundFigures] = field(default_factory=dict)


@dataclass
class DemoResult:
    submitted: int = 0
    rejected_at_window: int = 0
    statuses: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    double_paid: int = 0
    paid_fen: int = 0
    facts: PayoutFacts = field(default_factory=PayoutFacts)

    def counts(self) -> dict[str, int]:
        values = list(self.statuses.values())
        return {
            "submitted": self.submitted,
            "approved": sum(
                v
                in (
                    "approved",
                    "payout_requested",
                    "payout_sent",
                    "paid",
                    "payout_failed",
                    WAITING,
                    RETURNED,
                )
                for v in values
            ),
            "rejected": values.count("rejected"),
            "paid": values.count("paid"),
            "failed": values.count("payout_failed"),
            "returned": values.count(RETURNED),
            "waiting": values.count(WAITING),
            "in_flight": sum(v not in FINAL for v in values),
            "double_paid": self.double_paid,
        }

    def per_fund(self) -> dict[str, dict[str, int | str]]:
        """Counts and sums (yuan, as strings) per fund, from the payout database."""
        out: dict[str, dict[str, int | str]] = {}
        for fund, f in sorted(self.facts.funds.items()):
            out[fund] = {
                "paid": f.paid,
                "paid_yuan": str(fen_to_yuan(f.paid_fen)),
                "failed": f.failed,
                "failed_yuan": str(fen_to_yuan(f.failed_fen)),
                "returned": f.returned,
                "returned_yuan": str(fen_to_yuan(f.returned_fen)),
                "waiting": f.waiting,
                "waiting_yuan": str(fen_to_yuan(f.waiting_fen)),
                "in_flight": f.in_flight,
                "in_flight_yuan": str(fen_to_yuan(f.in_flight_fen)),
            }
        return out


async def payout_waiting(dsn: str, claim_ids: list[str]) -> dict[str, str]:
    """Claims whose payout waits for a person, with their demo status (waiting: budget
    or documents; returned: account correction)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT claim_id, status FROM payout.payouts
               WHERE claim_id = ANY($1::uuid[]) AND status = ANY($2::text[])""",
            [uuid.UUID(i) for i in claim_ids],
            list(PAYOUT_WAITING_STATUSES),
        )
    finally:
        await conn.close()
    return {str(r["claim_id"]): RETURNED if r["status"] == "returned" else WAITING for r in rows}


async def payout_facts(dsn: str, claim_ids: list[str]) -> PayoutFacts:
    """Read straight from the payout and bank databases: payouts beyond one per claim,
    counting both payout rows and settled bank instructions, the total paid, and counts
    and sums per status and fund."""
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
        rows = await conn.fetch(
            """SELECT coalesce(fund_id, claim_kind) AS fund, status, count(*) AS n,
                      coalesce(sum(amount_fen), 0) AS fen
               FROM payout.payouts WHERE claim_id = ANY($1::uuid[])
               GROUP BY 1, 2""",
            ids,
        )
    finally:
        await conn.close()
    facts = PayoutFacts(double_paid=int(extra_rows) + int(extra_settled))
    for r in rows:
        status, n, fen = r["status"], int(r["n"]), int(r["fen"])
        facts.by_status[status] = facts.by_status.get(status, 0) + n
        f = facts.funds.setdefault(r["fund"], FundFigures())
        if status == "paid":
            f.paid += n
            f.paid_fen += fen
            facts.paid_fen += fen
        elif status == "failed":
            f.failed += n
            f.failed_fen += fen
        elif status == "returned":
            f.returned += n
            f.returned_fen += fen
        elif status in PAYOUT_WAITING_STATUSES:
            f.waiting += n
            f.waiting_fen += fen
        elif status != "released":
            f.in_flight += n
            f.in_flight_fen += fen
    return facts


def summary_table(result: DemoResult) -> Table:
    table = Table(title=f"claimflow demo — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.counts().items():
        table.add_row(key, str(value))
    table.add_row("paid (yuan)", f"{fen_to_yuan(result.paid_fen):,}")
    for fund, figures in result.per_fund().items():
        table.add_row(
            f"fund {fund}",
            f"paid {figures['paid']} / {figures['paid_yuan']} · failed {figures['failed']} · "
            f"returned {figures['returned']} · waiting {figures['waiting']}",
        )
    table.add_row("seconds", f"{result.seconds:.1f}")
    return table
