"""The staff console in a real browser (Debian's Chromium) against the real stack: the
issuer's sign-in, the console process, intake, review and payout as separate processes.

Each main screen is saved to docs/screens/ (small PNGs, shown in docs/console.md)."""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from shared.devstack.demo_claims import make_claim, make_subsidy_claim, make_uscc
from tests.browser.conftest import STATUS_RATE_PER_MINUTE, ConsoleStack, screenshot, sign_in
from tests.tokens import AUDITOR, window

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

_rng = random.Random()
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclass
class Effort:
    """What the clerk did to register one claim."""

    fields_typed: int = 0
    choices: int = 0
    clicks: int = 0
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0


def vat_claim(**overrides: Any) -> dict[str, Any]:
    body = make_claim(_rng, "2026-09")
    body.update(
        {
            "tax_credit_rating": "A",
            "end_credit_balance": "800000.00",
            "base_credit_balance": "0.00",
            "input_composition_ratio": "0.9000",
            "requested_amount": "720000.00",
            **overrides,
        }
    )
    return body


async def register(
    page: Page, console: ConsoleStack, body: dict[str, Any], promised: tuple[str, ...] = ()
) -> tuple[str, Effort]:
    """The clerk's registration of a VAT refund, from the empty form to the receipt."""
    await page.goto(f"{console.url}/window/claims/new")
    effort = Effort()

    async def fill(name: str, value: str) -> None:
        await page.fill(f'[name="{name}"]', value)
        effort.fields_typed += 1

    await fill("uscc", body["uscc"])
    await expect(page.locator("#uscc-feedback")).to_contain_text("✓")
    await fill("enterprise_name", body["enterprise_name"])
    await fill("requested_amount", body["requested_amount"])
    await fill("tax_period", body["tax_period"])
    await fill("end_credit_balance", body["end_credit_balance"])
    await fill("base_credit_balance", body["base_credit_balance"])
    await fill("input_composition_ratio", body["input_composition_ratio"])
    # Every checklist document is preset to "handed in": the clerk marks the exceptions.
    for doc in promised:
        await page.check(f'input[name="doc.{doc}"][value="promised"]')
        effort.clicks += 1
    bank = body["bank_account"]
    await fill("bank_account.bank_name", bank["bank_name"])
    await fill("bank_account.account_name", bank["account_name"])
    await fill("bank_account.account_number", bank["account_number"])
    await page.click("button.primary[type=submit]")
    effort.clicks += 1
    await page.wait_for_url(re.compile(rf"/window/claims/{UUID}/receipt$"))
    effort.seconds = time.monotonic() - effort.started
    claim_id = (await page.locator("[data-testid=claim-number]").inner_text()).strip()
    # The bank account number never appears in a URL.
    assert bank["account_number"] not in page.url
    return claim_id, effort


async def tasks_of(console: ConsoleStack, claim_id: str, timeout: float = 30) -> list[Any]:
    """The claim's review tasks as the review service has them (waits for stage 2)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(headers=dict(AUDITOR)) as client:
        while time.monotonic() < deadline:
            r = await client.get(f"{console.cfg.url('review')}/claims/{claim_id}/review")
            if r.status_code == 200 and r.json()["tasks"]:
                tasks: list[Any] = r.json()["tasks"]
                return tasks
            await asyncio.sleep(0.3)
    raise AssertionError(f"no review tasks for {claim_id}")


async def claim_status(console: ConsoleStack, claim_id: str) -> str:
    async with httpx.AsyncClient(headers=dict(AUDITOR)) as client:
        r = await client.get(f"{console.cfg.url('intake')}/claims/{claim_id}")
        status: str = r.json()["status"]
        return status


async def wait_status(console: ConsoleStack, claim_id: str, *wanted: str) -> str:
    deadline = time.monotonic() + 40
    status = ""
    while time.monotonic() < deadline:
        status = await claim_status(console, claim_id)
        if status in wanted:
            return status
        await asyncio.sleep(0.3)
    raise AssertionError(f"claim {claim_id} is {status}, not {wanted}")


async def open_task(page: Page, console: ConsoleStack, claim_id: str) -> None:
    """From the worklist to the claim's task (it appears once review has created it)."""
    row = page.locator(f'tr[data-claim="{claim_id}"]')
    for _ in range(60):
        await page.goto(f"{console.url}/review")
        if await row.count():
            break
        await asyncio.sleep(0.5)
    await row.get_by_role("link").click()
    await page.wait_for_url(re.compile(r"/review/claims/.+/tasks/.+"))


async def test_clerk_registers_with_a_promised_document_and_prints_the_receipt(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    page = await sign_in(browser, console_stack, "window-01")
    header = page.locator("header .who")
    await expect(header).to_contain_text("窗口 01")
    await expect(header).to_contain_text("窗口受理员")
    # The dashboards are finance's (test_console_finance.py), not the window's.
    await expect(page.locator("header [data-testid=grafana]")).to_have_count(0)
    await screenshot(page, "window-new-claim")

    body = vat_claim()
    claim_id, effort = await register(page, console_stack, body, promised=("input_invoice_list",))
    receipt = page.locator("[data-testid=receipt]")
    await expect(receipt).to_contain_text("受理回执")
    await expect(page.locator("[data-testid=promised]")).to_contain_text("进项发票清单")
    await expect(page.locator("[data-testid=due]")).to_have_text(re.compile(r"\d{4}-\d{2}-\d{2}"))
    await expect(receipt).to_contain_text(f"{console_stack.url}/status")
    await page.emulate_media(media="print")
    await screenshot(page, "window-receipt-print")
    await page.emulate_media(media="screen")
    assert await claim_status(console_stack, claim_id) in (
        "accepted_documents_pending",
        "in_review",
    )
    print(
        f"\nclerk registration: {effort.fields_typed} fields typed, {effort.clicks} clicks, "
        f"{effort.seconds:.2f} s (browser automation, form load to receipt)"
    )


async def test_field_errors_from_the_api_are_shown_next_to_the_fields(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    page = await sign_in(browser, console_stack, "window-02")
    await page.goto(f"{console_stack.url}/window/claims/new")
    await page.fill('[name="uscc"]', "91510300MA62X5W0X1")
    await expect(page.locator("#uscc-feedback")).to_contain_text("GB 32100")
    body = vat_claim()
    await page.fill('[name="enterprise_name"]', body["enterprise_name"])
    await page.fill('[name="requested_amount"]', "12.345")
    await page.fill('[name="tax_period"]', "2026-09")
    await page.fill('[name="end_credit_balance"]', "800000.00")
    await page.fill('[name="base_credit_balance"]', "0.00")
    await page.fill('[name="input_composition_ratio"]', "0.9")
    await page.fill('[name="bank_account.bank_name"]', "中国工商银行自贡分行")
    await page.fill('[name="bank_account.account_name"]', body["enterprise_name"])
    await page.fill('[name="bank_account.account_number"]', "12ab")
    await page.click("button.primary[type=submit]")
    # intake's 422 names the fields; each message sits next to its field.
    await expect(page.locator('.error-text[data-field="uscc"]')).to_be_visible()
    await expect(page.locator('.error-text[data-field="requested_amount"]')).to_be_visible()
    await expect(
        page.locator('.error-text[data-field="bank_account.account_number"]')
    ).to_be_visible()
    await screenshot(page, "window-field-errors")


async def test_reviewers_approve_in_parallel_and_an_approver_signs_off_a_large_claim(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    clerk = await sign_in(browser, console_stack, "window-01")
    large = vat_claim(
        end_credit_balance="3000000.00",
        requested_amount="2500000.00",
    )
    claim_id, _ = await register(clerk, console_stack, large)
    departments = {t["department"] for t in await tasks_of(console_stack, claim_id)}
    assert departments == {"tax", "treasury"}

    tax, treasury = await asyncio.gather(
        sign_in(browser, console_stack, "tax-reviewer-1"),
        sign_in(browser, console_stack, "treasury-reviewer-1"),
    )

    async def approve(page: Page, name: str) -> None:
        await open_task(page, console_stack, claim_id)
        await expect(page.locator(".others")).to_contain_text("国库")
        if name == "tax":
            await screenshot(page, "review-task")
        await page.fill('[name="comment"]', f"{name}: 核实无误")
        await page.click('button[name="decision"][value="approve"]')
        await page.wait_for_url(re.compile(r"/review\?done=1$"))

    await tax.goto(f"{console_stack.url}/review")
    await expect(tax.locator("[data-testid=count]")).not_to_have_text("0")
    await screenshot(tax, "review-worklist")
    await asyncio.gather(approve(tax, "tax"), approve(treasury, "treasury"))

    approver = await sign_in(browser, console_stack, "leader-zhang")
    card = approver.locator(f'article.signoff[data-claim="{claim_id}"]')
    for _ in range(60):
        await approver.goto(f"{console_stack.url}/sign-off")
        if await card.count():
            break
        await asyncio.sleep(0.5)
    await expect(card).to_contain_text("2,500,000.00")
    await expect(card).to_contain_text("tax: 核实无误")
    await expect(card).to_contain_text("treasury: 核实无误")
    await screenshot(approver, "sign-off")
    await card.locator('[name="comment"]').fill("同意")
    await card.locator('button[value="approve"]').click()
    await approver.wait_for_url(re.compile(r"/sign-off\?done=1$"))
    status = await wait_status(
        console_stack,
        claim_id,
        "approved",
        "payout_queued",
        "payout_requested",
        "payout_sent",
        "paid",
    )
    assert status != "rejected"


async def test_a_reviewer_returns_for_documents_and_the_clerk_records_them(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    clerk = await sign_in(browser, console_stack, "window-03")
    claim_id, _ = await register(clerk, console_stack, vat_claim())
    await tasks_of(console_stack, claim_id)
    reviewer = await sign_in(browser, console_stack, "tax-reviewer-2")
    await open_task(reviewer, console_stack, claim_id)
    await reviewer.check('input[name="documents"][value="input_invoice_list"]')
    await reviewer.fill('[name="comment"]', "请补交进项发票清单")
    await reviewer.click('button[name="decision"][value="return"]')
    await reviewer.wait_for_url(re.compile(r"/review\?done=1$"))
    await wait_status(console_stack, claim_id, "returned_for_documents")

    await clerk.goto(f"{console_stack.url}/window/claims/{claim_id}")
    await expect(clerk.locator("[data-testid=status]")).to_have_text("退回补正")
    button = clerk.locator("[data-testid=received-input_invoice_list]")
    await expect(button).to_be_visible()
    await screenshot(clerk, "window-tracker")
    await button.click()  # htmx: the documents section is swapped in place
    await expect(button).to_have_count(0)
    await expect(
        clerk.locator('#documents tr[data-document="input_invoice_list"]')
    ).to_contain_text("已提交")
    await wait_status(console_stack, claim_id, "in_review")

    # The clerk finds the claim again by the enterprise's credit code.
    uscc = (await clerk.locator(".facts dd").nth(1).inner_text()).strip()
    await clerk.goto(f"{console_stack.url}/window/search?q={uscc}")
    await expect(clerk.locator("#results")).to_contain_text("联审中")
    await screenshot(clerk, "window-search")


async def test_the_enterprise_checks_its_status_on_the_public_page(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    clerk = await sign_in(browser, console_stack, "window-01")
    body = vat_claim()
    claim_id, _ = await register(clerk, console_stack, body, promised=("bank_account_proof",))

    context = await browser.new_context(locale="zh-CN", viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    await page.goto(f"{console_stack.url}/status")
    await page.fill('[name="claim_number"]', claim_id)
    await page.fill('[name="uscc"]', body["uscc"])
    await page.click("button.primary")
    result = page.locator("[data-testid=public-result]")
    await expect(result).to_contain_text("开户许可证")
    await expect(page.locator("[data-testid=public-paid]")).to_have_text("尚未到账")
    text = await page.content()
    # Nothing of the money or the bank: not the amount, not the account.
    assert "720,000" not in text and "720000" not in text
    assert body["bank_account"]["account_number"] not in text
    assert body["bank_account"]["bank_name"] not in text
    await screenshot(page, "public-status")

    # Another enterprise's code gets the same answer as a claim number that does not exist.
    await page.fill('[name="uscc"]', make_uscc(_rng))
    await page.click("button.primary")
    await expect(page.locator("[role=alert]")).to_contain_text("没有找到")

    # Rate-limited per IP: the lookups above count.
    for _ in range(STATUS_RATE_PER_MINUTE):
        await page.click("button.primary")
    await expect(page.locator("[data-testid=limited]")).to_be_visible()


async def test_a_reviewer_cannot_open_another_departments_task(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    clerk = await sign_in(browser, console_stack, "window-02")
    claim_id, _ = await register(clerk, console_stack, vat_claim())
    tasks = await tasks_of(console_stack, claim_id)
    treasury_task = next(t for t in tasks if t["department"] == "treasury")
    # A finance reviewer, typing the treasury task's address.
    finance = await sign_in(browser, console_stack, "finance-reviewer-1")
    response = await finance.goto(
        f"{console_stack.url}/review/claims/{claim_id}/tasks/{treasury_task['task_id']}"
    )
    assert response is not None and response.status == 403
    await expect(finance.locator("[data-testid=error]")).to_contain_text("无权访问")
    await screenshot(finance, "forbidden")
    # And the approver's list is not a reviewer's either.
    response = await finance.goto(f"{console_stack.url}/sign-off")
    assert response is not None and response.status == 403


async def test_the_english_switch(console_stack: ConsoleStack, browser: Browser) -> None:
    page = await sign_in(browser, console_stack, "tax-reviewer-1")
    await page.click("header a.lang")
    await expect(page.locator("header .who")).to_contain_text("department reviewer")
    await expect(page.locator("h1")).to_contain_text("Worklist")
    # The header's badge is filled by htmx from /review/count.
    await expect(page.locator("header nav .badge")).to_have_text(re.compile(r"^\d+$"))
    await screenshot(page, "review-worklist-en")


async def test_bulk_approve_of_selected_low_risk_tasks(
    console_stack: ConsoleStack, browser: Browser
) -> None:
    # Set-up through intake's API (the clerk's screen is covered above): two subsidy
    # claims, whose cross-checks all pass (no tax rating is looked at for subsidies).
    claim_ids = []
    async with httpx.AsyncClient(headers=dict(AUDITOR)) as client:
        for _ in range(2):
            body = make_subsidy_claim(_rng, "direct-financing-2026")
            body["requested_amount"] = "50000.00"
            r = await client.post(
                f"{console_stack.cfg.url('intake')}/claims",
                json=body,
                headers=dict(window("window-02")),
            )
            assert r.status_code == 201, r.text
            claim_ids.append(r.json()["claim_id"])
    for claim_id in claim_ids:
        await tasks_of(console_stack, claim_id)

    page = await sign_in(browser, console_stack, "finance-reviewer-2")
    boxes = [page.locator(f'tr[data-claim="{c}"] input[name="task"]') for c in claim_ids]
    for _ in range(60):
        await page.goto(f"{console_stack.url}/review")
        if all([await b.count() for b in boxes]):
            break
        await asyncio.sleep(0.5)
    for box in boxes:
        await box.check()
    await page.click("text=批量通过所选低风险任务")
    await page.wait_for_url(re.compile(r"/review\?done=2$"))
    for claim_id in claim_ids:
        await expect(page.locator(f'tr[data-claim="{claim_id}"]')).to_have_count(0)
        tasks = await tasks_of(console_stack, claim_id)
        finance = next(t for t in tasks if t["department"] == "finance")
        assert finance["status"] == "approved"
        assert finance["decided_by"] == "finance-reviewer-2"
