"""Issue 15, item 2: an idle batch consumer adds no fixed wait to the next event.

FastStream's batch subscriber sleeps ``batch_timeout_ms`` after a fetch wait that
brought nothing; an event arriving in that sleep waits for its end. The services wrap
their consumer (shared/messaging/fetch.py) so that the wait for data is long (and ends
when data comes) and the sleep rare. The timeouts here are magnified (2 s) so that the
difference is far above this machine's noise.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from shared.devstack import stack
from shared.messaging.fetch import wait_for_data_when_idle

pytestmark = pytest.mark.integration

BATCH_TIMEOUT_MS = 2000


async def delay_after_idle(infra: stack.StackConfig, idle_wait_ms: int | None) -> float:
    """Seconds from publishing an event to its handler, the consumer having been idle
    for 1.25 batch timeouts since the event before."""
    topic = f"idle-wait-{uuid.uuid4().hex[:8]}"
    await stack.create_topics_named(infra.bootstrap, [topic], 1)
    broker = KafkaBroker(infra.bootstrap, log_level=logging.DEBUG)
    arrivals: list[float] = []
    arrived = asyncio.Event()
    subscriber = broker.subscriber(
        topic,
        group_id=topic,
        batch=True,
        batch_timeout_ms=BATCH_TIMEOUT_MS,
        fetch_max_wait_ms=10,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )

    @subscriber
    async def handle(message: KafkaMessage) -> None:
        arrivals.append(time.monotonic())
        arrived.set()

    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap)
    await broker.start()
    await producer.start()
    try:
        if idle_wait_ms is not None:
            wait_for_data_when_idle(subscriber.consumer, idle_wait_ms)
        await producer.send_and_wait(topic, b"first")
        await asyncio.wait_for(arrived.wait(), 30)
        arrived.clear()
        # FastStream's cycle after the first event: a wait of BATCH_TIMEOUT_MS that
        # brings nothing, then a sleep as long. Publish into the sleep.
        await asyncio.sleep(1.25 * BATCH_TIMEOUT_MS / 1000)
        sent = time.monotonic()
        await producer.send_and_wait(topic, b"second")
        await asyncio.wait_for(arrived.wait(), 30)
        return arrivals[-1] - sent
    finally:
        await producer.stop()
        await broker.stop()


async def test_an_event_after_an_idle_spell_is_consumed_without_waiting(
    infra: stack.StackConfig,
) -> None:
    # What FastStream does on its own: the event waits for the sleep to end.
    assert await delay_after_idle(infra, None) > 0.5 * BATCH_TIMEOUT_MS / 1000
    # With the services' wrapper the consumer is still waiting for data: at once.
    assert await delay_after_idle(infra, 10 * BATCH_TIMEOUT_MS) < 0.5 * BATCH_TIMEOUT_MS / 1000
