"""``GET /finance/dashboard`` (issue 13): the figures of the finance dashboard — paid per
Beijing day, time-to-payment percentiles per day, budget burn per fund — computed from
payout's own tables (services/payout/adapters/dashboard.py), for the console's charts
where there is no Grafana. Money in integer fen (``*_fen``), durations in seconds."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from services.payout import views
from services.payout.adapters.dashboard import BUSINESS_TIMEZONE
from shared.http_deps import ConnectionDep

router = APIRouter(tags=["finance dashboard"])


class Percentiles(BaseModel):
    """Seconds; None when nothing was paid (no percentile of nothing)."""

    p50_seconds: float | None
    p90_seconds: float | None
    p99_seconds: float | None

    @classmethod
    def of(cls, values: list[timedelta] | None) -> Percentiles:
        p50, p90, p99 = (None, None, None) if values is None else values
        return cls(p50_seconds=_seconds(p50), p90_seconds=_seconds(p90), p99_seconds=_seconds(p99))


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


class PaidFigures(BaseModel):
    payouts_paid: int = Field(description="payouts whose money arrived (到账)")
    paid_fen: int = Field(description="fen arrived")
    time_to_payment: Percentiles = Field(
        description="paid_at − requested_at: from payout recording the final approval to "
        "the money arriving (finance's part: budget queue, held documents, the bank, "
        "retries, returns and corrections)"
    )
    time_since_received: Percentiles = Field(
        description="paid_at − claim_received_at: from the window to the money arriving "
        "(what Grafana's claimflow_time_to_payment_seconds measures)"
    )


def _figures(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "payouts_paid": int(row["payouts_paid"]),
        "paid_fen": int(row["paid_fen"]),
        "time_to_payment": Percentiles.of(row["after_approval"]),
        "time_since_received": Percentiles.of(row["after_received"]),
    }


class PaidDay(PaidFigures):
    day: date = Field(description="a Beijing calendar day (Asia/Shanghai)")


class BurnDay(BaseModel):
    day: date
    budget_fen: int | None = Field(description="the budget at the end of the day (None: uncapped)")
    paid_fen: int = Field(description="fen paid from the fund on the day")
    paid_cumulative_fen: int = Field(description="fen paid from the fund up to the day's end")


class FundBurn(BaseModel):
    fund_id: str
    claim_kind: str
    name: str
    budget_fen: int | None = Field(description="now; None: an uncapped fund")
    reserved_fen: int = Field(description="now: approved, not yet issued")
    committed_fen: int = Field(description="now: issued to the treasury (paid included)")
    paid_fen: int = Field(description="now: arrived")
    in_flight_fen: int = Field(
        description="now: committed − paid (with the bank, or returned and awaiting correction)"
    )
    remaining_fen: int | None = Field(description="now: budget − reserved − committed")
    days: list[BurnDay]

    @classmethod
    def of(cls, fund: asyncpg.Record, days: list[asyncpg.Record]) -> FundBurn:
        budget = fund["budget_fen"]
        committed, reserved, paid = fund["committed_fen"], fund["reserved_fen"], fund["paid_fen"]
        return cls(
            fund_id=fund["fund_id"],
            claim_kind=fund["claim_kind"],
            name=fund["name"],
            budget_fen=budget,
            reserved_fen=reserved,
            committed_fen=committed,
            paid_fen=paid,
            in_flight_fen=committed - paid,
            remaining_fen=None if budget is None else budget - reserved - committed,
            days=[BurnDay.model_validate(dict(d)) for d in days],
        )


class DashboardOut(BaseModel):
    from_: date = Field(serialization_alias="from", description="first day, inclusive")
    to: date = Field(description="last day, inclusive")
    time_zone: str = Field(description="the days' calendar")
    fund_id: str | None = Field(description="the fund chosen; None: all funds")
    as_of: datetime = Field(description="the figures are one snapshot of this moment")
    totals: PaidFigures = Field(description="over the whole range")
    days: list[PaidDay]
    funds: list[FundBurn]


@router.get("/finance/dashboard", response_model=DashboardOut)
async def finance_dashboard(
    conn: ConnectionDep,
    from_: Annotated[
        date | None,
        Query(alias="from", description="first Beijing day (default: 29 days before `to`)"),
    ] = None,
    to: Annotated[date | None, Query(description="last Beijing day (default: today)")] = None,
    fund_id: Annotated[
        str | None, Query(min_length=1, max_length=100, description="one fund (default: all)")
    ] = None,
) -> DashboardOut:
    """Paid per day (count, fen), time-to-payment p50/p90/p99 per day and over the range,
    each fund's budget, reserved, committed, paid and remaining now with its cumulative
    paid and budget per day. Days are Asia/Shanghai calendar days, both ends inclusive,
    at most 366 (422 ``max_days``); ``to`` before ``from`` is 422 ``not_before_from``, an
    unknown ``fund_id`` 422 ``known_fund``."""
    board = await views.finance_dashboard(conn, from_, to, fund_id)
    return DashboardOut(
        from_=board.window.first,
        to=board.window.last,
        time_zone=BUSINESS_TIMEZONE,
        fund_id=board.fund_id,
        as_of=board.as_of,
        totals=PaidFigures.model_validate(_figures(board.totals)),
        days=[PaidDay.model_validate({"day": d["day"], **_figures(d)}) for d in board.days],
        funds=[FundBurn.of(f, board.burn.get(f["fund_id"], [])) for f in board.funds],
    )
