"""Consumer lag and stall detection.

aiokafka consumers have been seen to hang after a rebalance or a broker restart
(aiokafka #1154): connected, assigned, and never fetching again. The only reliable
sign from outside is "messages are waiting and the position does not move".

The watch reads the real ``AIOKafkaConsumer``: FastStream's Kafka subscriber keeps it
in its ``consumer`` attribute once started (``None`` before and after). It must be
handed the *subscriber* (what ``KafkaRouter.subscriber(...)`` returns), not the call
wrapper the decorator returns for the handler function, which has no consumer.

A stall that lasts ``stall_after_s`` is reported by ``/health`` (503). When it is still
there ``stall_after_s`` later, the watch calls ``on_stall`` with the reason; the
service's default logs it and ends the process (exit code 75, EX_TEMPFAIL) so that the
supervisor (docker-compose ``restart:``, Kubernetes, the embedded stack) starts a fresh
one. Nothing is lost by that: offsets are committed only after a batch's transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Gauge

from shared.messaging.membership import AssignmentHook
from shared.metrics import REGISTRY

log = logging.getLogger(__name__)

STALL_EXIT_CODE = 75  # EX_TEMPFAIL: try again, i.e. restart me

CONSUMER_LAG = Gauge(
    "claimflow_consumer_lag",
    "Messages on the service's subscribed topics not yet consumed (sum over partitions).",
    ["service", "topic"],
    registry=REGISTRY,
)


def exit_process(reason: str) -> None:
    """Default ``on_stall``: say why, then leave without running shutdown hooks.

    ``os._exit`` rather than ``sys.exit``: a hung consumer may hang a graceful shutdown
    too (stopping it awaits the very fetch that never returns).
    """
    log.critical(
        "consumer stalled, exiting with code %d so it is restarted: %s", STALL_EXIT_CODE, reason
    )
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    sys.stderr.flush()
    os._exit(STALL_EXIT_CODE)


def consumer_of(source: Any) -> Any:
    """The aiokafka consumer behind a FastStream subscriber (None when not running)."""
    return getattr(source, "consumer", None)


class ConsumerWatch:
    def __init__(
        self,
        *,
        service: str,
        stall_after_s: float,
        interval_s: float = 5.0,
        on_stall: Callable[[str], None] = exit_process,
    ) -> None:
        self.service = service
        self.stall_after_s = stall_after_s
        self.interval_s = interval_s
        self.on_stall = on_stall
        self._source: Any = None  # the FastStream subscriber; its .consumer appears once started
        self.started_at = time.monotonic()
        self.lag_total = 0
        self._last_positions: dict[Any, int] = {}
        self._progress_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.samples = 0
        self._assigned_at: float | None = None  # last time the consumer held partitions
        self._beyond_end: set[Any] = set()
        self.rewinds = 0
        """Partitions read again from the beginning because the log was replaced."""
        self.assignment_hook: AssignmentHook | None = None
        """The consumer's rebalance listener: its broker-epoch checks that failed at an
        assignment (database down) are tried again at each sample."""

    def start(self, consumer_source: Any) -> None:
        self._source = consumer_source
        self.started_at = time.monotonic()
        self._progress_at = self.started_at
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
                # A broker that does not answer must not hang the watch itself.
                await asyncio.wait_for(self.sample(), timeout=max(self.interval_s, 10.0))
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # No fresh figures (broker unreachable): /health's broker check says so;
                # a restart would not help, so no stall is confirmed on old figures.
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: consumer watch failed: %s", self.service, exc)
                continue
            self.check()

    def check(self) -> None:
        """Hand a confirmed stall (twice ``stall_after_s`` without progress) to on_stall."""
        reason = self.problem(confirmed=True)
        if reason is not None:
            self.on_stall(f"{self.service}: {reason}")

    async def sample(self) -> None:
        consumer = consumer_of(self._source)
        if consumer is None:
            return
        assignment = consumer.assignment()
        if not assignment:
            return
        self._assigned_at = time.monotonic()
        if self.assignment_hook is not None:
            await self.assignment_hook.retry(consumer)
        ends = await consumer.end_offsets(list(assignment))
        lag_by_topic: dict[str, int] = {}
        positions: dict[Any, int] = {}
        beyond: set[Any] = set()
        for tp in assignment:
            position = await consumer.position(tp)
            positions[tp] = position
            lag_by_topic[tp.topic] = lag_by_topic.get(tp.topic, 0) + max(0, ends[tp] - position)
            # The high watermark of the last fetch response. A position above it means
            # the log under us was replaced by a shorter one (a memory broker restarted,
            # and an offset from the old log was committed or kept): Kafka would answer
            # OFFSET_OUT_OF_RANGE and the reset policy would apply, tansu answers with no
            # records, forever. Twice in a row (not a reading between two fetches): read
            # the partition again from its beginning; the inbox drops what was handled.
            highwater = consumer.highwater(tp)
            if highwater is not None and position > highwater:
                beyond.add(tp)
                if tp in self._beyond_end:
                    log.warning(
                        "%s: position %d on %s[%d] is beyond the log end %d (the broker's log "
                        "was replaced); reading the partition again from its beginning",
                        self.service,
                        position,
                        tp.topic,
                        tp.partition,
                        highwater,
                    )
                    await consumer.seek_to_beginning(tp)
                    self.rewinds += 1
                    beyond.discard(tp)
        self._beyond_end = beyond
        for topic, lag in lag_by_topic.items():
            CONSUMER_LAG.labels(self.service, topic).set(lag)
        self.samples += 1
        self.lag_total = sum(lag_by_topic.values())
        if positions != self._last_positions or self.lag_total == 0:
            self._progress_at = time.monotonic()
        self._last_positions = positions

    def problem(self, *, confirmed: bool = False) -> str | None:
        """Why the consumer looks stuck, or None when it is fine.

        ``confirmed``: only a problem that has lasted twice the stall period (the one
        that ends the process); without it, the one ``/health`` reports.
        """
        limit = self.stall_after_s * (2 if confirmed else 1)
        consumer = consumer_of(self._source)
        now = time.monotonic()
        if consumer is None or not consumer.assignment():
            # Joining a group takes a few seconds (tansu: about 5), a rebalance too.
            since = self._assigned_at if self._assigned_at is not None else self.started_at
            if now - since > limit:
                if consumer is None:
                    return "consumer has not started"
                return "consumer has no partitions assigned"
            return None
        idle = now - self._progress_at
        if self.lag_total > 0 and idle > limit:
            return f"consumer stalled: lag {self.lag_total}, no progress for {idle:.0f}s"
        return None
