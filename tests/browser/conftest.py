"""The console's browser tests: the embedded issuer and the console as two more processes
next to the e2e stack (PostgreSQL, tansu, intake, review, payout — the fixtures of
tests/e2e/conftest.py), and Debian's Chromium driven by Playwright.

Ports: the stack's own, the issuer on CLAIMFLOW_TEST_PORT_BASE + 48 and the console on
+ 49. Both are started by the same functions of shared/devstack/stack.py as under
`claimflow stack up`'s supervisor.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from shared.devstack import stack

CHROMIUM = Path(os.environ.get("CLAIMFLOW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENS = Path(__file__).resolve().parents[2] / "docs" / "screens"
STATUS_RATE_PER_MINUTE = 6
# Two shared cores and parallel test runs: give a page more than Playwright's 5 s.
expect.set_options(timeout=20_000)


@dataclass(frozen=True)
class ConsoleStack:
    cfg: stack.StackConfig
    url: str
    issuer_url: str


@pytest.fixture(scope="session")
def console_stack(services: stack.StackConfig) -> Iterator[ConsoleStack]:
    """The issuer and the console started by the stack's own code (what the supervisor of
    `claimflow stack up` runs), next to the e2e fixtures' unsupervised services, on the
    stack's own issuer and console ports (BASE+48, BASE+49): the services trust exactly
    that issuer URL."""
    cfg = dataclasses.replace(
        services,
        service_env={
            **services.service_env,
            "CLAIMFLOW_CONSOLE_STATUS_RATE_PER_MINUTE": str(STATUS_RATE_PER_MINUTE),
        },
        console=True,
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(stack.issuer_popen(cfg))
        stack.wait_issuer(cfg)
        procs.append(stack.console_popen(cfg))
        stack.wait_console(cfg)
        yield ConsoleStack(cfg=cfg, url=cfg.console_url, issuer_url=cfg.issuer_url)
    finally:
        for proc in reversed(procs):
            stack.stop_pid(proc.pid)
            proc.poll()


def _chromium_installed() -> bool:
    return CHROMIUM.exists()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not _chromium_installed():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium fonts-noto-cjk")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium fonts-noto-cjk)")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


async def sign_in(browser: Browser, console: ConsoleStack, user: str) -> Page:
    """A fresh browser context (its own cookies), signed in as a demo user through the
    issuer's login page: console → issuer /authorize → button → callback → console."""
    context = await browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(f"{console.url}/")
    await page.click(f'button[value="{user}"]')
    await page.wait_for_url(f"{console.url}/**")
    return page


async def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page, type="png")
    return path
