"""The demo as docker-compose runs it: against services given by URL, starting no stack."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from shared.auth.issuer import load_or_create_secret
from shared.devstack.stack import StackConfig

pytestmark = pytest.mark.e2e


@pytest.fixture
def issuer_process(services: StackConfig) -> Iterator[str]:
    """The embedded issuer on the stack's key, as Keycloak would be in docker-compose."""
    log = open(services.data_dir / "logs" / "issuer.log", "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared.auth.issuer",
            "--data-dir",
            str(services.data_dir),
            "--port",
            str(services.ports.issuer),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                url = f"{services.issuer_url}/.well-known/openid-configuration"
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("the issuer did not come up")
        yield services.issuer_url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def test_demo_runs_against_explicit_urls(services: StackConfig, issuer_process: str) -> None:
    """Tokens by the password grant of the issuer named with --issuer-url (Keycloak's
    claimflow-demo client in docker-compose; here the embedded issuer's dev client)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.devstack.cli",
            "demo",
            "--once",
            "--claims",
            "3",
            "--seed",
            "7",
            "--timeout",
            "60",
            "--intake-url",
            services.url("intake"),
            "--review-url",
            services.url("review"),
            "--payout-url",
            services.url("payout"),
            "--database-url",
            services.dsn,
            "--issuer-url",
            issuer_process,
            "--issuer-client-id",
            "claimflow-dev",
            "--issuer-client-secret",
            load_or_create_secret(services.data_dir),
            # A data folder holding no stack: the demo must not start one there.
            "--data-dir",
            str(services.data_dir / "no-stack-here"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["submitted"] == 3 and figures["in_flight"] == 0
    assert figures["double_paid"] == 0
    assert not (services.data_dir / "no-stack-here" / "stack.json").exists()


def test_demo_refuses_half_the_urls(services: StackConfig) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.devstack.cli",
            "demo",
            "--once",
            "--intake-url",
            services.url("intake"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "go together" in done.stderr
