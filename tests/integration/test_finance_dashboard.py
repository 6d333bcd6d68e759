"""The finance dashboard's figures (GET /finance/dashboard, issue 13) on the real
PostgreSQL: payouts with known approval, arrival and window times are written into a
schema of the test's own, and every count, sum and percentile the API answers is the one
worked out by hand here (percentile_cont: linear interpolation between the two nearest
ranks). Days are Beijing days; the API is payout's own app with real tokens."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.payout.adapters.gateway import SimulatedGateway
from services.payout.bootstrap import create_app
from services.payout.service_layer import funding
from services.payout.views import DashboardWindow
from shared.contracts.topics import PAYOUT_EVENTS
from shared.db import DbConnection, create_pool, migrate
from shared.devstack.stack import StackConfig
from shared.problems import Invalid
from shared.programs import load_catalogue
from shared.unit_of_work import UnitOfWorkFactory
from shared.workdays import CHINA
from tests.tokens import AUDITOR, finance_clerk, finance_supervisor, window

pytestmark = pytest.mark.integration

MIGRATIONS = Path(funding.__file__).parents[1] / "migrations"
PROGRAM = "startup-loan-interest-2026"
TREASURY = "treasury-refund"
HOUR = 3600.0
RECEIVED_BEFORE_APPROVAL = timedelta(days=2)


def beijing(text: str) -> datetime:
    """``2026-11-02 00:30`` in Beijing time, as an aware instant."""
    return datetime.fromisoformat(text).replace(tzinfo=CHINA)


@pytest.fixture
async def pool(infra: StackConfig) -> AsyncIterator[asyncpg.Pool]:
    schema = f"payout_dash_{uuid.uuid4().hex[:8]}"
    await migrate(infra.dsn, schema, MIGRATIONS)
    await SimulatedGateway.prepare(infra.dsn)
    p = await create_pool(infra.dsn, schema, min_size=1, max_size=5)
    async with UnitOfWorkFactory("payout", PAYOUT_EVENTS).acquire(p) as uow:
        await funding.seed_funds(uow, load_catalogue(), None)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def api(pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """Payout's HTTP app (routes, token check, error body) on this test's schema."""
    app = create_app()
    app.state.runtime.pool = pool
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://payout") as client:
        yield client


async def payout(
    conn: DbConnection,
    fund_id: str,
    amount_fen: int,
    *,
    paid_at: datetime | None,
    after_approval_h: float = 1.0,
    status: str = "paid",
) -> None:
    """A payout row as payout writes it: approved (``requested_at``) ``after_approval_h``
    hours before it arrived, received at the window two days before the approval."""
    at = paid_at or beijing("2026-11-02 12:00")
    requested_at = at - timedelta(hours=after_approval_h)
    await conn.execute(
        """INSERT INTO payouts (payout_id, claim_id, claim_kind, amount_fen,
               approved_amount_fen, payee, status, claim_received_at, requested_at, fund_id,
               paid_amount_fen, paid_at)
           VALUES ($1, $2, $3, $4, $4, $5, $6, $7, $8, $9, $10, $11)""",
        uuid.uuid4(),
        uuid.uuid4(),
        "vat_refund" if fund_id == TREASURY else "subsidy",
        amount_fen,
        json.dumps({"bank_name": "b", "account_name": "a", "account_number": "6222000011112222"}),
        status,
        requested_at - RECEIVED_BEFORE_APPROVAL,
        requested_at,
        fund_id,
        amount_fen if paid_at else 0,
        paid_at,
    )


async def known_payouts(pool: asyncpg.Pool) -> int:
    """The book the figures below are worked out from; returns the program fund's budget
    before its top-up."""
    async with pool.acquire() as conn:
        budget: int = await conn.fetchval(
            "SELECT budget_fen FROM funds WHERE fund_id = $1", PROGRAM
        )
        # Before the range: counts in the program's cumulative paid only.
        await payout(conn, PROGRAM, 500_00, paid_at=beijing("2026-10-20 10:00"))
        # 2 Nov: four program payouts, 1 to 4 hours after their approval; the first at
        # 00:30 Beijing time, which is still 1 Nov in UTC.
        for hours, fen, when in (
            (1, 100_00, "2026-11-02 00:30"),
            (2, 200_00, "2026-11-02 09:00"),
            (3, 300_00, "2026-11-02 14:00"),
            (4, 400_00, "2026-11-02 18:00"),
        ):
            await payout(conn, PROGRAM, fen, paid_at=beijing(when), after_approval_h=hours)
        # ... and a VAT refund (uncapped treasury fund) 10 hours after approval, at 23:30.
        await payout(
            conn, TREASURY, 1000_00, paid_at=beijing("2026-11-02 23:30"), after_approval_h=10
        )
        # 3 Nov: one program payout half an hour after approval; the program topped up.
        await payout(
            conn, PROGRAM, 50_00, paid_at=beijing("2026-11-03 08:00"), after_approval_h=0.5
        )
        await conn.execute(
            """INSERT INTO finance_audit (at, actor, action, fund_id, amount_fen, reason)
               VALUES ($1, 'finance-chen', 'top_up', $2, 1000000, 'second tranche')""",
            beijing("2026-11-03 12:00"),
            PROGRAM,
        )
        # Paid at midnight after the range's last day (4 Nov): outside it.
        await payout(conn, PROGRAM, 7_00, paid_at=beijing("2026-11-05 00:00"))
        # With the bank, not arrived: no paid figure, but committed; one only reserved.
        await payout(conn, PROGRAM, 200_00, paid_at=None, status="sent")
        await payout(conn, PROGRAM, 30_00, paid_at=None, status="requested")
        # The funds' own figures, as payout keeps them alongside.
        await conn.execute(
            """UPDATE funds SET budget_fen = budget_fen + 1000000, reserved_fen = 3000,
                   committed_fen = 175700, paid_fen = 155700 WHERE fund_id = $1""",
            PROGRAM,
        )
        await conn.execute(
            """UPDATE funds SET committed_fen = 100000, paid_fen = 100000
               WHERE fund_id = $1""",
            TREASURY,
        )
    return budget


def percentiles(p50_h: float, p90_h: float, p99_h: float, *, plus_s: float = 0) -> dict[str, Any]:
    return {
        "p50_seconds": p50_h * HOUR + plus_s,
        "p90_seconds": p90_h * HOUR + plus_s,
        "p99_seconds": p99_h * HOUR + plus_s,
    }


NONE = {"p50_seconds": None, "p90_seconds": None, "p99_seconds": None}
RECEIVED_S = RECEIVED_BEFORE_APPROVAL.total_seconds()
RANGE = {"from": "2026-11-01", "to": "2026-11-04"}


async def test_paid_per_beijing_day_with_exact_percentiles_and_totals(
    pool: asyncpg.Pool, api: httpx.AsyncClient
) -> None:
    await known_payouts(pool)
    r = await api.get("/finance/dashboard", params=RANGE, headers=dict(finance_clerk()))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["from"], body["to"], body["time_zone"]) == (
        "2026-11-01",
        "2026-11-04",
        "Asia/Shanghai",
    )
    days = {d["day"]: d for d in body["days"]}
    assert list(days) == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    # 1 Nov: nothing (the 00:30 payout of 2 Nov is 1 Nov only in UTC).
    assert days["2026-11-01"] == {
        "day": "2026-11-01",
        "payouts_paid": 0,
        "paid_fen": 0,
        "time_to_payment": NONE,
        "time_since_received": NONE,
    }
    # 2 Nov: 1, 2, 3, 4, 10 hours. p50 = the 3rd = 3 h; p90 at rank 1 + 0.9 × 4 = 4.6:
    # 4 h + 0.6 × 6 h = 7.6 h; p99 at rank 4.96: 4 h + 0.96 × 6 h = 9.76 h.
    nov2 = days["2026-11-02"]
    assert (nov2["payouts_paid"], nov2["paid_fen"]) == (5, 2000_00)
    assert nov2["time_to_payment"] == percentiles(3, 7.6, 9.76)
    # From the window: two days more for each payout, so every percentile moves by 2 d.
    assert nov2["time_since_received"] == percentiles(3, 7.6, 9.76, plus_s=RECEIVED_S)
    # 3 Nov: one payout, every percentile is its half hour.
    nov3 = days["2026-11-03"]
    assert (nov3["payouts_paid"], nov3["paid_fen"]) == (1, 50_00)
    assert nov3["time_to_payment"] == percentiles(0.5, 0.5, 0.5)
    # 4 Nov: the payout at 5 Nov 00:00 Beijing time is not on it.
    assert (days["2026-11-04"]["payouts_paid"], days["2026-11-04"]["paid_fen"]) == (0, 0)
    # The range: 0.5, 1, 2, 3, 4, 10 hours. p50 at rank 3.5 = 2.5 h; p90 at 5.5:
    # 4 h + 0.5 × 6 h = 7 h; p99 at 5.95: 4 h + 0.95 × 6 h = 9.7 h.
    totals = body["totals"]
    assert (totals["payouts_paid"], totals["paid_fen"]) == (6, 2050_00)
    assert totals["time_to_payment"] == percentiles(2.5, 7, 9.7)
    assert totals["time_since_received"] == percentiles(2.5, 7, 9.7, plus_s=RECEIVED_S)


async def test_budget_burn_per_fund_cumulative_paid_against_the_budget_of_each_day(
    pool: asyncpg.Pool, api: httpx.AsyncClient
) -> None:
    budget_before = await known_payouts(pool)
    r = await api.get("/finance/dashboard", params=RANGE, headers=dict(AUDITOR))
    assert r.status_code == 200, r.text
    funds = {f["fund_id"]: f for f in r.json()["funds"]}
    assert set(funds) == {rule.fund for rule in load_catalogue().all_rules()}
    program = funds[PROGRAM]
    budget_now = budget_before + 1000000
    assert {k: v for k, v in program.items() if k not in ("days", "name")} == {
        "fund_id": PROGRAM,
        "claim_kind": "subsidy",
        "budget_fen": budget_now,
        "reserved_fen": 3000,
        "committed_fen": 175700,
        "paid_fen": 155700,
        "in_flight_fen": 20000,
        "remaining_fen": budget_now - 3000 - 175700,
    }
    # Cumulative paid counts the October payout; the budget grows on 3 Nov (top-up).
    assert program["days"] == [
        {
            "day": "2026-11-01",
            "budget_fen": budget_before,
            "paid_fen": 0,
            "paid_cumulative_fen": 500_00,
        },
        {
            "day": "2026-11-02",
            "budget_fen": budget_before,
            "paid_fen": 1000_00,
            "paid_cumulative_fen": 1500_00,
        },
        {
            "day": "2026-11-03",
            "budget_fen": budget_now,
            "paid_fen": 50_00,
            "paid_cumulative_fen": 1550_00,
        },
        {
            "day": "2026-11-04",
            "budget_fen": budget_now,
            "paid_fen": 0,
            "paid_cumulative_fen": 1550_00,
        },
    ]
    treasury = funds[TREASURY]
    assert treasury["budget_fen"] is None and treasury["remaining_fen"] is None
    assert [d["budget_fen"] for d in treasury["days"]] == [None] * 4
    assert [d["paid_cumulative_fen"] for d in treasury["days"]] == [0, 1000_00, 1000_00, 1000_00]


async def test_one_fund_only(pool: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    await known_payouts(pool)
    r = await api.get(
        "/finance/dashboard",
        params={**RANGE, "fund_id": PROGRAM},
        headers=dict(finance_supervisor()),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fund_id"] == PROGRAM
    assert [f["fund_id"] for f in body["funds"]] == [PROGRAM]
    nov2 = next(d for d in body["days"] if d["day"] == "2026-11-02")
    # 1, 2, 3, 4 hours: p50 = 2.5 h; p90 at rank 3.7 = 3.7 h; p99 at 3.97 = 3.97 h.
    assert (nov2["payouts_paid"], nov2["paid_fen"]) == (4, 1000_00)
    assert nov2["time_to_payment"] == percentiles(2.5, 3.7, 3.97)
    assert body["totals"]["paid_fen"] == 1050_00


async def test_who_may_read_it(pool: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    anonymous = await api.get("/finance/dashboard", params=RANGE)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["errors"][0]["field"] == "header.Authorization"
    clerk = await api.get("/finance/dashboard", params=RANGE, headers=dict(window()))
    assert clerk.status_code == 403, clerk.text
    assert clerk.json()["errors"][0]["field"] == "permission.finance.dashboard.read"
    for reader in (finance_clerk(), finance_supervisor(), AUDITOR):
        r = await api.get("/finance/dashboard", params=RANGE, headers=dict(reader))
        assert r.status_code == 200, (reader.user, r.text)


@pytest.mark.parametrize(
    ("params", "field", "rule"),
    [
        ({"from": "2026-13-01"}, "query.from", None),
        ({"to": "yesterday"}, "query.to", None),
        ({"from": "2026-11-05", "to": "2026-11-04"}, "query.to", "not_before_from"),
        ({"from": "2025-11-03", "to": "2026-11-04"}, "query.to", "max_days"),
        ({"from": "2020-01-01"}, "query.from", "max_days"),
        ({"fund_id": "no-such-fund"}, "query.fund_id", "known_fund"),
        ({"fund_id": ""}, "query.fund_id", None),
    ],
)
async def test_bad_input_is_a_422_naming_the_field(
    pool: asyncpg.Pool,
    api: httpx.AsyncClient,
    params: dict[str, str],
    field: str,
    rule: str | None,
) -> None:
    r = await api.get("/finance/dashboard", params=params, headers=dict(finance_clerk()))
    assert r.status_code == 422, r.text[:500]
    error = r.json()["errors"][0]
    assert error["field"] == field, error
    if rule:
        assert error["rule"] == rule, error


async def test_366_days_and_the_defaults(pool: asyncpg.Pool, api: httpx.AsyncClient) -> None:
    leap = await api.get(
        "/finance/dashboard",
        params={"from": "2028-01-01", "to": "2028-12-31"},
        headers=dict(finance_clerk()),
    )
    assert leap.status_code == 200, leap.text
    assert len(leap.json()["days"]) == 366
    default = await api.get("/finance/dashboard", headers=dict(finance_clerk()))
    assert default.status_code == 200, default.text
    today = datetime.now(CHINA).date()
    days = [d["day"] for d in default.json()["days"]]
    assert len(days) == 30 and days[-1] in {today.isoformat(), (today - timedelta(1)).isoformat()}


def test_the_window_rules() -> None:
    today = date(2026, 11, 27)
    assert DashboardWindow.resolve(None, None, today) == DashboardWindow(date(2026, 10, 29), today)
    assert DashboardWindow.resolve(date(2026, 11, 1), None, today).first == date(2026, 11, 1)
    # The first days of the calendar: the default window starts with it.
    assert DashboardWindow.resolve(None, date(1, 1, 5), today) == DashboardWindow(
        date(1, 1, 1), date(1, 1, 5)
    )
    assert DashboardWindow.resolve(date(9999, 12, 31), date(9999, 12, 31), today).last == date(
        9999, 12, 31
    )
    # 2026-01-01 … 2027-01-01 is 366 days, both ends counted; one more is refused.
    assert DashboardWindow.resolve(date(2026, 1, 1), date(2027, 1, 1), today).first.year == 2026
    with pytest.raises(Invalid):
        DashboardWindow.resolve(date(2026, 1, 1), date(2027, 1, 2), today)


@pytest.mark.parametrize(
    ("first", "last"),
    [("0001-01-01", "0001-01-10"), ("9999-12-22", "9999-12-31"), ("2026-11-04", "2026-11-04")],
)
async def test_the_calendars_ends_answer_not_fail(
    pool: asyncpg.Pool, api: httpx.AsyncClient, first: str, last: str
) -> None:
    r = await api.get(
        "/finance/dashboard", params={"from": first, "to": last}, headers=dict(finance_clerk())
    )
    assert r.status_code == 200, r.text[:500]
    assert r.json()["days"][-1]["day"] == last
    default_from = await api.get(
        "/finance/dashboard", params={"to": "0001-01-05"}, headers=dict(finance_clerk())
    )
    assert default_from.status_code == 200, default_from.text[:500]
    assert default_from.json()["from"] == "0001-01-01"
