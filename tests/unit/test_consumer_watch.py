"""The stall detector behind /health (aiokafka #1154: a consumer that silently stops)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.messaging.membership import AssignmentHook
from shared.messaging.watch import STALL_EXIT_CODE, ConsumerWatch


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

    highwaters: dict[TP, int] = field(default_factory=dict)
    """What the last fetch response said the log end was (none fetched yet: absent)."""

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters.get(tp)

    async def seek_to_beginning(self, *tps: TP) -> None:
        for tp in tps:
            self.positions[tp] = 0

    paused: set[TP] = field(default_factory=set)

    def pause(self, *tps: TP) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TP) -> None:
        self.paused -= set(tps)


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


async def test_a_confirmed_stall_is_handed_to_on_stall_once_it_lasted_twice_the_period() -> None:
    tp = TP("t", 0)
    consumer = FakeConsumer(ends={tp: 50}, positions={tp: 20}, assigned={tp})
    stalls: list[str] = []
    watch = ConsumerWatch(service="svc", stall_after_s=10, on_stall=stalls.append)
    watch._source = Subscriber(consumer)
    await watch.sample()
    watch._progress_at = time.monotonic() - 11
    await watch.sample()
    watch.check()
    assert stalls == []  # reported by /health, not yet ended
    assert watch.problem() is not None
    watch._progress_at = time.monotonic() - 21
    await watch.sample()
    watch.check()
    assert len(stalls) == 1 and stalls[0].startswith("svc: consumer stalled: lag 30")


async def test_a_consumer_that_moves_again_is_not_ended() -> None:
    tp = TP("t", 0)
    consumer = FakeConsumer(ends={tp: 50}, positions={tp: 20}, assigned={tp})
    stalls: list[str] = []
    watch = ConsumerWatch(service="svc", stall_after_s=10, on_stall=stalls.append)
    watch._source = Subscriber(consumer)
    await watch.sample()
    watch._progress_at = time.monotonic() - 25
    consumer.positions[tp] = 21
    await watch.sample()
    watch.check()
    assert stalls == [] and watch.problem() is None


async def test_the_watch_loop_samples_and_ends_a_stalled_consumer() -> None:
    """The running task, not only its parts: a short period, a consumer that never moves."""
    tp = TP("t", 0)
    consumer = FakeConsumer(ends={tp: 5}, positions={tp: 0}, assigned={tp})
    stalled = asyncio.Event()
    reasons: list[str] = []

    def on_stall(reason: str) -> None:
        reasons.append(reason)
        stalled.set()

    watch = ConsumerWatch(service="svc", stall_after_s=0.2, interval_s=0.05, on_stall=on_stall)
    watch.start(Subscriber(consumer))
    try:
        await asyncio.wait_for(stalled.wait(), timeout=5)
    finally:
        await watch.stop()
    assert watch.samples >= 2 and "lag 5" in reasons[0]


def test_the_default_on_stall_logs_why_and_exits_75() -> None:
    code = (
        "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
        "from shared.messaging.watch import exit_process\n"
        "exit_process('svc: consumer stalled: lag 3, no progress for 130s')\n"
        "print('still running')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == STALL_EXIT_CODE == 75
    assert "still running" not in done.stdout
    assert "consumer stalled, exiting with code 75" in done.stderr
    assert "lag 3, no progress for 130s" in done.stderr


def test_the_service_app_watches_the_subscriber_not_the_handler_wrapper() -> None:
    """The watch reads ``.consumer``: the subscriber has it (None until started); the call
    wrapper FastStream's decorator returns does not, and the watch saw nothing."""
    from shared.config import ServiceSettings
    from shared.service_app import build_service_app

    async def handler(conn: Any, envelope: Any) -> None:
        return None

    app = build_service_app(
        name="watchtest",
        settings=ServiceSettings(),
        migrations=Path("."),
        subscribe_to=["claimflow.test.v1"],
        handlers={"x": handler},
        routers=[],
    )
    subscriber = app.state.runtime.subscriber
    assert type(subscriber).__name__ != "HandlerCallWrapper"
    assert hasattr(subscriber, "consumer") and subscriber.consumer is None
    assert hasattr(subscriber, "start") and hasattr(subscriber, "topics")


async def test_a_position_beyond_the_log_end_is_read_again_from_the_beginning() -> None:
    """A memory broker restarted: the new log is shorter than the offset the consumer
    stands at (kept or committed from the old log). tansu answers such fetches with no
    records and no error, so without this the partition is never read again."""
    stale, fine = TP("t", 0), TP("t", 1)
    consumer = FakeConsumer(
        ends={stale: 80, fine: 40},
        positions={stale: 2471, fine: 40},
        assigned={stale, fine},
        highwaters={stale: 86, fine: 40},
    )
    watch = watch_over(consumer)
    await watch.sample()
    assert consumer.positions[stale] == 2471  # once could be a reading between fetches
    await watch.sample()
    assert consumer.positions == {stale: 0, fine: 40}
    assert watch.rewinds == 1
    await watch.sample()
    assert watch.rewinds == 1  # at 0 it is inside the log: nothing more


async def test_no_fetch_yet_means_no_judgement_on_the_position() -> None:
    tp = TP("t", 0)
    consumer = FakeConsumer(ends={tp: 10}, positions={tp: 500}, assigned={tp})
    watch = watch_over(consumer)
    await watch.sample()
    await watch.sample()
    assert consumer.positions[tp] == 500 and watch.rewinds == 0


@dataclass
class FlakyEpochs:
    """Stands in for ConsumerEpochs: fails while the database is "down", and says what it
    was asked to check."""

    down: bool = True
    checked: list[set[TP]] = field(default_factory=list)

    async def reconcile(self, consumer: Any, assignment: set[TP]) -> list[TP]:
        if self.down:
            raise ConnectionError("database down")
        self.checked.append(set(assignment))
        return []


async def test_an_epoch_check_that_failed_at_assignment_is_retried_by_the_watch() -> None:
    """The broker-epoch check runs inside the rebalance; when the database is down then,
    the consumer goes on and each watch sample tries the still-assigned partitions again
    until the check has been made once."""
    tp, other, gone = TP("t", 0), TP("t", 1), TP("t", 2)
    consumer = FakeConsumer(
        ends={tp: 5, other: 5}, positions={tp: 5, other: 5}, assigned={tp, other, gone}
    )
    hook = AssignmentHook("t", group="t", member_dir=None)
    epochs = FlakyEpochs()
    hook.epochs = epochs  # type: ignore[assignment]
    hook.source = Subscriber(consumer)
    await hook.on_partitions_assigned({tp, other, gone})
    assert hook.unreconciled == {tp, other, gone}
    assert consumer.paused == set()  # paused during the check only, even when it failed
    consumer.assigned.discard(gone)  # a later rebalance took it away
    watch = watch_over(consumer)
    watch.assignment_hook = hook
    await watch.sample()  # still down: still pending
    assert hook.unreconciled == {tp, other, gone} and epochs.checked == []
    epochs.down = False
    await watch.sample()
    assert epochs.checked == [{tp, other}]  # what is still assigned
    assert hook.unreconciled == {gone}
    await watch.sample()
    assert epochs.checked == [{tp, other}]  # once
