"""/health on the real stack past the stall grace period, and a real stall ending the
process (issue 9, item 10)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from shared.config import ServiceSettings
from shared.contracts import EventEnvelope
from shared.contracts.topics import PAYOUT_EVENTS, REVIEW_EVENTS
from shared.devstack import stack
from shared.messaging.watch import STALL_EXIT_CODE
from tests.conftest import ServiceProcesses
from tests.e2e.helpers import eventually
from tests.kafka_helpers import produce_as

pytestmark = pytest.mark.e2e

SUBSCRIPTIONS = {
    "intake": (REVIEW_EVENTS, PAYOUT_EVENTS),
    "review": ("claimflow.intake.events.v1",),
    "payout": ("claimflow.intake.events.v1", REVIEW_EVENTS),
}


def _lag_series(metrics: str, service: str) -> set[str]:
    pattern = re.compile(
        r'^claimflow_consumer_lag\{service="' + service + r'",topic="([^"]+)"\} \d', re.M
    )
    return set(pattern.findall(metrics))


def process_age_s(pid: int) -> float:
    """Seconds since the process started (from /proc, not from what it reports)."""
    with open(f"/proc/{pid}/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def probe_event() -> bytes:
    """A valid envelope of a type no service handles: read, recorded, ignored (signed as
    review below, whose topic it goes to: unsigned it would be dead-lettered)."""
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type="review.test_stall_probe",
        version=1,
        claim_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
        producer="review",
        payload={},
    ).to_bytes()


async def test_health_stays_ok_past_the_stall_period_and_lag_is_exported(
    service_processes: ServiceProcesses, client: httpx.AsyncClient
) -> None:
    """The bug showed ~60 s after start: every service turned 503 ("no partitions
    assigned") because the watch never saw the consumer. Wait until each service has
    run well past the default stall period, then ask again."""
    stall_after = ServiceSettings().consumer_stall_after_s
    watch_interval = getattr(ServiceSettings(), "consumer_watch_interval_s", 5.0)
    past = stall_after * 2 + 2 * watch_interval + 5  # past the exit point too

    services = service_processes.cfg

    def youngest() -> float:
        return min(process_age_s(service_processes.pids[n]) for n in stack.SERVICES)

    if youngest() < past:
        await asyncio.sleep(past - youngest())
    assert youngest() >= past
    for _ in range(5):  # several samples, not one lucky answer
        for name in stack.SERVICES:
            r = await client.get(f"{services.url(name)}/health")
            assert r.status_code == 200, (name, r.text)
            assert r.json()["checks"]["consumer"] == "ok"
        await asyncio.sleep(1)
    for name, topics in SUBSCRIPTIONS.items():
        metrics = (await client.get(f"{services.url(name)}/metrics")).text
        assert _lag_series(metrics, name) == set(topics), name


async def test_a_stalled_consumer_is_reported_then_the_process_exits_saying_why(
    service_processes: ServiceProcesses, client: httpx.AsyncClient
) -> None:
    """A real wedge: intake's consumer is blocked on a lock while events keep arriving.
    /health turns 503 after the stall period; after twice that the process exits with
    code 75 after logging the reason; restarted, it catches up."""
    cfg = service_processes.cfg
    stall_after = 8.0
    wedged_cfg = dataclasses.replace(
        cfg,
        service_env={
            **cfg.service_env,
            "CLAIMFLOW_CONSUMER_STALL_AFTER_S": str(stall_after),
            "CLAIMFLOW_CONSUMER_WATCH_INTERVAL_S": "0.5",
        },
    )
    log_file = cfg.data_dir / "logs" / "intake.log"
    log_size_before = log_file.stat().st_size if log_file.exists() else 0
    service_processes.kill("intake")
    pid = stack.start_service(wedged_cfg, "intake")
    service_processes.pids["intake"] = pid
    url = cfg.url("intake")

    async def lag_exported() -> bool:
        try:
            metrics = (await client.get(f"{url}/metrics")).text
        except httpx.HTTPError:
            return False
        return bool(_lag_series(metrics, "intake"))

    await eventually(lag_exported, timeout=60, what="intake's consumer assigned and sampled")

    locker = await asyncpg.connect(cfg.dsn)
    tx = locker.transaction()
    await tx.start()
    # Every batch starts with the inbox insert: it waits for this lock.
    await locker.execute("LOCK TABLE intake.inbox IN ACCESS EXCLUSIVE MODE")
    stop_producing = asyncio.Event()

    async def keep_producing() -> None:
        while not stop_producing.is_set():
            with contextlib.suppress(Exception):
                await produce_as(
                    cfg, "review", REVIEW_EVENTS, probe_event(), key=b"stall", partition=0
                )
            await asyncio.sleep(0.5)

    producer = asyncio.create_task(keep_producing())
    started = time.monotonic()
    try:

        async def degraded() -> str | None:
            r = await client.get(f"{url}/health")
            return r.json()["checks"]["consumer"] if r.status_code == 503 else None

        reported = await eventually(degraded, timeout=stall_after * 2 + 20, what="503 stall")
        assert "stalled" in reported and "lag" in reported
        assert time.monotonic() - started >= stall_after - 1

        def gone() -> int | None:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it is gone all the same
                return -1 if not _pid_alive(pid) else None
            return status if done else None

        async def exited() -> int | None:
            return gone()

        status = await eventually(exited, timeout=stall_after * 2 + 20, what="intake exit")
        if status != -1:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == STALL_EXIT_CODE, status
        service_processes.pids.pop("intake")
        written = log_file.read_bytes()[log_size_before:].decode("utf-8", "replace")
        assert "consumer stalled, exiting with code 75" in written, written[-3000:]
        assert "intake: consumer stalled: lag" in written
    finally:
        stop_producing.set()
        await producer
        await tx.rollback()
        await locker.close()
        if "intake" in service_processes.pids:
            service_processes.kill("intake")
        service_processes.restart("intake")
    # Restarted with the normal settings, it reads what waited and is healthy.
    r = await client.get(f"{url}/health")
    assert r.status_code == 200, r.text

    async def caught_up() -> bool:
        body = (await client.get(f"{url}/health")).json()
        return bool(body["checks"]["consumer"] == "ok" and body.get("consumer_lag") == 0)

    await eventually(caught_up, timeout=60, what="intake caught up after the restart")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
