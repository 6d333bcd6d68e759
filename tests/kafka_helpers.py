"""Reading and writing topics directly, for tests that play a misbehaving producer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.audit.keys import ServiceKey
from shared.devstack.stack import StackConfig
from shared.messaging import signing


async def produce(
    bootstrap: str,
    topic: str,
    value: bytes,
    key: bytes | None = None,
    partition: int | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(
            topic, value=value, key=key, partition=partition, headers=headers
        )
    finally:
        await producer.stop()


def signature_headers(data_dir: Path, service: str, value: bytes) -> list[tuple[str, bytes]]:
    """The headers ``service`` would send with ``value``, signed with its key from the
    stack's data folder (the services verify every event: shared/messaging/signing.py)."""
    key = ServiceKey.load(data_dir / "keys" / f"{service}.key")
    headers = signing.signed_headers(key.key_id, signing.sign(key, value))
    assert headers is not None
    return headers


async def produce_as(
    cfg: StackConfig,
    service: str,
    topic: str,
    value: bytes,
    key: bytes | None = None,
    partition: int | None = None,
) -> None:
    """Produce ``value`` signed as ``service`` would sign it: playing that service."""
    headers = signature_headers(cfg.data_dir, service, value)
    await produce(cfg.bootstrap, topic, value, key=key, partition=partition, headers=headers)


async def find_on_topic(
    bootstrap: str, topic: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> dict[str, Any]:
    """The first JSON message on the topic (from the beginning) that satisfies predicate."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await asyncio.sleep(0.1)
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    try:
                        data = json.loads(record.value)
                    except ValueError:
                        continue
                    if isinstance(data, dict) and predicate(data):
                        return data
        raise AssertionError(f"no matching message on {topic} within {timeout}s")
    finally:
        await consumer.stop()
