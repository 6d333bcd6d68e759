"""The finance dashboard's charts without a stack: scales, bars, lines with gaps, the
budget burn's "now" column, labels in both languages, and the page as rendered from a
payout answer (inline SVG, no script, tables with the same figures)."""

from __future__ import annotations

import re
from typing import Any

from jinja2 import Environment, FileSystemLoader

from services.console import charts
from services.console.app import HERE, _when, _yuan
from services.console.dashboard import DashboardFilter, dashboard_view, form_errors
from services.console.i18n import translate


def test_nice_maxima_are_round() -> None:
    assert [charts.nice_max(v) for v in (0, 0.3, 1, 7, 12, 2001, 2500, 30_000_000)] == [
        1.0,
        0.5,
        1.0,
        10.0,
        20.0,
        2500.0,
        2500.0,
        50_000_000.0,
    ]


def test_labels_in_each_language() -> None:
    assert charts.compact_yuan(25_000, "zh") == "2.5万"
    assert charts.compact_yuan(120_000_000, "zh") == "1.2亿"
    assert charts.compact_yuan(25_000, "en") == "25k"
    assert charts.compact_yuan(0, "en") == "0"
    assert charts.duration(9000, "en") == "2 h 30 min"
    assert charts.duration(9000, "zh") == "2小时30分钟"
    assert charts.duration(90061, "en") == "1 d 1 h"
    assert charts.duration(42, "zh") == "42秒"
    assert charts.duration(None, "en") == "—"
    assert charts.duration_unit(7200)[1] == "h" and charts.duration_unit(100)[1] == "s"


def test_bars_are_scaled_to_the_plot_and_empty_days_have_none() -> None:
    chart = charts.bar_chart(
        "c", ["2026-11-01", "2026-11-02"], [0.0, 150.0], label=str, titles=["a", "b"]
    )
    (bar,) = chart.bars
    # 150 of a nice 200: three quarters of the plot's height, standing on its bottom.
    plot = chart.bottom - chart.top
    assert bar.height == round(plot * 0.75, 2)
    assert round(bar.y + bar.height, 2) == chart.bottom
    assert bar.title == "b"
    assert [t.label for t in chart.y_ticks] == ["0.0", "50.0", "100.0", "150.0", "200.0"]
    assert [lab.text for lab in chart.x_labels] == ["11-01", "11-02"]


def test_a_day_without_a_value_breaks_the_line() -> None:
    days = [f"2026-11-0{i}" for i in range(1, 6)]
    chart = charts.line_chart(
        "c", days, [("line p50", [1.0, 2.0, None, 4.0, 4.0], ["t"] * 5)], label=str
    )
    (line,) = chart.lines
    assert len(line.segments) == 2 and len(line.dots) == 4
    alone = charts.line_chart(
        "c", days, [("x", [None, 3.0, None, None, None], ["t"] * 5)], label=str
    )
    # A single value is a dot, not a line.
    assert alone.lines[0].segments == [] and len(alone.lines[0].dots) == 1


def test_the_burn_chart_stacks_now_under_the_budget_line() -> None:
    now = charts.BurnNow(budget=1000.0, paid=300.0, in_flight=200.0, reserved=100.0)
    chart = charts.burn_chart(
        "c",
        ["2026-11-01", "2026-11-02"],
        [100.0, 300.0],
        [800.0, 1000.0],
        now,
        label=str,
        titles=["a", "b"],
        now_label="now",
        now_titles=("paid", "in flight", "reserved"),
    )
    assert [b.css for b in chart.bars] == ["bar paid"] * 2 + [
        "bar paid",
        "bar in-flight",
        "bar reserved",
    ]
    stacked = chart.bars[2:]
    # Each part sits on the one below it.
    assert round(stacked[0].y, 1) == round(stacked[1].y + stacked[1].height, 1)
    assert round(stacked[1].y, 1) == round(stacked[2].y + stacked[2].height, 1)
    (budget,) = chart.lines
    ys = {float(p.split(",")[1]) for seg in budget.segments for p in seg.split()}
    assert len(ys) == 2  # 800 then 1000
    assert chart.x_labels[-1].text == "now"
    uncapped = charts.burn_chart(
        "u",
        ["2026-11-01"],
        [5.0],
        [None],
        charts.BurnNow(None, 5.0, 0.0, 0.0),
        label=str,
        titles=["a"],
        now_label="now",
        now_titles=("p", "i", "r"),
    )
    assert uncapped.lines == []


def test_the_filter_goes_to_payout_as_typed_and_errors_come_back_to_the_fields() -> None:
    chosen = DashboardFilter.parse(" 2026-11-01 ", "", "startup-loan-interest-2026")
    assert chosen.api_params() == {"from": "2026-11-01", "fund_id": "startup-loan-interest-2026"}
    assert form_errors({"query.to": "x", "query.fund_id": "y"}) == {"to": "x", "fund": "y"}


def percentiles(p50: float | None) -> dict[str, float | None]:
    return {"p50_seconds": p50, "p90_seconds": p50, "p99_seconds": p50}


BODY: dict[str, Any] = {
    "from": "2026-11-01",
    "to": "2026-11-02",
    "time_zone": "Asia/Shanghai",
    "fund_id": None,
    "as_of": "2026-11-02T10:00:00Z",
    "totals": {
        "payouts_paid": 2,
        "paid_fen": 123456,
        "time_to_payment": percentiles(9000.0),
        "time_since_received": percentiles(180000.0),
    },
    "days": [
        {
            "day": "2026-11-01",
            "payouts_paid": 0,
            "paid_fen": 0,
            "time_to_payment": percentiles(None),
            "time_since_received": percentiles(None),
        },
        {
            "day": "2026-11-02",
            "payouts_paid": 2,
            "paid_fen": 123456,
            "time_to_payment": percentiles(9000.0),
            "time_since_received": percentiles(180000.0),
        },
    ],
    "funds": [
        {
            "fund_id": "startup-loan-interest-2026",
            "claim_kind": "subsidy",
            "name": "创业担保贷款贴息 (startup guaranteed-loan interest subsidy)",
            "budget_fen": 700000000,
            "reserved_fen": 100,
            "committed_fen": 123456,
            "paid_fen": 123456,
            "in_flight_fen": 0,
            "remaining_fen": 700000000 - 100 - 123456,
            "days": [
                {
                    "day": "2026-11-01",
                    "budget_fen": 700000000,
                    "paid_fen": 0,
                    "paid_cumulative_fen": 0,
                },
                {
                    "day": "2026-11-02",
                    "budget_fen": 700000000,
                    "paid_fen": 123456,
                    "paid_cumulative_fen": 123456,
                },
            ],
        }
    ],
}


def render(lang: str) -> str:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
    env.filters["yuan"] = _yuan
    env.filters["when"] = _when
    return env.get_template("dashboard.html").render(
        t=lambda key: translate(key, lang),
        lang=lang,
        caller=None,
        csrf="x",
        csrf_header="X-CSRF-Token",
        path="/finance/dashboard",
        sees_dashboards=True,
        grafana_url="http://grafana.example/d/claimflow-finance",
        reads_finance=True,
        filter=DashboardFilter(),
        fund_choices=[("startup-loan-interest-2026", "创业担保贷款贴息")],
        errors={},
        board=dashboard_view(BODY, lang),
        window={"from": "2026-11-01", "to": "2026-11-02", "as_of": BODY["as_of"], "days": 2},
    )


def test_the_page_draws_inline_svg_with_tables_of_the_same_figures() -> None:
    page = render("zh")
    assert "<script" not in page.split("</head>")[1]  # no chart script in the body
    assert page.count("<svg") == 4  # amount, count, time to payment, one fund
    assert 'style="' not in page  # the CSP allows no inline style
    assert 'role="img"' in page and "<desc" in page
    assert re.search(r'<rect class="bar" [^>]*height="[0-9.]+"', page)
    row = re.search(r'<tr data-day="2026-11-02">.*?</tr>', page, re.S)
    assert row and 'data-fen="123456">1,234.56<' in row.group(0)
    assert "2小时30分钟" in page and "grafana.example" in page
    english = render("en")
    assert "2 h 30 min" in english and "Finance dashboard" in english


def test_only_finance_and_auditors_reach_the_dashboard() -> None:
    from tests.unit.test_console_finance import _signed_in_client

    assert _signed_in_client().get("/finance/dashboard").status_code == 403  # a reviewer
    clerk = _signed_in_client(
        subject="finance-wang", roles=frozenset({"finance_clerk"}), departments=frozenset()
    )
    # The header links the page for finance (the page itself needs payout: not here).
    assert 'href="/finance/dashboard"' in clerk.get("/status").text
