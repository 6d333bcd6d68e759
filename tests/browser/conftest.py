"""The console's browser tests: the embedded issuer and the console as two more processes
next to the e2e stack (PostgreSQL, tansu, intake, review, payout — the fixtures of
tests/e2e/conftest.py), and Debian's Chromium driven by Playwright.

Ports: the issuer on CLAIMFLOW_TEST_PORT_BASE + 6, the console on + 7 (the stack's own
parts use + 0 … + 5). Until shared/devstack/stack.py starts the issuer and the console
itself (docs/console.md), this fixture does what ``stack up`` will do.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from shared.devstack import stack
from tests.conftest import PORT_BASE

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


def _spawn(cfg: stack.StackConfig, name: str, args: list[str], env: dict[str, str]) -> int:
    logs = cfg.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=stack.REPO_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def _wait(url: str, what: str, cfg: stack.StackConfig, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise stack.StackError(f"{what} not up after {timeout}s: {last} (logs in {cfg.data_dir})")


@pytest.fixture(scope="session")
def console_stack(services: stack.StackConfig) -> Iterator[ConsoleStack]:
    cfg = services
    # The issuer on the stack's own issuer port and key: the services trust exactly it.
    issuer_port, console_port = cfg.ports.issuer, PORT_BASE + 7
    issuer_url = cfg.issuer_url
    console_url = f"http://127.0.0.1:{console_port}"
    pids: list[int] = []
    try:
        pids.append(
            _spawn(
                cfg,
                "issuer",
                [
                    "-m",
                    "shared.auth.issuer",
                    "--data-dir",
                    str(cfg.data_dir),
                    "--port",
                    str(issuer_port),
                ],
                {},
            )
        )
        _wait(f"{issuer_url}/.well-known/openid-configuration", "issuer", cfg)
        pids.append(
            _spawn(
                cfg,
                "console",
                ["-m", "services.console"],
                {
                    "CLAIMFLOW_CONSOLE_PORT": str(console_port),
                    "CLAIMFLOW_CONSOLE_INTAKE_URL": cfg.url("intake"),
                    "CLAIMFLOW_CONSOLE_REVIEW_URL": cfg.url("review"),
                    "CLAIMFLOW_CONSOLE_PAYOUT_URL": cfg.url("payout"),
                    "CLAIMFLOW_CONSOLE_ISSUER_URL": issuer_url,
                    "CLAIMFLOW_CONSOLE_SESSION_SECRET": secrets.token_urlsafe(32),
                    # Plain http on loopback: a Secure cookie would never come back.
                    "CLAIMFLOW_CONSOLE_SECURE_COOKIES": "false",
                    "CLAIMFLOW_CONSOLE_STATUS_RATE_PER_MINUTE": str(STATUS_RATE_PER_MINUTE),
                },
            )
        )
        _wait(f"{console_url}/status", "console", cfg)
        yield ConsoleStack(cfg=cfg, url=console_url, issuer_url=issuer_url)
    finally:
        for pid in reversed(pids):
            stack.stop_pid(pid)


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
