"""`claimflow stack up` supervises its processes (issue 14, item 2): a service killed with
SIGKILL comes back by itself, healthy and consuming; one stopped with SIGTERM drains,
leaves its consumer group and comes back too. Durations are printed as observations (the
machine is shared); the bounds are generous on purpose."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from shared.contracts.topics import REVIEW_EVENTS
from shared.devstack import stack
from tests.conftest import PORT_BASE

pytestmark = pytest.mark.e2e

BOUND_S = 90.0


@pytest.fixture(scope="module")
def supervised() -> Iterator[stack.StackConfig]:
    """A whole stack as `claimflow stack up` starts it, on its own ports and data folder."""
    data_dir = Path(tempfile.mkdtemp(prefix="claimflow-supervised-", dir="/tmp"))
    data_dir.chmod(0o755)
    cfg = stack.StackConfig(
        data_dir=data_dir,
        ports=stack.StackPorts.from_base(PORT_BASE + 14),
        # Supervision is what is tested here; the memory broker keeps the test light.
        broker_storage="memory",
    )
    try:
        stack.up(cfg, with_prometheus=False)
        yield cfg
    finally:
        stack.down(cfg)
        shutil.rmtree(data_dir, ignore_errors=True)


def program(cfg: stack.StackConfig, name: str) -> dict[str, Any]:
    state = stack.read_supervisor_state(cfg)
    assert state is not None
    entry: dict[str, Any] = state["programs"][name]
    return entry


def wait_for(what: str, condition: Any, timeout: float = BOUND_S) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout:.0f}s")


def read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def healthy(cfg: stack.StackConfig, name: str) -> bool:
    try:
        return httpx.get(f"{cfg.url(name)}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


async def probe_consumed(cfg: stack.StackConfig, group: str) -> float:
    """Publish a probe the group consumes; seconds until its committed offset passes it."""
    producer = AIOKafkaProducer(bootstrap_servers=cfg.bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(REVIEW_EVENTS, b"probe", key=b"supervision-probe")
    finally:
        await producer.stop()
    tp = TopicPartition(REVIEW_EVENTS, meta.partition)
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap)
    await admin.start()
    started = time.monotonic()
    try:
        while time.monotonic() - started < BOUND_S:
            offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
            if tp in offsets and offsets[tp].offset > meta.offset:
                return time.monotonic() - started
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    raise AssertionError(f"{group} did not consume the probe within {BOUND_S:.0f}s")


async def group_members(cfg: stack.StackConfig, group: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    (entry,) = described.groups
    return {str(member[0]) for member in entry[5]}


async def test_a_killed_service_comes_back_by_itself(supervised: stack.StackConfig) -> None:
    cfg = supervised
    await probe_consumed(cfg, "payout")  # a member holding partitions
    before = program(cfg, "payout")
    note = json.loads((stack.member_dir(cfg) / f"payout.{before['pid']}.json").read_text())
    assert note["member_id"] in await group_members(cfg, "payout")
    os.kill(before["pid"], signal.SIGKILL)
    killed_at = time.monotonic()

    wait_for(
        "a new payout process",
        lambda: (
            program(cfg, "payout")["pid"] != before["pid"] and program(cfg, "payout")["running"]
        ),
    )
    wait_for("payout /health 200", lambda: healthy(cfg, "payout"))
    back_s = time.monotonic() - killed_at
    consumed_s = await probe_consumed(cfg, "payout")
    after = program(cfg, "payout")
    assert after["restarts"] == before["restarts"] + 1
    assert after["last_exit"].startswith("killed by SIGKILL")
    log = (cfg.data_dir / "logs" / "supervisor.log").read_text()
    assert "payout killed by SIGKILL" in log
    # The supervisor took the dead member out of the group, and the coordinator accepted
    # it (the line is written only then): the member was still in the group, its session
    # not yet over, so the replacement's join did not wait for that session.
    assert f"consumer group member {note['member_id']} removed" in log
    assert note["member_id"] not in await group_members(cfg, "payout")
    print(f"\nSIGKILL → healthy {back_s:.1f}s, → probe consumed +{consumed_s:.1f}s")


async def test_sigterm_drains_leaves_the_group_and_comes_back(
    supervised: stack.StackConfig,
) -> None:
    cfg = supervised
    # A member of generation > 0 (after the test above, or after any rebalance): aiokafka
    # sends no LeaveGroup at generation 0, which is tansu's first (docs/resilience.md).
    await probe_consumed(cfg, "payout")
    before = program(cfg, "payout")
    log_file = cfg.data_dir / "logs" / "payout.log"
    log_offset = log_file.stat().st_size
    os.kill(before["pid"], signal.SIGTERM)
    stopped_s = wait_for(
        "payout to exit after SIGTERM",
        lambda: (
            program(cfg, "payout")["pid"] != before["pid"] or not program(cfg, "payout")["running"]
        ),
        timeout=stack.SERVICE_STOP_S,
    )
    shutdown_log = read_from(log_file, log_offset)
    assert "LeaveGroup request succeeded" in shutdown_log, shutdown_log[-3000:]
    wait_for("payout /health 200 again", lambda: healthy(cfg, "payout"))
    consumed_s = await probe_consumed(cfg, "payout")
    assert program(cfg, "payout")["restarts"] == before["restarts"] + 1
    print(f"\nSIGTERM → exited {stopped_s:.1f}s, back and consuming +{consumed_s:.1f}s")


def test_stack_status_shows_the_supervisor(supervised: stack.StackConfig) -> None:
    state = stack.read_supervisor_state(supervised)
    assert state is not None and state["ready"]
    assert set(state["programs"]) == {"broker", *stack.SERVICES}
    info = stack.read_info(supervised)
    assert info is not None and info["pids"]["supervisor"] == state["pid"]
    json.dumps(state)
