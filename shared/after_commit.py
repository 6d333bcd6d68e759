"""Work that must happen only once a transaction has committed: business counters.

A handler that changes state registers ``defer(lambda: COUNTER.inc())`` instead of
incrementing at once. Whoever owns the transaction collects those callbacks and runs
them after COMMIT; a rollback (or a batch the consumer runs again, isolated) drops
them, so a retried or re-run transaction never counts twice.

::

    async with after_commit.transaction(pool) as conn:   # collects, commits, then runs
        await handler(conn, envelope)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar

import asyncpg

from shared.db import DbConnection

log = logging.getLogger(__name__)

Callback = Callable[[], None]

_PENDING: ContextVar[list[Callback] | None] = ContextVar("after_commit", default=None)


class NoTransactionScope(RuntimeError):
    """defer() called where nobody will run the callback after a commit."""


def defer(callback: Callback) -> None:
    """Run ``callback`` after the enclosing transaction commits (never if it rolls back)."""
    pending = _PENDING.get()
    if pending is None:
        # Counting at once could count a change that is then rolled back: refuse.
        raise NoTransactionScope("defer() outside after_commit.collecting()")
    pending.append(callback)


def pending() -> list[Callback]:
    """The callbacks collected so far in this scope (to drop those of a savepoint)."""
    current = _PENDING.get()
    if current is None:
        raise NoTransactionScope("pending() outside after_commit.collecting()")
    return current


@contextmanager
def collecting() -> Iterator[list[Callback]]:
    """A scope for one transaction's callbacks; the caller runs them after COMMIT."""
    collected: list[Callback] = []
    token = _PENDING.set(collected)
    try:
        yield collected
    finally:
        _PENDING.reset(token)


def run(callbacks: list[Callback]) -> None:
    """After COMMIT: a failing callback (a metric) never undoes or hides the commit."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("after-commit callback failed")
    callbacks.clear()


@asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[DbConnection]:
    """A connection in a transaction; deferred callbacks run once it has committed."""
    with collecting() as collected:
        async with pool.acquire() as conn, conn.transaction():
            yield conn
    run(collected)
