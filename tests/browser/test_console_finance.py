"""Finance (资金) and audit (审计) screens in a real browser against the real stack.

Claims are set up through the services' APIs (the clerk's and the reviewers' screens
have their own journeys in test_console_journeys.py); everything finance and the auditor
do happens in the browser. Screens are saved to docs/screens/."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import re
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from shared.audit.seal import seal_now
from shared.devstack import stack
from shared.workdays import CHINA
from tests.browser.conftest import ConsoleStack, screenshot, sign_in
from tests.e2e.helpers import approve_through_review, eventually, submit_claim, wait_status
from tests.tokens import AUDITOR, finance_clerk

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

_rng = random.Random()
RETURNED_ON_FIRST_ISSUE = "0000003"
"""The simulated bank's magic account ending (docs/payout.md): sent, then returned."""


def account(ending: str = "") -> str:
    digits = "".join(str(_rng.randint(0, 9)) for _ in range(19 - len(ending)))
    return digits + ending


async def paid_claim(console: ConsoleStack, **overrides: Any) -> tuple[str, str]:
    """A VAT refund registered, approved by its departments and paid: (claim id, the
    account number it was paid to)."""
    number = account()
    async with httpx.AsyncClient(timeout=20, headers=dict(AUDITOR)) as client:
        claim_id = await submit_claim(
            client,
            console.cfg,
            bank_account={
                "bank_name": "中国工商银行自贡分行",
                "account_name": "测试企业",
                "account_number": number,
            },
            **overrides,
        )
        await approve_through_review(client, console.cfg, claim_id)
        await wait_status(client, console.cfg, claim_id, "paid", timeout=60)
    return claim_id, number


async def approve_in_console(
    browser: Browser, console: ConsoleStack, requester: Page, user: str, target: str
) -> None:
    """Dual control in the console: the requester sees the pending request without
    buttons; ``user`` (another person) approves it on the pending-requests page. The
    requester's page is back where it was afterwards."""
    was = requester.url
    await requester.goto(f"{console.url}/finance/requests")
    row = requester.locator(f'tr[data-target="{target}"]')
    await expect(row).to_have_count(1)
    await expect(row.locator("button")).to_have_count(0)  # not on one's own request
    checker = await sign_in(browser, console, user)
    await checker.goto(f"{console.url}/finance/requests")
    row = checker.locator(f'tr[data-target="{target}"]')
    await row.locator("button.primary").click()
    await expect(checker.locator("[role=status]")).to_be_visible()
    await expect(checker.locator(f'tr[data-target="{target}"]')).to_have_count(0)
    await requester.goto(was)


async def payout_if_any(console: ConsoleStack, claim_id: str) -> dict[str, Any] | None:
    """The claim's payout, or None while payout has not made it yet (the approval is an
    event on its way)."""
    # As finance: full account numbers (everyone else reads them masked).
    async with httpx.AsyncClient(timeout=20, headers=dict(finance_clerk())) as client:
        r = await client.get(f"{console.cfg.url('payout')}/payouts", params={"claim_id": claim_id})
        r.raise_for_status()
        rows = r.json()
        if not rows:
            return None
        (row,) = rows
        detail = await client.get(f"{console.cfg.url('payout')}/payouts/{row['payout_id']}")
        detail.raise_for_status()
        payout: dict[str, Any] = detail.json()
        return payout


async def payout_of(console: ConsoleStack, claim_id: str) -> dict[str, Any]:
    payout = await payout_if_any(console, claim_id)
    assert payout is not None, f"no payout for {claim_id}"
    return payout


def beijing_day(moment: str) -> str:
    at = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return at.astimezone(CHINA).date().isoformat()


async def download_csv(page: Page) -> tuple[str, list[dict[str, str]]]:
    async with page.expect_download() as info:
        await page.click("[data-testid=export]")
    download = await info.value
    path = await download.path()
    assert path is not None
    text = await asyncio.to_thread(Path(path).read_text, encoding="utf-8")
    assert text.startswith("\ufeff")
    return text, list(csv.DictReader(io.StringIO(text[1:])))


async def test_finance_sees_a_paid_claim_and_exports_the_filtered_csv(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    claim_id, number = await paid_claim(console_stack)
    payout = await payout_of(console_stack, claim_id)
    today = beijing_day(payout["requested_at"])

    page = await sign_in(browser, console_stack, "finance-wang")
    # Finance lands on the funds; the header names the person, role and department and
    # links the dashboards.
    await expect(page).to_have_url(re.compile(r"/finance/funds$"))
    header = page.locator("header")
    await expect(header.locator(".who")).to_contain_text("王 (finance clerk)")
    await expect(header.locator(".who")).to_contain_text("财务人员")
    await expect(header.locator(".who")).to_contain_text("财政局")
    await expect(header.locator("[data-testid=grafana]")).to_be_visible()
    refund = page.locator('tr[data-fund="treasury-refund"]')
    await expect(refund).to_contain_text("不设上限")
    await screenshot(page, "finance-funds")

    # The filter, chosen on the page.
    await page.click("header nav >> text=拨付")
    await page.select_option('select[name="status"]', "paid")
    await page.select_option('select[name="fund"]', "treasury-refund")
    await page.fill('input[name="from"]', today)
    await page.fill('input[name="to"]', today)
    await page.click("form.filters button[type=submit]")
    await page.wait_for_url(re.compile(r"status=paid"))
    row = page.locator(f'tr[data-claim="{claim_id}"]')
    await expect(row).to_contain_text("已到账")
    await expect(row).to_contain_text("720,000.00")
    # On the screen the account is masked, for finance too.
    await expect(row).to_contain_text("****" + number[-4:])
    assert number not in await page.content()
    await screenshot(page, "finance-payouts")

    # The export holds exactly the rows of this filter, as payout's API lists them.
    _, rows = await download_csv(page)
    async with httpx.AsyncClient(headers=dict(finance_clerk())) as client:
        r = await client.get(
            f"{console_stack.cfg.url('payout')}/payouts",
            params={
                "status": "paid",
                "fund": "treasury-refund",
                "from": f"{today}T00:00:00+08:00",
                "to": f"{today}T23:59:59.999999+08:00",
                "limit": 500,
            },
        )
    expected = {p["payout_id"] for p in r.json()}
    assert len(rows) == int(r.headers["X-Total-Count"]) == len(expected)
    assert {row["payout_id"] for row in rows} == expected
    assert all(row["status"] == "paid" and row["fund_id"] == "treasury-refund" for row in rows)
    mine = next(row for row in rows if row["claim_id"] == claim_id)
    assert mine["approved_amount"] == mine["paid_amount"] == "720000.00"
    # Finance staff get the full account number in the export.
    assert mine["account_number"] == number

    # An auditor exports the same filter: the same rows, every account masked.
    auditor = await sign_in(browser, console_stack, "auditor-zhou")
    await expect(auditor.locator("header [data-testid=grafana]")).to_have_count(0)
    await auditor.goto(
        f"{console_stack.url}/finance/payouts?status=paid&fund=treasury-refund"
        f"&from={today}&to={today}"
    )
    audit_text, audit_rows = await download_csv(auditor)
    assert {row["payout_id"] for row in audit_rows} == expected
    assert all(re.fullmatch(r"\*{4}\d{4}", row["account_number"]) for row in audit_rows)
    assert number not in audit_text


async def test_a_returned_payment_is_corrected_and_paid(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    async with httpx.AsyncClient(timeout=20, headers=dict(AUDITOR)) as client:
        claim_id = await submit_claim(
            client,
            console_stack.cfg,
            bank_account={
                "bank_name": "中国工商银行自贡分行",
                "account_name": "测试企业",
                "account_number": account(RETURNED_ON_FIRST_ISSUE),
            },
        )
        await approve_through_review(client, console_stack.cfg, claim_id)

    async def returned() -> dict[str, Any] | None:
        payout = await payout_if_any(console_stack, claim_id)
        return payout if payout is not None and payout["status"] == "returned" else None

    await eventually(returned, timeout=60, what=f"payout of {claim_id} returned")

    page = await sign_in(browser, console_stack, "finance-wang")
    await page.goto(f"{console_stack.url}/finance/payouts?status=returned")
    row = page.locator(f'tr[data-claim="{claim_id}"]')
    await expect(row).to_contain_text("银行退回")
    await row.get_by_role("link").click()
    await page.wait_for_url(re.compile(r"/finance/payouts/[0-9a-f-]{36}$"))
    await expect(page.locator("[data-testid=payout-status]")).to_have_text("银行退回")
    await expect(page.locator("section.correction")).to_contain_text("双人复核")

    # A wrong account number: payout's 422 next to the field, nothing changed.
    await page.fill('[name="payee.account_number"]', "12ab")
    await page.fill('[name="reason"]', "企业来函: 账户名称有误")
    await page.click("section.correction button.primary")
    await expect(page.locator('.error-text[data-field="payee.account_number"]')).to_be_visible()
    assert (await payout_of(console_stack, claim_id))["status"] == "returned"

    corrected = account()
    await page.fill('[name="payee.account_name"]', "测试企业 (更正)")
    await page.fill('[name="payee.account_number"]', corrected)
    await page.fill('[name="reason"]', "企业来函: 账户名称有误")
    await screenshot(page, "finance-correction")
    await page.click("section.correction button.primary")
    await expect(page.locator("[data-testid=corrected]")).to_be_visible()
    assert corrected not in page.url
    # Only a request so far: the payout is corrected when another person approves.
    payout = await payout_of(console_stack, claim_id)
    assert payout["status"] == "returned"
    await approve_in_console(browser, console_stack, page, "finance-chen", payout["payout_id"])

    async with httpx.AsyncClient(timeout=20, headers=dict(AUDITOR)) as client:
        await wait_status(client, console_stack.cfg, claim_id, "paid", timeout=60)
    payout = await payout_of(console_stack, claim_id)
    assert payout["issue_no"] == 2
    assert payout["payee"]["account_number"] == corrected
    await page.reload()
    await expect(page.locator("[data-testid=payout-status]")).to_have_text("已到账")
    await expect(page.locator("[data-testid=hops]")).to_contain_text("account_corrected")


async def test_a_statement_upload_shows_the_reconciliation_result(
    console_stack: ConsoleStack, browser: Browser, tmp_path: Path
) -> None:
    # Three paid claims: one line matches, one has the wrong amount, one is left out.
    paid = await asyncio.gather(*(paid_claim(console_stack) for _ in range(3)))
    vouchers = []
    for claim_id, _ in paid:
        payout = await payout_of(console_stack, claim_id)
        (voucher,) = payout["vouchers"]
        vouchers.append(voucher)
    day = beijing_day(vouchers[0]["sent_at"])
    assert {beijing_day(v["sent_at"]) for v in vouchers} == {day}, "a test across midnight"
    suffix = f"{_rng.randrange(10**9):09d}"
    unknown = f"DP-NOSUCH{suffix}-1"
    lines = [
        "value_date,bank_reference,end_to_end_id,amount,account_number,direction",
        f"{day},BKM{suffix},{vouchers[0]['voucher_no']},{vouchers[0]['amount']},"
        f"{vouchers[0]['account_number']},debit",
        f"{day},BKX{suffix},{vouchers[1]['voucher_no']},1.00,{vouchers[1]['account_number']},debit",
        f"{day},BKU{suffix},{unknown},99.00,6222020200001234567,debit",
    ]
    statement = tmp_path / "statement.csv"
    statement.write_text("\n".join(lines) + "\n", encoding="utf-8")

    page = await sign_in(browser, console_stack, "finance-wang")
    await page.click("header nav >> text=对账")
    await page.set_input_files('input[name="statement"]', str(statement))
    await page.click("form.upload button.primary")
    await expect(page.locator("[data-testid=imported]")).to_contain_text("3")
    report = page.locator(f"[data-testid=report-{day}]")
    await expect(report.locator('table[data-kind="matched"]')).to_contain_text(
        vouchers[0]["voucher_no"]
    )
    mismatch = report.locator('table[data-kind="amount_mismatch"]')
    await expect(mismatch).to_contain_text(vouchers[1]["voucher_no"])
    await expect(mismatch).to_contain_text("720,000.00")
    await expect(report.locator('table[data-kind="unknown_statement_line"]')).to_contain_text(
        unknown
    )
    await expect(report.locator('table[data-kind="missing_statement_line"]')).to_contain_text(
        vouchers[2]["voucher_no"]
    )
    for counter in ("n-matched", "n-mismatch", "n-unknown", "n-missing"):
        assert int(await report.locator(f"[data-testid={counter}]").inner_text()) >= 1
    await screenshot(page, "finance-reconciliation", full_page=False)


async def test_an_auditor_sees_a_claims_verified_history_and_a_tampered_row(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    claim_id, number = await paid_claim(console_stack)
    # Sealed now (the services seal every CLAIMFLOW_AUDIT_SEAL_INTERVAL_S): the page shows it.
    cfg = console_stack.cfg
    await seal_now(cfg.admin_dsn, stack.SERVICES, stack.keys_dir(cfg), stack.seal_dir(cfg))
    page = await sign_in(browser, console_stack, "auditor-zhou")
    await expect(page).to_have_url(re.compile(r"/audit$"))
    await expect(page.locator("header .who")).to_contain_text("审计")
    await page.fill('[name="claim"]', claim_id)
    await page.click("form.search button")
    await page.wait_for_url(re.compile(rf"/audit/claims/{claim_id}$"))
    history = page.locator("[data-testid=history] tbody tr")
    sources = set(await history.evaluate_all("rows => rows.map(r => r.dataset.source)"))
    assert sources == {"intake", "review", "payout"}
    for action in ("claim.submitted", "review.task_decided", "review.decided", "payout.confirmed"):
        await expect(page.locator("[data-testid=history]")).to_contain_text(action)
    # Untouched: every entry verified by its service, no banner.
    marks = await page.locator("[data-testid=verification]").all_inner_texts()
    assert marks and all(m == "✓ 已校验 · 已封存" for m in marks), marks
    statuses = await history.evaluate_all("rows => rows.map(r => r.dataset.status)")
    assert set(statuses) == {"ok"}
    await expect(page.locator("[data-testid=audit-ok]")).to_be_visible()
    await expect(page.locator("[data-testid=audit-broken]")).to_have_count(0)
    seals = await page.locator("[data-testid=seals] tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.seal)"
    )
    assert seals and set(seals) == {"sealed"}
    assert number not in await page.content()
    times = await page.locator("[data-testid=history] tbody tr td:first-child").all_inner_texts()
    assert times == sorted(times)
    await screenshot(page, "audit-history", full_page=False)

    # The psql attacker of issue 12 rewrites who decided, in review's table only.
    admin = await asyncpg.connect(console_stack.cfg.admin_dsn)
    task = await admin.fetchrow(
        """SELECT task_id, decided_by FROM review.review_tasks
           WHERE claim_id = $1 AND decided_by IS NOT NULL ORDER BY department LIMIT 1""",
        uuid.UUID(claim_id),
    )
    assert task is not None

    async def set_decided_by(who: str) -> None:
        async with admin.transaction():
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.execute(
                "UPDATE review.review_tasks SET decided_by = $2 WHERE task_id = $1",
                task["task_id"],
                who,
            )

    try:
        await set_decided_by("someone-else")
        await page.reload()
        banner = page.locator("[data-testid=audit-broken]")
        await expect(banner).to_be_visible()
        await expect(banner).to_contain_text("review_tasks.decided_by")
        await expect(banner).to_contain_text("someone-else")
        await expect(banner).to_contain_text(task["decided_by"])
        broken = page.locator("[data-testid=history] tbody tr[data-status=state_differs]")
        await expect(broken).to_have_count(1)
        await expect(broken).to_contain_text("业务数据与记录不符")
        await screenshot(page, "audit-broken", full_page=False)
    finally:
        await set_decided_by(task["decided_by"])
        await admin.close()
    await page.reload()
    await expect(page.locator("[data-testid=audit-ok]")).to_be_visible()
    # A claim number that is not one: said so, no error page.
    await page.goto(f"{console_stack.url}/audit?claim=not-a-claim")
    await expect(page.locator("[role=alert]")).to_contain_text("UUID")


async def test_a_supervisor_tops_up_a_fund(console_stack: ConsoleStack, browser: Browser) -> None:
    fund = "startup-loan-interest-2026"

    async def budget() -> str:
        async with httpx.AsyncClient(headers=dict(AUDITOR)) as client:
            r = await client.get(f"{console_stack.cfg.url('payout')}/funds")
        value: str = next(f for f in r.json() if f["fund_id"] == fund)["budget"]
        return value

    before = await budget()
    page = await sign_in(browser, console_stack, "finance-chen")
    form = page.locator(f"[data-testid=top-up-{fund}]")
    await expect(form).to_contain_text("双人复核")
    # payout's 422 for a bad amount, next to the field; the budget unchanged.
    await form.locator('[name="amount"]').fill("12.345")
    await form.locator('[name="reason"]').fill("财金〔2026〕1号 追加")
    await form.locator("button.primary").click()
    await expect(
        page.locator(f'[data-testid=top-up-{fund}] .error-text[data-field="amount"]')
    ).to_be_visible()
    assert await budget() == before
    form = page.locator(f"[data-testid=top-up-{fund}]")
    await form.locator('[name="amount"]').fill("1000.00")
    await form.locator("button.primary").click()
    await expect(page.locator("[role=status]")).to_contain_text(fund)
    # A request (dual control): the budget moves when another person approves it.
    assert await budget() == before
    await approve_in_console(browser, console_stack, page, "finance-wang", fund)
    assert Decimal(await budget()) == Decimal(before) + Decimal("1000.00")
    # The clerk sees the funds but has no top-up form (funds.top_up is the supervisor's).
    clerk = await sign_in(browser, console_stack, "finance-wang")
    await expect(clerk.locator(f"[data-testid=top-up-{fund}]")).to_have_count(0)
