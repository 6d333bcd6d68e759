"""Whole-table gauges (budgets, waiting, stuck), exported by one payout instance only."""

from __future__ import annotations

import asyncpg

from services.payout import views
from services.payout.domain.model import IN_DOUBT
from services.payout.metrics import FUND_BUDGET, FUND_REMAINING, FUND_RESERVED, STUCK
from services.payout.metrics import WAITING as WAITING_GAUGE
from shared.table_gauges import SingleExporter

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
            funds = await views.fund_views(conn)
            stuck = await views.stuck_payouts(conn, stuck_after_s=stuck_after_s)
        for v in funds:
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
