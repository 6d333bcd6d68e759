"""The unit of work: one transaction, the events it emits, its clock and what follows it.

Every write path of every service — an HTTP command, a consumed event, a background
loop — runs inside one ``UnitOfWork``:

* ``uow.conn`` — the connection, inside the transaction;
* ``uow.emit(payload, claim_id=...)`` — stages an integration event; the events are
  written to the outbox together when the work completes, after every emit hook (the
  audit chain of issue 12 hooks in here, so no use case can forget it);
* ``uow.after_commit(fn)`` — metrics and notifications, run once the transaction has
  committed; never on rollback, never for a consumer batch that is run again;
* ``uow.now`` — the one clock reading of this unit of work (injected by the
  composition root; services never call ``datetime.now()`` themselves).

Two ways in, one object::

    async with uows.begin(conn) as uow:      # HTTP / background: owns the transaction
        ...
    async with uows.acquire(pool) as uow:    # same, taking a pooled connection

Inside a consumer batch (``conn`` already in the batch's transaction and the consumer
owning the after-commit scope) ``begin`` joins that transaction instead: the consumer
commits the batch, and isolates a poison event with a savepoint per event when a
handler fails (``shared.messaging.consumer``); callbacks and outbox rows staged by an
event whose savepoint is rolled back are dropped with it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from shared.contracts import EventEnvelope, EventPayload
from shared.db import DbConnection
from shared.messaging import after_commit as _after_commit
from shared.messaging.outbox import stage_events

Clock = Callable[[], datetime]
"""Returns an aware UTC datetime. Tests inject their own to move time."""


def system_clock() -> datetime:
    """The wall clock; referenced only by composition roots (bootstrap) and defaults."""
    return datetime.now(UTC)


EmitHook = Callable[["UnitOfWork", Sequence[EventEnvelope]], Awaitable[None]]
"""Called with every unit of work's events just before they are staged (same
transaction): the place for the audit chain. A hook that raises aborts the work."""


class UnitOfWork:
    """One transaction's worth of change; see the module docstring."""

    def __init__(
        self,
        conn: DbConnection,
        *,
        service: str,
        topic: str,
        now: datetime,
        hooks: Sequence[EmitHook] = (),
        cause: EventEnvelope | None = None,
    ) -> None:
        self.conn = conn
        self.service = service
        self.topic = topic
        self.now = now
        self.cause = cause
        self._hooks = tuple(hooks)
        self._events: list[EventEnvelope] = []

    @property
    def events(self) -> tuple[EventEnvelope, ...]:
        """Events emitted so far and not yet staged."""
        return tuple(self._events)

    def emit(
        self,
        payload: EventPayload,
        *,
        claim_id: uuid.UUID,
        correlation_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
    ) -> EventEnvelope:
        """Stage ``payload`` as an event of this service; returns its envelope.

        The cause (the consumed event this work handles, if any) becomes the causation
        id and lends its correlation id, so a claim's events stay one conversation.
        """
        envelope = EventEnvelope.wrap(
            payload,
            claim_id=claim_id,
            producer=self.service,
            correlation_id=correlation_id
            or (self.cause.correlation_id if self.cause is not None else None),
            causation_id=self.cause.event_id if self.cause is not None else None,
            occurred_at=occurred_at or self.now,
        )
        self._events.append(envelope)
        return envelope

    def after_commit(self, callback: Callable[[], object]) -> None:
        _after_commit.after_commit(callback)

    async def flush(self) -> None:
        """Run the emit hooks and write the emitted events to the outbox (same transaction)."""
        if not self._events:
            return
        events, self._events = self._events, []
        for hook in self._hooks:
            await hook(self, events)
        await stage_events(self.conn, self.service, self.topic, events)


@dataclass(frozen=True)
class UnitOfWorkFactory:
    """Built once per service by its bootstrap: who emits, on which topic, by which clock."""

    service: str
    topic: str
    clock: Clock = system_clock
    hooks: Sequence[EmitHook] = field(default_factory=tuple)

    def now(self) -> datetime:
        return self.clock()

    @contextlib.asynccontextmanager
    async def begin(
        self, conn: DbConnection, *, cause: EventEnvelope | None = None
    ) -> AsyncIterator[UnitOfWork]:
        """A unit of work on ``conn``: its own transaction, or the consumer batch's."""
        uow = UnitOfWork(
            conn,
            service=self.service,
            topic=self.topic,
            now=self.clock(),
            hooks=self.hooks,
            cause=cause,
        )
        if conn.is_in_transaction():
            # A consumer batch (or a caller that owns the transaction and its
            # after-commit scope): join it; the owner commits.
            yield uow
            await uow.flush()
            return
        async with _after_commit.committing(conn):
            yield uow
            await uow.flush()

    @contextlib.asynccontextmanager
    async def acquire(self, pool: asyncpg.Pool) -> AsyncIterator[UnitOfWork]:
        """``begin`` on a connection taken from ``pool`` for the duration."""
        async with pool.acquire() as conn, self.begin(conn) as uow:
            yield uow
