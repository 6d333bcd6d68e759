"""How long a batch subscriber waits for data, so that an idle consumer adds no wait.

FastStream's batch subscriber loops on ``getmany(timeout_ms=batch_timeout_ms)`` and,
when that brings nothing, sleeps ``batch_timeout_ms`` before asking again. aiokafka's
``getmany`` returns as soon as a fetch brought records, so the wait costs nothing; the
sleep does: an event arriving during it waits for its end. With 50 ms for both, an idle
consumer spent half its time asleep and every hop of a quiet claim waited 0-50 ms.

``wait_for_data_when_idle`` makes each ``getmany`` of the subscriber's consumer wait up
to ``idle_wait_ms`` (returning at once when records come), so FastStream's sleep comes
once per ``idle_wait_ms`` of silence instead of after every 50 ms; with the sleep itself
at a few milliseconds (``consumer_batch_timeout_ms``), an event arriving in it waits
that long at most.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

GetMany = Callable[..., Awaitable[dict[Any, list[Any]]]]


def wait_for_data_when_idle(consumer: Any, idle_wait_ms: int) -> None:
    """Wrap the aiokafka consumer's ``getmany`` to wait at least ``idle_wait_ms``.

    A consumer stopped while waiting raises ConsumerStoppedError as before (aiokafka
    ends the wait when it stops), and a cancelled subscriber task cancels the wait.
    """
    if getattr(consumer, "_claimflow_idle_wait_ms", None) is not None:
        consumer._claimflow_idle_wait_ms = idle_wait_ms
        return
    original: GetMany = consumer.getmany

    async def getmany(
        *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[Any, list[Any]]:
        wait_ms = max(timeout_ms, consumer._claimflow_idle_wait_ms)
        return await original(*partitions, timeout_ms=wait_ms, max_records=max_records)

    consumer._claimflow_idle_wait_ms = idle_wait_ms
    consumer.getmany = getmany
