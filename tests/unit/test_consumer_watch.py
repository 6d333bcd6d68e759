"""The stall detector behind /health (aiokafka #1154: a consumer that silently stops)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from shared.messaging.watch import ConsumerWatch


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass
class FakeConsumer:
    ends: dict[TP, int]
    positions: dict[TP, int]
    assigned: set[TP] = field(default_factory=set)

    def assignment(self) -> set[TP]:
        return self.assigned

    async def end_offsets(self, tps: list[TP]) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def position(self, tp: TP) -> int:
        return self.positions[tp]


@dataclass
class Subscriber:
    consumer: Any


def watch_over(consumer: FakeConsumer) -> ConsumerWatch:
    watch = ConsumerWatch(service="t", stall_after_s=10)
    watch._source = Subscriber(consumer)
    return watch


async def test_lag_without_progress_for_too_long_is_a_stall() -> None:
    tp = TP("t", 0)
    consumer = FakeConsumer(ends={tp: 50}, positions={tp: 20}, assigned={tp})
    watch = watch_over(consumer)
    await watch.sample()
    assert watch.lag_total == 30
    assert watch.problem() is None  # lag alone is fine: it may be catching up
    watch._progress_at = time.monotonic() - 11
    await watch.sample()  # same position again: no progress
    problem = watch.problem()
    assert problem is not None and "stalled" in problem and "lag 30" in problem


async def test_progress_or_no_lag_is_healthy() -> None:
    tp = TP("t", 0)
    consumer = FakeConsumer(ends={tp: 50}, positions={tp: 20}, assigned={tp})
    watch = watch_over(consumer)
    await watch.sample()
    watch._progress_at = time.monotonic() - 11
    consumer.positions[tp] = 25  # it moved
    await watch.sample()
    assert watch.problem() is None
    consumer.positions[tp] = 50
    watch._progress_at = time.monotonic() - 100
    await watch.sample()  # idle and caught up
    assert watch.problem() is None


async def test_never_assigned_after_the_grace_period_is_reported() -> None:
    watch = watch_over(FakeConsumer(ends={}, positions={}))
    assert watch.problem() is None
    watch.started_at = time.monotonic() - 11
    assert watch.problem() == "consumer has no partitions assigned"
