"""The finance dashboard (资金看板, issue 13): paid per day, time to payment and budget
burn, drawn by the console itself as inline SVG from payout's ``GET /finance/dashboard``
— the embedded setup has no Grafana (Grafana stays the production view: the header's
link). Each chart has a table of the same numbers under it.

Time to payment is payout's ``paid_at − requested_at``: from the final approval reaching
payout to the money arriving (services/payout/adapters/dashboard.py says why)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse

from services.console import charts
from services.console.finance import FinanceReader
from services.console.i18n import bilingual_name, translate
from services.console.web import ConsoleError, Kit

PERCENTILES = ("p50", "p90", "p99")
HALF_WIDTH = 400
"""Amount and count side by side: each drawn narrower, so their lettering stays legible."""


@dataclass(frozen=True)
class DashboardFilter:
    """The form's values, passed on to payout as typed (payout checks them and names
    the field of any it refuses, shown next to it)."""

    date_from: str = ""
    date_to: str = ""
    fund: str = ""

    @classmethod
    def parse(cls, date_from: str, date_to: str, fund: str) -> DashboardFilter:
        return cls(date_from.strip()[:32], date_to.strip()[:32], fund.strip()[:100])

    def api_params(self) -> dict[str, str]:
        params = {"from": self.date_from, "to": self.date_to, "fund_id": self.fund}
        return {k: v for k, v in params.items() if v}


FORM_FIELD = {"query.from": "from", "query.to": "to", "query.fund_id": "fund"}


def form_errors(api_errors: dict[str, str]) -> dict[str, str]:
    """payout's ``query.<name>`` errors under the form's input names."""
    return {FORM_FIELD.get(k, ""): v for k, v in api_errors.items()}


def _yuan_text(fen: int) -> str:
    """Fen as yuan with thousands separators, exactly (no float on the way)."""
    return f"{Decimal(fen) / 100:,.2f}"


def dashboard_view(body: dict[str, Any], lang: str) -> dict[str, Any]:
    """Charts and table rows from payout's answer (pure; unit-tested)."""

    def t(key: str) -> str:
        return translate(key, lang)

    days = [d["day"] for d in body["days"]]
    yuan_label = lambda v: charts.compact_yuan(v, lang)  # noqa: E731 - a one-line scale
    paid = body["days"]
    amount_chart = charts.bar_chart(
        "chart-paid-amount",
        days,
        [d["paid_fen"] / 100 for d in paid],
        label=yuan_label,
        titles=[f"{d['day']}: {_yuan_text(d['paid_fen'])} {t('dash.yuan')}" for d in paid],
        width=HALF_WIDTH,
    )
    count_chart = charts.bar_chart(
        "chart-paid-count",
        days,
        [float(d["payouts_paid"]) for d in paid],
        label=lambda v: charts.plain_number(v),
        titles=[f"{d['day']}: {d['payouts_paid']} {t('dash.payouts_unit')}" for d in paid],
        css="bar count",
        width=HALF_WIDTH,
    )
    highest = max(
        (d["time_to_payment"][f"{p}_seconds"] or 0.0 for d in paid for p in PERCENTILES),
        default=0.0,
    )
    size, unit_en, unit_zh = charts.duration_unit(highest)
    unit = unit_en if lang == "en" else unit_zh
    series = []
    for p in PERCENTILES:
        seconds = [d["time_to_payment"][f"{p}_seconds"] for d in paid]
        series.append(
            (
                f"line {p}",
                [None if s is None else s / size for s in seconds],
                [
                    f"{d['day']} {p.upper()}: {charts.duration(s, lang)}"
                    for d, s in zip(paid, seconds, strict=True)
                ],
            )
        )
    ttp_chart = charts.line_chart(
        "chart-time-to-payment",
        days,
        series,
        label=lambda v: f"{charts.plain_number(v)} {unit}",
    )
    funds = [_fund_view(f, days, lang) for f in body["funds"]]
    return {
        "days": paid,
        "totals": body["totals"],
        "amount_chart": amount_chart,
        "count_chart": count_chart,
        "ttp_chart": ttp_chart,
        "funds": funds,
        "duration": lambda s: charts.duration(s, lang),
        "fen": _yuan_text,
    }


def _fund_view(fund: dict[str, Any], days: list[str], lang: str) -> dict[str, Any]:
    def t(key: str) -> str:
        return translate(key, lang)

    rows = fund["days"]
    now = charts.BurnNow(
        budget=None if fund["budget_fen"] is None else fund["budget_fen"] / 100,
        paid=fund["paid_fen"] / 100,
        in_flight=fund["in_flight_fen"] / 100,
        reserved=fund["reserved_fen"] / 100,
    )
    chart = charts.burn_chart(
        f"chart-burn-{fund['fund_id']}",
        days,
        [r["paid_cumulative_fen"] / 100 for r in rows],
        [None if r["budget_fen"] is None else r["budget_fen"] / 100 for r in rows],
        now,
        label=lambda v: charts.compact_yuan(v, lang),
        titles=[
            f"{r['day']}: {t('dash.paid_cumulative')} {_yuan_text(r['paid_cumulative_fen'])}"
            for r in rows
        ],
        now_label=t("dash.now"),
        now_titles=(
            f"{t('funds.paid')} {_yuan_text(fund['paid_fen'])}",
            f"{t('dash.in_flight')} {_yuan_text(fund['in_flight_fen'])}",
            f"{t('funds.reserved')} {_yuan_text(fund['reserved_fen'])}",
        ),
    )
    return {**fund, "display_name": bilingual_name(fund["name"], lang), "chart": chart}


def install_dashboard(app: FastAPI, kit: Kit) -> None:
    @app.get("/finance/dashboard")
    async def dashboard_page(
        request: Request,
        session: FinanceReader,
        fund: str = "",
    ) -> HTMLResponse:
        chosen = DashboardFilter.parse(
            request.query_params.get("from", ""), request.query_params.get("to", ""), fund
        )
        fund_list = await kit.need(request, "payout", "/funds")
        context: dict[str, Any] = {
            "filter": chosen,
            "fund_choices": [
                (f["fund_id"], bilingual_name(f["name"], session.lang)) for f in fund_list
            ],
            "errors": {},
            "board": None,
        }
        answer = await kit.call(
            request, "payout", "GET", "/finance/dashboard", params=chosen.api_params()
        )
        if answer.status == 422:
            context["errors"] = form_errors(answer.field_errors(session.lang)) or {
                "": answer.detail
            }
            return kit.render(request, "dashboard.html", context, status=422)
        if answer.status == 403:
            raise ConsoleError(403, "error.403", answer.detail)
        if not answer.ok:
            raise ConsoleError(502, "error.unavailable", f"payout: {answer.detail}")
        body = answer.body
        context["board"] = dashboard_view(body, session.lang)
        context["window"] = {
            "from": body["from"],
            "to": body["to"],
            "as_of": body["as_of"],
            "days": (date.fromisoformat(body["to"]) - date.fromisoformat(body["from"])).days + 1,
        }
        return kit.render(request, "dashboard.html", context)
