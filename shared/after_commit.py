"""Side effects that may happen only once a transaction has committed: business
counters above all. A counter moved inside a transaction that rolls back, or inside a
consumer batch that is re-run (with a savepoint per event after a poison message),
would count what never happened, or count it twice.

The owner of the transaction opens a scope (``collecting``), code deep inside registers
callbacks (``after_commit``), and the owner runs them (``run``) after the commit. The
batch consumer (shared/messaging/consumer.py) opens one scope per attempt of a batch and
drops what a rolled-back savepoint registered (``mark`` / ``discard_from``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar

from shared.db import DbConnection

log = logging.getLogger(__name__)

Callback = Callable[[], None]
_pending: ContextVar[list[Callback] | None] = ContextVar("claimflow_after_commit", default=None)


class NoCommitScope(RuntimeError):
    """after_commit() was called with no transaction owner collecting callbacks."""


def after_commit(callback: Callback) -> None:
    pending = _pending.get()
    if pending is None:
        raise NoCommitScope("after_commit() outside a collecting() scope: nobody would run it")
    pending.append(callback)


@contextlib.contextmanager
def collecting() -> Iterator[list[Callback]]:
    """A fresh list of callbacks for one transaction (or one attempt of it)."""
    callbacks: list[Callback] = []
    token = _pending.set(callbacks)
    try:
        yield callbacks
    finally:
        _pending.reset(token)


def mark() -> int:
    """How many callbacks are registered now (before a savepoint)."""
    pending = _pending.get()
    return len(pending) if pending is not None else 0


def discard_from(position: int) -> None:
    """Forget the callbacks registered since ``mark()`` (their savepoint rolled back)."""
    pending = _pending.get()
    if pending is not None:
        del pending[position:]


def run(callbacks: list[Callback]) -> None:
    """Run the callbacks of a committed transaction; one failing does not stop the rest."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("after-commit callback failed")
    callbacks.clear()


@contextlib.asynccontextmanager
async def committing(conn: DbConnection) -> AsyncIterator[None]:
    """``conn.transaction()`` that runs the callbacks registered inside it after it
    commits. Inside a caller's scope (the batch consumer) the callbacks join that scope,
    since the caller's transaction is the one that commits."""
    if _pending.get() is not None:
        async with conn.transaction():
            yield
        return
    if conn.is_in_transaction():
        raise NoCommitScope("committing() nested in a transaction with no collecting() scope")
    with collecting() as callbacks:
        async with conn.transaction():
            yield
    run(callbacks)
