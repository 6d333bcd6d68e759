"""The demo as docker-compose runs it: against services given by URL, starting no stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from shared.devstack.stack import StackConfig

pytestmark = pytest.mark.e2e


def test_demo_runs_against_explicit_urls(services: StackConfig) -> None:
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
