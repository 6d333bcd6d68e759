"""Work that must happen only once a transaction has committed: business counters.

A counter moved inside a transaction that then rolls back (or is run again, as the
consumer does when it isolates a poison event) counts something that never happened,
or counts it twice. Code that may run inside a transaction registers the move instead::

    from shared.messaging.after_commit import after_commit

    after_commit(lambda: PAYOUTS.labels(kind, status).inc())

Inside a consumer batch the consumer owns the scope: callbacks run after the batch's
transaction committed, once, never for a batch that rolled back, a run that was
discarded to isolate a poison event, or an event whose savepoint was rolled back.
Elsewhere (an HTTP route, a background loop) open the scope around the transaction::

    with after_commit_scope() as pending:
        async with conn.transaction():
            ...  # code that calls after_commit()
    pending.run()  # not reached when the transaction raised
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar

log = logging.getLogger(__name__)

Callback = Callable[[], object]


class AfterCommit:
    """Callbacks collected for one unit of work, run in order by ``run``."""

    def __init__(self) -> None:
        self._callbacks: list[Callback] = []

    def add(self, callback: Callback) -> None:
        self._callbacks.append(callback)

    def mark(self) -> int:
        return len(self._callbacks)

    def rollback_to(self, mark: int) -> None:
        """Forget what was added since ``mark`` (its savepoint was rolled back)."""
        del self._callbacks[mark:]

    def run(self) -> None:
        """Run and forget every callback; one failing callback does not stop the rest."""
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback %r failed", callback)

    def __len__(self) -> int:
        return len(self._callbacks)


_current: ContextVar[AfterCommit | None] = ContextVar("claimflow_after_commit", default=None)


@contextlib.contextmanager
def after_commit_scope(pending: AfterCommit | None = None) -> Iterator[AfterCommit]:
    """Make ``after_commit`` collect into ``pending`` (a new one by default)."""
    scope = pending if pending is not None else AfterCommit()
    token = _current.set(scope)
    try:
        yield scope
    finally:
        _current.reset(token)


def after_commit(callback: Callback) -> None:
    """Run ``callback`` once the enclosing unit of work has committed.

    Raises RuntimeError outside a scope: running it at once could count a change that
    is then rolled back, which is the mistake this exists to prevent.
    """
    scope = _current.get()
    if scope is None:
        raise RuntimeError("after_commit() outside after_commit_scope() or a consumer batch")
    scope.add(callback)
