"""Issue 15, item 5: two instances of every service on one database and one consumer
group each — every claim still processed once and paid once, and both instances of each
service take a share of the events.

(What it does not show: more speed. On two shared cores a second instance cannot add
any; the benchmark measures the cost. Two payout instances do run into each other on the
fund rows — deadlocks PostgreSQL breaks and the batch consumer re-reads; docs/performance.md.)
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from shared.devstack import stack
from shared.devstack.check import run_check
from shared.devstack.cli import app
from tests.conftest import PORT_BASE

pytestmark = pytest.mark.e2e

SECOND = {name: i for i, name in enumerate(stack.SERVICES)}
"""Each service's second instance listens at the stack's base + 8 + this (memory broker
storage: the S3 server's ports of the block are free)."""


def second_port(cfg: stack.StackConfig, name: str) -> int:
    return cfg.ports.postgres + 8 + SECOND[name]


@pytest.fixture(scope="module")
def doubled() -> Iterator[stack.StackConfig]:
    data_dir = Path(tempfile.mkdtemp(prefix="claimflow-two-", dir="/tmp"))
    data_dir.chmod(0o755)
    cfg = stack.StackConfig(
        data_dir=data_dir,
        ports=stack.StackPorts.from_base(PORT_BASE + 36),
        broker_storage="memory",
    )
    seconds: list[subprocess.Popen[bytes]] = []
    try:
        stack.up(cfg, with_prometheus=False)
        for name in stack.SERVICES:
            seconds.append(stack.service_popen(cfg, name, http_port=second_port(cfg, name)))
        for name in stack.SERVICES:
            stack.wait_http_ok(f"http://127.0.0.1:{second_port(cfg, name)}/health", name, cfg)
        yield cfg
    finally:
        for proc in seconds:
            proc.terminate()
        for proc in seconds:
            try:
                proc.wait(stack.SERVICE_STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        stack.down(cfg)
        shutil.rmtree(data_dir, ignore_errors=True)


def consumed(port: int, service: str) -> float:
    """Events this instance's consumer handled (its own /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    pattern = re.compile(
        r'^claimflow_consumed_events_total\{[^}]*service="' + service + r'"[^}]*\} (\S+)$', re.M
    )
    return sum(float(v) for v in pattern.findall(text))


def assigned(port: int, service: str) -> bool:
    """The instance's consumer watch has sampled an assignment (the lag gauge exists)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return f'claimflow_consumer_lag{{service="{service}"' in text


def test_two_instances_of_every_service_process_each_claim_once(
    doubled: stack.StackConfig,
) -> None:
    cfg = doubled
    ports = {n: (cfg.ports.service(n), second_port(cfg, n)) for n in stack.SERVICES}
    # Both members of each group hold partitions before the claims come (a join takes
    # about five seconds on tansu; the watch samples every five).
    deadline = time.monotonic() + 120
    while not all(assigned(p, n) for n, pair in ports.items() for p in pair):
        assert time.monotonic() < deadline, "not every instance got partitions"
        time.sleep(1)

    result = CliRunner().invoke(
        app,
        [
            *("demo", "--once", "--claims", "16", "--seed", "15"),
            *("--data-dir", str(cfg.data_dir), "--port-base", str(cfg.ports.postgres)),
            *("--broker-storage", "memory"),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.stdout[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["submitted"] == 16 and summary["in_flight"] == 0, summary
    assert summary["double_paid"] == 0 and summary["paid"] > 0, summary

    report = asyncio.run(run_check(cfg.dsn, grace_s=30))
    assert report.violations == 0, report.as_json()

    shares = {n: [consumed(p, n) for p in pair] for n, pair in ports.items()}
    for name, (first, second) in shares.items():
        assert first > 0 and second > 0, f"{name}: one instance did all the work: {shares}"
