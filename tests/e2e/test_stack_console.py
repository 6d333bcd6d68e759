"""`claimflow stack up` runs the embedded OIDC issuer and the staff console under its
supervisor, prints the console's URL and the demo users, and `stack status` shows them
(issue 13, stack integration)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.auth.demo_users import load_demo_users
from shared.devstack import stack
from tests.conftest import PORT_BASE

pytestmark = pytest.mark.e2e

BASE = PORT_BASE + 34
"""Ports BASE..BASE+13 (PORT_BASE+34 … +47), the issuer and console at BASE+48/49: clear
of the other e2e stacks."""
PORTS = stack.StackPorts.from_base(BASE)


def claimflow(*args: str, data_dir: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.devstack.cli", *args, "--data-dir", str(data_dir)],
        cwd=stack.REPO_ROOT,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def stack_up() -> Iterator[tuple[Path, subprocess.CompletedProcess[str]]]:
    data_dir = Path(tempfile.mkdtemp(prefix="claimflow-console-stack-", dir="/tmp"))
    data_dir.chmod(0o755)
    try:
        started = claimflow(
            "stack", "up", "--port-base", str(BASE), "--broker-storage", "memory", data_dir=data_dir
        )
        assert started.returncode == 0, started.stderr[-3000:]
        yield data_dir, started
    finally:
        claimflow("stack", "down", data_dir=data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def status(data_dir: Path) -> dict[str, Any]:
    # The CLI's imports alone took over 30 s on the loaded shared machine.
    shown = claimflow("stack", "status", data_dir=data_dir, timeout=180)
    assert shown.returncode == 0, shown.stderr
    info: dict[str, Any] = json.loads(shown.stdout)
    return info


def test_stack_up_prints_the_console_and_the_demo_users(
    stack_up: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    _, started = stack_up
    console_url = f"http://127.0.0.1:{PORTS.console}"
    assert f"Console: {console_url}" in started.stderr
    for user in load_demo_users().users:
        assert user.id in started.stderr
    assert "finance_clerk" in started.stderr and "auditor" in started.stderr


def test_stack_status_shows_issuer_and_console_supervised(
    stack_up: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    data_dir, _ = stack_up
    info = status(data_dir)
    assert info["urls"]["console"] == f"http://127.0.0.1:{PORTS.console}"
    assert info["urls"]["issuer"] == f"http://127.0.0.1:{PORTS.issuer}"
    users = {u["id"]: u for u in info["demo_users"]}
    assert users["finance-wang"]["roles"] == ["finance_clerk"]
    assert users["auditor-zhou"]["roles"] == ["auditor"]
    programs = info["supervisor"]["programs"]
    assert programs["issuer"]["running"] and programs["console"]["running"]
    # Both answer: the issuer's discovery names itself; the console's public page is up
    # and its sign-in goes to that issuer.
    discovery = httpx.get(f"{info['urls']['issuer']}/.well-known/openid-configuration").json()
    assert discovery["issuer"] == info["urls"]["issuer"]
    assert httpx.get(f"{info['urls']['console']}/status").status_code == 200
    login = httpx.get(f"{info['urls']['console']}/login")
    assert login.status_code == 303
    assert login.headers["location"].startswith(f"{info['urls']['issuer']}/authorize?")
    # The session secret is kept in the data folder, readable by its owner only.
    secret = data_dir / stack.CONSOLE_SECRET_FILE
    assert secret.stat().st_mode & 0o777 == 0o600


def test_a_killed_console_comes_back(
    stack_up: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    data_dir, _ = stack_up
    cfg = stack.StackConfig(data_dir=data_dir)
    state = stack.read_supervisor_state(cfg)
    assert state is not None
    before = state["programs"]["console"]
    os.kill(before["pid"], 9)
    deadline = 240.0
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        state = stack.read_supervisor_state(cfg) or {}
        now = state.get("programs", {}).get("console", {})
        if now.get("running") and now.get("pid") != before["pid"]:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the console was not restarted")
    stack.wait_http_ok(f"http://127.0.0.1:{PORTS.console}/status", "console", cfg)
