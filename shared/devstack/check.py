"""``claimflow check``: the invariants of the running stack, read from its databases.

Read in one REPEATABLE READ snapshot, so that the books of a fund, its payouts and the
bank's ledger are compared at one moment even while the services work. Things that are
normal for a moment while claims flow (a claim between two services, an event not yet
consumed, an outbox row not yet published) are violations only once they are older
than ``grace_s``; with ``grace_s=0`` on a quiet stack everything must be settled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg
from rich.table import Table

from services.intake.domain.model import FINAL as CLAIM_FINAL
from services.payout.domain.model import COMMITTED as PAYOUT_COMMITTED
from services.payout.domain.model import RESERVED as PAYOUT_RESERVED
from shared.contracts.topics import INTAKE_EVENTS, PAYOUT_EVENTS, REVIEW_EVENTS

SERVICES = ("intake", "review", "payout")
SUBSCRIBERS: dict[str, tuple[str, ...]] = {
    # Who consumes each topic: every event published there must reach each of them.
    # (Kept equal to the services' subscriptions.py by tests/unit/test_event_flow_diagram.py.)
    INTAKE_EVENTS: ("review", "payout"),
    REVIEW_EVENTS: ("intake", "payout"),
    PAYOUT_EVENTS: ("intake",),
}
FINAL = tuple(sorted(s.value for s in CLAIM_FINAL))
# Intake statuses in which a claim waits for a person, and which of its columns holds
# the deadline the tracker shows.
WAITING_DEADLINE = {
    "in_review": "review_due_at",
    "accepted_documents_pending": "documents_due_at",
    "returned_for_documents": "documents_due_at",
    "approved_documents_pending": "documents_due_at",
    "payout_failed": "action_due_at",
    "payout_withheld": "action_due_at",
    "payout_returned": "action_due_at",
}
QUEUED = "payout_queued"
"""Waits for finance to top up the fund's budget: a holder, but no deadline exists for
it in the model; reported, not a violation."""
# Which payouts a fund's reserved and committed figures must add up to: payout's own sets.
RESERVED = tuple(sorted(s.value for s in PAYOUT_RESERVED))
COMMITTED = tuple(sorted(s.value for s in PAYOUT_COMMITTED))
EXAMPLES = 5


@dataclass
class Invariant:
    name: str
    description: str
    checked: int = 0
    violations: int = 0
    examples: list[str] = field(default_factory=list)

    def fail(self, n: int, examples: list[str]) -> None:
        self.violations += n
        room = EXAMPLES - len(self.examples)
        self.examples.extend(examples[:room])


@dataclass
class CheckReport:
    invariants: list[Invariant]
    figures: dict[str, Any]

    @property
    def violations(self) -> int:
        return sum(i.violations for i in self.invariants)

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.violations == 0,
            "violations": self.violations,
            "invariants": {
                i.name: {"checked": i.checked, "violations": i.violations, "examples": i.examples}
                for i in self.invariants
            },
            "figures": self.figures,
        }

    def table(self) -> Table:
        table = Table(title="claimflow check")
        table.add_column("invariant")
        table.add_column("checked", justify="right")
        table.add_column("violations", justify="right")
        table.add_column("examples")
        for i in self.invariants:
            table.add_row(
                f"{i.name}\n[dim]{i.description}[/dim]",
                str(i.checked),
                f"[red]{i.violations}[/red]" if i.violations else "0",
                "\n".join(i.examples),
            )
        return table


async def run_check(dsn: str, *, grace_s: float = 60.0) -> CheckReport:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return CheckReport(
                invariants=[
                    await _paid_once(conn),
                    await _paid_within_approved(conn),
                    await _fund_books(conn),
                    await _bank_ledger(conn, grace_s),
                    await _claims_settled(conn, grace_s),
                    await _outbox_drained(conn, grace_s),
                    await _events_consumed(conn, grace_s),
                ],
                figures=await _figures(conn),
            )
    finally:
        await conn.close()


async def _paid_once(conn: asyncpg.Connection) -> Invariant:
    inv = Invariant("paid_once", "no claim paid twice: one payout, one settled bank instruction")
    inv.checked = await conn.fetchval("SELECT count(DISTINCT claim_id) FROM payout.payouts")
    rows = await conn.fetch(
        """SELECT claim_id, count(*) AS n FROM payout.payouts GROUP BY 1 HAVING count(*) > 1"""
    )
    inv.fail(len(rows), [f"claim {r['claim_id']}: {r['n']} payouts" for r in rows])
    rows = await conn.fetch(
        """SELECT p.claim_id, count(*) AS n FROM bank_sim.instructions i
           JOIN payout.payouts p USING (payout_id)
           WHERE i.status = 'settled' GROUP BY 1 HAVING count(*) > 1"""
    )
    inv.fail(len(rows), [f"claim {r['claim_id']}: {r['n']} settled at the bank" for r in rows])
    return inv


async def _paid_within_approved(conn: asyncpg.Connection) -> Invariant:
    inv = Invariant("paid_within_approved", "paid ≤ approved, and the approved amount is review's")
    inv.checked = await conn.fetchval("SELECT count(*) FROM payout.payouts")
    rows = await conn.fetch(
        """SELECT p.claim_id, p.amount_fen, p.paid_amount_fen, p.approved_amount_fen,
                  c.approved_amount_fen AS review_fen,
                  (SELECT coalesce(sum(i.amount_fen), 0) FROM bank_sim.instructions i
                   WHERE i.payout_id = p.payout_id AND i.status = 'settled') AS bank_fen
           FROM payout.payouts p LEFT JOIN review.review_cases c USING (claim_id)
           WHERE p.paid_amount_fen > p.approved_amount_fen
              OR p.amount_fen > p.approved_amount_fen
              OR c.approved_amount_fen IS DISTINCT FROM p.approved_amount_fen
              OR (SELECT coalesce(sum(i.amount_fen), 0) FROM bank_sim.instructions i
                  WHERE i.payout_id = p.payout_id AND i.status = 'settled')
                 > p.approved_amount_fen"""
    )
    inv.fail(
        len(rows),
        [
            f"claim {r['claim_id']}: approved {r['approved_amount_fen']} (review "
            f"{r['review_fen']}), amount {r['amount_fen']}, paid {r['paid_amount_fen']}, "
            f"bank {r['bank_fen']}"
            for r in rows
        ],
    )
    return inv


async def _fund_books(conn: asyncpg.Connection) -> Invariant:
    inv = Invariant(
        "fund_books",
        "funds never below zero or over budget; reserved, committed and paid equal the payouts'",
    )
    rows = await conn.fetch(
        """SELECT f.fund_id, f.budget_fen, f.reserved_fen, f.committed_fen, f.paid_fen,
                  coalesce(sum(p.amount_fen) FILTER (WHERE p.status = ANY($1::text[])), 0)
                      AS reserved,
                  coalesce(sum(p.amount_fen) FILTER (WHERE p.status = ANY($2::text[])), 0)
                      AS committed,
                  coalesce(sum(p.paid_amount_fen), 0) AS paid
           FROM payout.funds f LEFT JOIN payout.payouts p USING (fund_id)
           GROUP BY f.fund_id ORDER BY f.fund_id""",
        list(RESERVED),
        list(COMMITTED),
    )
    inv.checked = len(rows)
    for r in rows:
        problems = []
        if min(r["reserved_fen"], r["committed_fen"], r["paid_fen"]) < 0:
            problems.append("below zero")
        if r["budget_fen"] is not None and r["reserved_fen"] + r["committed_fen"] > r["budget_fen"]:
            problems.append("over budget")
        if r["budget_fen"] is not None and r["budget_fen"] < 0:
            problems.append("negative budget")
        for book in ("reserved", "committed", "paid"):
            if r[f"{book}_fen"] != r[book]:
                problems.append(f"{book} {r[f'{book}_fen']} ≠ payouts {r[book]}")
        if problems:
            inv.fail(1, [f"fund {r['fund_id']}: {'; '.join(problems)}"])
    return inv


async def _bank_ledger(conn: asyncpg.Connection, grace_s: float) -> Invariant:
    inv = Invariant(
        "bank_ledger",
        "per payout, the bank's settled amount equals what payout recorded as paid",
    )
    inv.checked = await conn.fetchval("SELECT count(*) FROM payout.payouts")
    # The bank's notice reaches payout a moment after the bank settled: a payout not yet
    # marked paid counts only once its settlement is older than the grace period.
    rows = await conn.fetch(
        """SELECT p.claim_id, p.status, p.paid_amount_fen, b.settled_fen, b.n
           FROM payout.payouts p
           LEFT JOIN LATERAL (
               SELECT coalesce(sum(i.amount_fen), 0) AS settled_fen, count(*) AS n,
                      max(i.settled_at) AS last_settled
               FROM bank_sim.instructions i
               WHERE i.payout_id = p.payout_id AND i.status = 'settled') b ON true
           WHERE b.settled_fen <> p.paid_amount_fen
             AND (p.status = 'paid' OR b.settled_fen > p.paid_amount_fen
                  AND b.last_settled < now() - make_interval(secs => $1))""",
        grace_s,
    )
    inv.fail(
        len(rows),
        [
            f"claim {r['claim_id']}: payout {r['status']} paid {r['paid_amount_fen']}, bank "
            f"settled {r['settled_fen']} in {r['n']} instruction(s)"
            for r in rows
        ],
    )
    orphans = await conn.fetchval(
        """SELECT count(*) FROM bank_sim.instructions i
           WHERE i.status = 'settled'
             AND NOT EXISTS (SELECT 1 FROM payout.payouts p WHERE p.payout_id = i.payout_id)"""
    )
    if orphans:
        inv.fail(orphans, [f"{orphans} settled instructions of no payout"])
    return inv


async def _claims_settled(conn: asyncpg.Connection, grace_s: float) -> Invariant:
    inv = Invariant(
        "claims_settled",
        "every claim final, or waiting for a person with a holder and a deadline; "
        f"others only for the grace period ({grace_s:g}s)",
    )
    inv.checked = await conn.fetchval("SELECT count(*) FROM intake.claims")
    waiting_cases = " ".join(f"WHEN '{s}' THEN c.{col}" for s, col in WAITING_DEADLINE.items())
    rows = await conn.fetch(
        f"""SELECT c.claim_id, c.status, c.holders,
                   extract(epoch FROM now() - c.status_changed_at) AS age,
                   CASE c.status {waiting_cases} END AS deadline,
                   (SELECT min(t.due_at) FROM review.review_tasks t
                    WHERE t.claim_id = c.claim_id AND t.status = 'pending') AS task_due
            FROM intake.claims c
            WHERE c.status <> ALL($1::text[]) AND c.status <> $2""",
        list(FINAL),
        QUEUED,
    )
    bad: list[str] = []
    for r in rows:
        if r["status"] in WAITING_DEADLINE:
            deadline = r["deadline"] or (r["task_due"] if r["status"] == "in_review" else None)
            if r["holders"] and deadline is not None:
                continue
            if r["age"] <= grace_s:
                continue
            bad.append(
                f"claim {r['claim_id']}: {r['status']} for {r['age']:.0f}s, holders "
                f"{list(r['holders'])}, deadline {deadline}"
            )
        elif r["age"] > grace_s:
            bad.append(f"claim {r['claim_id']}: {r['status']} for {r['age']:.0f}s")
    inv.fail(len(bad), bad)
    return inv


async def _outbox_drained(conn: asyncpg.Connection, grace_s: float) -> Invariant:
    inv = Invariant(
        "outbox_drained",
        "no outbox row unpublished beyond the grace period, none quarantined",
    )
    for service in SERVICES:
        row = await conn.fetchrow(
            f"""SELECT count(*) AS rows,
                       count(*) FILTER (WHERE published_at IS NULL AND quarantined_at IS NULL
                           AND created_at < now() - make_interval(secs => $1)
                           -- A row put back after a broker lost it waits from then on.
                           AND (replays = 0 OR NOT EXISTS (
                               SELECT 1 FROM "{service}".outbox_replays r
                               WHERE r.at >= now() - make_interval(secs => $1)))) AS stale,
                       count(*) FILTER (WHERE quarantined_at IS NOT NULL) AS quarantined
                FROM "{service}".outbox""",
            grace_s,
        )
        assert row is not None
        inv.checked += row["rows"]
        if row["stale"]:
            inv.fail(row["stale"], [f"{service}: {row['stale']} rows unpublished"])
        if row["quarantined"]:
            inv.fail(row["quarantined"], [f"{service}: {row['quarantined']} rows quarantined"])
    return inv


async def _events_consumed(conn: asyncpg.Connection, grace_s: float) -> Invariant:
    inv = Invariant(
        "events_consumed",
        "every published event in each subscriber's inbox (or held) after the grace period",
    )
    for producer in SERVICES:
        for topic, subscribers in SUBSCRIBERS.items():
            for subscriber in subscribers:
                row = await conn.fetchrow(
                    f"""SELECT count(*) AS published,
                               count(*) FILTER (WHERE NOT EXISTS (
                                   SELECT 1 FROM "{subscriber}".inbox i
                                   WHERE i.message_id = o.event_id::text)
                                 AND NOT EXISTS (
                                   SELECT 1 FROM "{subscriber}".held_events h
                                   WHERE h.message_id = o.event_id::text)) AS missing,
                               (array_agg(o.event_type || ' ' || o.event_id)
                                   FILTER (WHERE NOT EXISTS (
                                   SELECT 1 FROM "{subscriber}".inbox i
                                   WHERE i.message_id = o.event_id::text)))[1:3] AS examples
                        FROM "{producer}".outbox o
                        WHERE o.topic = $1 AND o.published_at IS NOT NULL
                          AND o.published_at < now() - make_interval(secs => $2)""",
                    topic,
                    grace_s,
                )
                assert row is not None
                inv.checked += row["published"]
                if row["missing"]:
                    inv.fail(
                        row["missing"],
                        [
                            f"{producer} → {subscriber}: {row['missing']} never consumed "
                            f"(e.g. {', '.join(row['examples'] or [])})"
                        ],
                    )
    return inv


async def _figures(conn: asyncpg.Connection) -> dict[str, Any]:
    claims = {
        r["status"]: r["n"]
        for r in await conn.fetch(
            "SELECT status, count(*) AS n FROM intake.claims GROUP BY 1 ORDER BY 1"
        )
    }
    paid_fen = await conn.fetchval(
        "SELECT coalesce(sum(paid_amount_fen), 0) FROM payout.payouts WHERE status = 'paid'"
    )
    replays = 0
    for service in SERVICES:
        replays += await conn.fetchval(
            f'SELECT coalesce(sum(rows), 0) FROM "{service}".outbox_replays'
        )
    return {
        "claims": sum(claims.values()),
        "by_status": claims,
        "paid_fen": int(paid_fen),
        "outbox_rows_replayed": int(replays),
    }
