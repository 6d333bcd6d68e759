"""The embedded broker on S3 storage survives its own crash and a restart of its S3
server: every acknowledged event and every committed offset is still there (issue 14,
1(b)). With memory storage (the old default) the same restart loses all of them."""

from __future__ import annotations

import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from shared.devstack import stack
from tests.conftest import PORT_BASE

pytestmark = pytest.mark.integration

EVENTS = 300


@pytest.fixture
def s3_broker() -> Iterator[tuple[stack.StackConfig, dict[str, int]]]:
    """Its own S3 server and tansu on s3 storage, on ports clear of the session's stack."""
    data_dir = Path(tempfile.mkdtemp(prefix="claimflow-durable-", dir="/tmp"))
    cfg = stack.StackConfig(
        data_dir=data_dir, ports=stack.StackPorts.from_base(PORT_BASE + 28), broker_storage="s3"
    )
    pids: dict[str, int] = {}
    try:
        pids["s3"] = stack.start_object_store(cfg)
        pids["broker"] = stack.start_broker(cfg)
        yield cfg, pids
    finally:
        if "broker" in pids:
            stack.stop_pid(pids["broker"])
        if "s3" in pids:
            stack.stop_pid(pids["s3"], timeout=stack.OBJECT_STORE_STOP_S)
        shutil.rmtree(data_dir, ignore_errors=True)


async def publish(bootstrap: str, topic: str) -> list[bytes]:
    await stack.create_topics_named(bootstrap, [topic], 3)
    values = [f"event-{i}-{uuid.uuid4()}".encode() for i in range(EVENTS)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=v[:9]) for v in values]
        for future in futures:
            await future  # acknowledged: from here on the broker must not lose it
    finally:
        await producer.stop()
    return values


async def read_all(bootstrap: str, topic: str, group: str | None = None) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: list[bytes] = []
    idle = 0
    try:
        # Until everything is read, or nothing more came for 3 s (at most 20 s).
        for _ in range(40):
            batches = await consumer.getmany(timeout_ms=500)
            got = [r.value for rs in batches.values() for r in rs]
            seen.extend(v for v in got if v is not None)
            idle = 0 if got else idle + 1
            if (not got and len(seen) >= EVENTS) or idle >= 6:
                break
    finally:
        await consumer.stop()
    return seen


async def commit_offsets(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    """Commit offset 5 on every partition; returns what was committed."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        offsets = {TopicPartition(topic, p): OffsetAndMetadata(5, "") for p in partitions}
        await consumer.commit(offsets)
    finally:
        await consumer.stop()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


async def committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        return {p: await consumer.committed(TopicPartition(topic, p)) or -1 for p in partitions}
    finally:
        await consumer.stop()


async def test_s3_broker_keeps_events_and_offsets_over_crash_and_store_restart(
    s3_broker: tuple[stack.StackConfig, dict[str, int]],
) -> None:
    cfg, pids = s3_broker
    topic = f"durable.{uuid.uuid4().hex[:8]}"
    published = await publish(cfg.bootstrap, topic)
    offsets = await commit_offsets(cfg.bootstrap, topic, "durable-group")
    assert len(offsets) == 3

    # The broker crashes (no shutdown at all) and is started again.
    stack.stop_pid(pids.pop("broker"), sig=signal.SIGKILL)
    pids["broker"] = stack.start_broker(cfg)
    assert sorted(await read_all(cfg.bootstrap, topic)) == sorted(published)
    assert await committed(cfg.bootstrap, topic, "durable-group") == offsets

    # The whole broker side restarts, S3 server included (as `stack down; stack up
    # --keep-data` does).
    stack.stop_pid(pids.pop("broker"))
    stack.stop_pid(pids.pop("s3"), timeout=stack.OBJECT_STORE_STOP_S)
    pids["s3"] = stack.start_object_store(cfg)
    pids["broker"] = stack.start_broker(cfg)
    assert sorted(await read_all(cfg.bootstrap, topic)) == sorted(published)
    assert await committed(cfg.bootstrap, topic, "durable-group") == offsets


async def test_memory_broker_forgets_on_restart(tmp_path: Path) -> None:
    """What the S3 storage is for: the memory broker's restart loses every event."""
    cfg = stack.StackConfig(
        data_dir=tmp_path,
        ports=stack.StackPorts.from_base(PORT_BASE + 28),
        broker_storage="memory",
    )
    pid = stack.start_broker(cfg)
    try:
        topic = f"volatile.{uuid.uuid4().hex[:8]}"
        await publish(cfg.bootstrap, topic)
        stack.stop_pid(pid, sig=signal.SIGKILL)
        pid = stack.start_broker(cfg)
        await stack.create_topics_named(cfg.bootstrap, [topic], 3)
        assert await read_all(cfg.bootstrap, topic) == []
    finally:
        stack.stop_pid(pid)
