"""The finance dashboard (资金看板, issue 13) in a real browser against the real stack:
after claims are paid, the page's tables carry exactly the figures of payout's
``GET /finance/dashboard`` and its inline SVG charts have bars. The screen is saved to
docs/screens/finance-dashboard.png."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser.conftest import ConsoleStack, screenshot, sign_in
from tests.browser.test_console_finance import beijing_day, paid_claim, payout_of
from tests.e2e.helpers import eventually
from tests.tokens import AUDITOR, finance_clerk, window

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

FUND = "treasury-refund"


async def api_dashboard(console: ConsoleStack, params: dict[str, str]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=20, headers=dict(finance_clerk())) as client:
        r = await client.get(f"{console.cfg.url('payout')}/finance/dashboard", params=params)
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body


async def cell(page: Page, selector: str, attribute: str) -> str:
    value = await page.locator(selector).get_attribute(attribute)
    assert value is not None, selector
    return value


async def page_figures(page: Page, day: str) -> dict[str, Any]:
    """What the page's tables say about ``day``: the raw figures (data attributes) and
    the text a reader sees."""
    paid = f'[data-testid=paid-table] tr[data-day="{day}"]'
    ttp = f'[data-testid=ttp-table] tr[data-day="{day}"]'
    burn = f'[data-testid="burn-{FUND}"] tr[data-day="{day}"]'
    seconds = {}
    for p in ("p50", "p90", "p99"):
        value = await cell(
            page, f'{ttp} td[data-kind=time_to_payment][data-p="{p}"]', "data-seconds"
        )
        seconds[p] = float(value) if value else None
    return {
        "count": int(await cell(page, f"{paid} td[data-count]", "data-count")),
        "fen": int(await cell(page, f"{paid} td[data-fen]", "data-fen")),
        "amount_text": (await page.locator(f"{paid} td[data-fen]").inner_text()).strip(),
        "seconds": seconds,
        "cumulative_fen": int(await cell(page, f"{burn} td:nth-of-type(3)", "data-fen")),
        "paid_now_fen": int(
            await cell(page, f'[data-testid="now-{FUND}"] td:nth-of-type(4)', "data-fen")
        ),
    }


def api_figures(body: dict[str, Any], day: str) -> dict[str, Any]:
    (today,) = [d for d in body["days"] if d["day"] == day]
    (fund,) = [f for f in body["funds"] if f["fund_id"] == FUND]
    (burn,) = [d for d in fund["days"] if d["day"] == day]
    fen = today["paid_fen"]
    return {
        "count": today["payouts_paid"],
        "fen": fen,
        "amount_text": f"{fen // 100:,}.{fen % 100:02d}",
        "seconds": {p: today["time_to_payment"][f"{p}_seconds"] for p in ("p50", "p90", "p99")},
        "cumulative_fen": burn["paid_cumulative_fen"],
        "paid_now_fen": fund["paid_fen"],
    }


async def test_the_dashboard_shows_payouts_figures_after_claims_are_paid(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    claim_id, _ = await paid_claim(console_stack)
    await paid_claim(console_stack)
    payout = await payout_of(console_stack, claim_id)
    day = beijing_day(payout["paid_at"])

    page = await sign_in(browser, console_stack, "finance-wang")
    await page.click('header nav a[href="/finance/dashboard"]')
    await expect(page.locator("h1")).to_have_text("资金看板")
    # The Grafana link stays: the production view.
    await expect(page.locator("header [data-testid=grafana]")).to_be_visible()
    await page.fill('input[name="from"]', day)
    await page.fill('input[name="to"]', day)
    await page.select_option('select[name="fund"]', FUND)
    await page.click("form.dashboard-filter button[type=submit]")
    await expect(page.locator('[data-testid=paid-table] tr[data-day="' + day + '"]')).to_have_count(
        1
    )

    params = {"from": day, "to": day, "fund_id": FUND}

    async def agree() -> tuple[dict[str, Any], dict[str, Any]] | None:
        # Other tests' payouts may arrive meanwhile: the page and the API are read until
        # one reading of each agrees.
        shown = await page_figures(page, day)
        wanted = api_figures(await api_dashboard(console_stack, params), day)
        if shown == wanted:
            return shown, wanted
        await page.reload()
        return None

    shown, _ = await eventually(agree, timeout=60, what="the page's figures equal the API's")
    assert shown["count"] >= 2 and shown["fen"] >= 2 * 720_000_00
    assert all(s is not None and s > 0 for s in shown["seconds"].values())
    # The charts are inline SVG with bars (amount, count, the fund's burn) and lines.
    for chart in ("chart-paid-amount", "chart-paid-count", f"chart-burn-{FUND}"):
        assert await page.locator(f'svg[data-testid="{chart}"] rect.bar').count() >= 1, chart
    assert await page.locator('svg[data-testid="chart-time-to-payment"] circle').count() == 3
    assert await page.locator("svg[role=img] title").count() >= 4

    # A week for the screenshot (docs/screens), today's figures still the API's.
    week_start = (date.fromisoformat(day) - timedelta(days=6)).isoformat()
    await page.goto(f"{console_stack.url}/finance/dashboard?from={week_start}&to={day}&fund={FUND}")
    await expect(page.locator("[data-testid=paid-table] tbody tr")).to_have_count(7)
    await screenshot(page, "finance-dashboard")

    # The auditor reads it too; a window clerk's token gets payout's 403.
    auditor = await sign_in(browser, console_stack, "auditor-zhou")
    await auditor.goto(f"{console_stack.url}/finance/dashboard?from={day}&to={day}")
    await expect(auditor.locator("[data-testid=paid-table]")).to_be_visible()
    async with httpx.AsyncClient(timeout=20) as client:
        url = f"{console_stack.cfg.url('payout')}/finance/dashboard"
        assert (await client.get(url)).status_code == 401
        assert (await client.get(url, headers=dict(window()))).status_code == 403
        assert (await client.get(url, headers=dict(AUDITOR))).status_code == 200


async def test_a_bad_range_is_shown_next_to_the_field(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    page = await sign_in(browser, console_stack, "finance-wang")
    await page.goto(f"{console_stack.url}/finance/dashboard?from=2026-11-05&to=2026-11-04")
    await expect(page.locator('[data-field="to"]')).to_have_text("截止日期早于开始日期")
    await expect(page.locator("svg.chart")).to_have_count(0)
