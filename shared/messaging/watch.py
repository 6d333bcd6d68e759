"""Consumer lag and stall detection.

aiokafka consumers have been seen to hang after a rebalance or a broker restart
(aiokafka #1154): connected, assigned, and never fetching again. The only reliable
sign from outside is "messages are waiting and the position does not move".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from prometheus_client import Gauge

from shared.metrics import REGISTRY

log = logging.getLogger(__name__)

CONSUMER_LAG = Gauge(
    "claimflow_consumer_lag",
    "Messages on the service's subscribed topics not yet consumed (sum over partitions).",
    ["service", "topic"],
    registry=REGISTRY,
)


class ConsumerWatch:
    def __init__(self, *, service: str, stall_after_s: float, interval_s: float = 5.0) -> None:
        self.service = service
        self.stall_after_s = stall_after_s
        self.interval_s = interval_s
        self._source: Any = None  # the FastStream subscriber; its .consumer appears once started
        self.started_at = time.monotonic()
        self.lag_total = 0
        self._last_positions: dict[Any, int] = {}
        self._progress_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None

    def start(self, consumer_source: Any) -> None:
        self._source = consumer_source
        self._task = asyncio.create_task(self._run(), name=f"consumer-watch-{self.service}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sample()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: consumer watch failed: %s", self.service, exc)

    async def sample(self) -> None:
        consumer = getattr(self._source, "consumer", None)
        if consumer is None:
            return
        assignment = consumer.assignment()
        if not assignment:
            return
        ends = await consumer.end_offsets(list(assignment))
        lag_by_topic: dict[str, int] = {}
        positions: dict[Any, int] = {}
        for tp in assignment:
            position = await consumer.position(tp)
            positions[tp] = position
            lag_by_topic[tp.topic] = lag_by_topic.get(tp.topic, 0) + max(0, ends[tp] - position)
        for topic, lag in lag_by_topic.items():
            CONSUMER_LAG.labels(self.service, topic).set(lag)
        self.lag_total = sum(lag_by_topic.values())
        if positions != self._last_positions or self.lag_total == 0:
            self._progress_at = time.monotonic()
        self._last_positions = positions

    def problem(self) -> str | None:
        """Why the consumer looks stuck, or None when it is fine."""
        consumer = getattr(self._source, "consumer", None)
        now = time.monotonic()
        if consumer is None or not consumer.assignment():
            if now - self.started_at > self.stall_after_s:
                return "consumer has no partitions assigned"
            return None
        if self.lag_total > 0 and now - self._progress_at > self.stall_after_s:
            idle = now - self._progress_at
            return f"consumer stalled: lag {self.lag_total}, no progress for {idle:.0f}s"
        return None
