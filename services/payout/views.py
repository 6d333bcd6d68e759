"""Reads for the HTTP API and the gauges (read models; amounts in fen). Writes go through
the use cases in ``service_layer``; nothing here changes anything."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from services.payout.adapters import dashboard
from services.payout.adapters.statements import report_for
from services.payout.domain.model import IN_DOUBT, WAITING
from shared.audit.history import ClaimAudit, service_claim_audit
from shared.config import ServiceSettings
from shared.db import DbConnection
from shared.problems import Invalid

__all__ = [
    "Dashboard",
    "DashboardWindow",
    "PayoutDetail",
    "PayoutFilter",
    "finance_dashboard",
    "fund_exists",
    "fund_queue",
    "fund_views",
    "payout_detail",
    "payouts",
    "report_for",
    "stuck_payouts",
]


async def fund_views(conn: DbConnection) -> list[dict[str, Any]]:
    """Per fund: budget, reserved, committed, paid, remaining, waiting, counts per status."""
    funds = await conn.fetch("SELECT * FROM funds ORDER BY fund_id")
    stats = await conn.fetch(
        """SELECT fund_id, status, count(*) AS n, coalesce(sum(amount_fen), 0) AS fen
           FROM payouts WHERE fund_id IS NOT NULL GROUP BY fund_id, status"""
    )
    by_fund: dict[str, dict[str, tuple[int, int]]] = {}
    for s in stats:
        by_fund.setdefault(s["fund_id"], {})[s["status"]] = (int(s["n"]), int(s["fen"]))
    return [_fund_view(f, by_fund.get(f["fund_id"], {})) for f in funds]


def _fund_view(f: asyncpg.Record, counts: dict[str, tuple[int, int]]) -> dict[str, Any]:
    budget = f["budget_fen"]
    waiting = {reason: counts.get(status.value, (0, 0)) for status, reason in WAITING.items()}
    return {
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
        "payouts": {st: {"claims": n, "amount_fen": fen} for st, (n, fen) in counts.items()},
    }


async def fund_exists(conn: DbConnection, fund_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM funds WHERE fund_id = $1", fund_id))


async def fund_queue(conn: DbConnection, fund_id: str) -> list[asyncpg.Record]:
    """Claims waiting for the fund's budget, in the order they will be paid."""
    return list(
        await conn.fetch(
            """SELECT payout_id, claim_id, amount_fen, queued_at FROM payouts
               WHERE fund_id = $1 AND status = 'queued' ORDER BY queue_seq""",
            fund_id,
        )
    )


@dataclass(frozen=True)
class PayoutFilter:
    claim_id: uuid.UUID | None = None
    status: str | None = None
    fund: str | None = None
    from_: datetime | None = None
    to: datetime | None = None


_WHERE = """($1::uuid IS NULL OR claim_id = $1) AND ($2::text IS NULL OR status = $2)
            AND ($3::text IS NULL OR fund_id = $3)
            AND ($4::timestamptz IS NULL OR requested_at >= $4)
            AND ($5::timestamptz IS NULL OR requested_at < $5)"""


async def payouts(
    conn: DbConnection, where: PayoutFilter, limit: int, offset: int
) -> tuple[int, list[asyncpg.Record]]:
    """(how many match, one page of them, newest approval first)."""
    args = (where.claim_id, where.status, where.fund, where.from_, where.to)
    total = await conn.fetchval(f"SELECT count(*) FROM payouts WHERE {_WHERE}", *args)
    rows = await conn.fetch(
        f"""SELECT * FROM payouts WHERE {_WHERE}
            ORDER BY requested_at DESC, payout_id LIMIT $6 OFFSET $7""",
        *args,
        limit,
        offset,
    )
    return int(total), list(rows)


@dataclass(frozen=True)
class PayoutDetail:
    payout: asyncpg.Record
    vouchers: list[asyncpg.Record]
    hops: list[asyncpg.Record]


async def payout_detail(conn: DbConnection, payout_id: uuid.UUID) -> PayoutDetail | None:
    """A payout with its vouchers (one per issue) and every hop, in time order."""
    row = await conn.fetchrow("SELECT * FROM payouts WHERE payout_id = $1", payout_id)
    if row is None:
        return None
    vouchers = await conn.fetch(
        "SELECT * FROM vouchers WHERE payout_id = $1 ORDER BY issue_no", payout_id
    )
    hops = await conn.fetch(
        "SELECT * FROM payout_hops WHERE payout_id = $1 ORDER BY at, id", payout_id
    )
    return PayoutDetail(row, list(vouchers), list(hops))


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


# --- the finance dashboard (issue 13) -------------------------------------------------

DASHBOARD_MAX_DAYS = 366
"""A year, leap day included: a wider window is refused (422), not silently cut."""
DASHBOARD_DEFAULT_DAYS = 30


@dataclass(frozen=True)
class DashboardWindow:
    """The dashboard's days, both inclusive, Beijing calendar days."""

    first: date
    last: date

    @classmethod
    def resolve(cls, first: date | None, last: date | None, today: date) -> DashboardWindow:
        """``to`` defaults to today, ``from`` to the 30 days ending on ``to``; ``from``
        after ``to`` or more than 366 days are refused naming the field."""
        end = today if last is None else last
        start = first
        if start is None:
            try:
                start = end - timedelta(days=DASHBOARD_DEFAULT_DAYS - 1)
            except OverflowError:  # to = 0001-01-05: the window starts with the calendar
                start = date.min
        field = "query.to" if last is not None else "query.from"
        if start > end:
            raise Invalid(
                f"'to' ({end}) is before 'from' ({start})", field=field, rule="not_before_from"
            )
        if (end - start).days + 1 > DASHBOARD_MAX_DAYS:
            raise Invalid(
                f"at most {DASHBOARD_MAX_DAYS} days from 'from' to 'to' (both inclusive); "
                f"{start} to {end} is {(end - start).days + 1}",
                field=field,
                rule="max_days",
            )
        return cls(start, end)


@dataclass(frozen=True)
class Dashboard:
    window: DashboardWindow
    fund_id: str | None
    as_of: datetime
    days: list[asyncpg.Record]
    totals: asyncpg.Record
    funds: list[asyncpg.Record]
    burn: dict[str, list[asyncpg.Record]]


async def finance_dashboard(
    conn: DbConnection, first: date | None, last: date | None, fund_id: str | None
) -> Dashboard:
    """Paid per day, time-to-payment percentiles and budget burn (adapters/dashboard.py)
    from one snapshot: a read-only repeatable-read transaction, so the days, the totals
    and the funds' current figures agree with one another."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        window = DashboardWindow.resolve(first, last, await dashboard.business_today(conn))
        funds = await dashboard.funds(conn, fund_id)
        if fund_id is not None and not funds:
            raise Invalid(f"no fund {fund_id!r}", field="query.fund_id", rule="known_fund")
        burn: dict[str, list[asyncpg.Record]] = {}
        for row in await dashboard.burn_per_day(conn, window.first, window.last, fund_id):
            burn.setdefault(row["fund_id"], []).append(row)
        return Dashboard(
            window=window,
            fund_id=fund_id,
            as_of=await dashboard.snapshot_time(conn),
            days=await dashboard.paid_per_day(conn, window.first, window.last, fund_id),
            totals=await dashboard.paid_in_range(conn, window.first, window.last, fund_id),
            funds=funds,
            burn=burn,
        )


async def claim_audit(
    conn: DbConnection, settings: ServiceSettings, claim_id: uuid.UUID
) -> ClaimAudit:
    """The claim's audit chain(s) in payout, each entry verified now (shared.audit.history):
    hashes, links, head, seals, and payout's state rows against the chain."""
    return await service_claim_audit(conn, "payout", settings, claim_id)
