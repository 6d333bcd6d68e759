"""Idempotent batch consumer: a fetched batch is handled in one database transaction.

For each batch: the envelopes are parsed, their event ids inserted into the inbox in
one statement (duplicates fall out there), each new event is applied by its handler
inside a savepoint, and the transaction commits before the offsets are acknowledged.
A message that cannot be parsed or whose handler fails for a reason that a retry would
not cure is dead-lettered (in the same transaction, through the outbox) and the
partition moves on. A failure of the database or broker rolls the whole batch back,
the offsets are rewound, and the batch is read again after a pause.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg
from pydantic import ValidationError

from shared import after_commit
from shared.contracts import DeadLetter, EventEnvelope
from shared.contracts.topics import DEAD_LETTER
from shared.db import DbConnection
from shared.messaging.outbox import OutboxBuffer, buffering, stage_raw
from shared.metrics import CONSUMED, CONSUMER_BATCH_FAILURES, DEAD_LETTERS, PROCESSING_LATENCY

log = logging.getLogger(__name__)

EventHandler = Callable[[DbConnection, EventEnvelope], Awaitable[None]]


class Record(Protocol):
    """The parts of an aiokafka ConsumerRecord this module reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class TransientError(Exception):
    """Raise from a handler when a retry later may succeed; the batch is re-read."""


class _NeedsIsolation(Exception):
    """A handler failed on the fast path: redo the batch with a savepoint per event."""


class PoisonMessage(Exception):
    """Raise from a handler when the event can never be applied; it is dead-lettered."""


# Failures where trying the same batch again later may succeed.
_TRANSIENT: tuple[type[BaseException], ...] = (
    TransientError,
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
)


@dataclass(frozen=True, slots=True)
class _Parsed:
    record: Record
    envelope: EventEnvelope | None
    error: str | None

    @property
    def message_id(self) -> str:
        if self.envelope is not None:
            return str(self.envelope.event_id)
        r = self.record
        return f"unparsable:{r.topic}:{r.partition}:{r.offset}"


def _parse(record: Record) -> _Parsed:
    if record.value is None:
        return _Parsed(record, None, "empty message value (tombstone)")
    try:
        return _Parsed(record, EventEnvelope.model_validate_json(record.value), None)
    except ValidationError as exc:
        return _Parsed(record, None, f"envelope invalid: {_short(exc)}")


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 1000 else text[:997] + "..."


class IdempotentBatchConsumer:
    def __init__(
        self,
        *,
        service: str,
        schema: str,
        pool: asyncpg.Pool | None,
        handlers: Mapping[str, EventHandler],
        retry_backoff_s: float = 1.0,
    ) -> None:
        self.service = service
        self.schema = schema
        self.pool = pool
        self.handlers = dict(handlers)
        self.retry_backoff_s = retry_backoff_s
        self.last_success_at: float | None = None
        self.handled_total = 0

    async def handle_batch(self, records: Sequence[Record]) -> None:
        """Apply a fetched batch in one transaction; raise only when it should be re-read.

        Fast path: every handler runs straight in the batch's transaction and their outbox
        rows are written together at the end. If a handler fails for a reason a retry would
        not cure, the batch is rolled back and run again with a savepoint around each
        event, so only the poison event is dead-lettered.
        """
        assert self.pool is not None, "consumer used before the pool was created"
        parsed = [_parse(r) for r in records]
        try:
            async with self.pool.acquire() as conn:
                # Callbacks of an attempt that rolled back are dropped with it.
                try:
                    with after_commit.collecting() as committed:
                        outcomes = await self._run(conn, parsed, isolate=False)
                except _NeedsIsolation:
                    with after_commit.collecting() as committed:
                        outcomes = await self._run(conn, parsed, isolate=True)
        except Exception:
            CONSUMER_BATCH_FAILURES.labels(self.service).inc()
            log.exception(
                "%s: batch of %d rolled back; re-reading after %.1fs",
                self.service,
                len(records),
                self.retry_backoff_s,
            )
            await asyncio.sleep(self.retry_backoff_s)
            raise
        after_commit.run(committed)  # the batch committed: business counters move now
        now = datetime.now(UTC)
        for (event_type, outcome), item in zip(outcomes, parsed, strict=True):
            CONSUMED.labels(self.service, event_type, outcome).inc()
            if outcome == "handled" and item.envelope is not None:
                PROCESSING_LATENCY.labels(self.service, event_type).observe(
                    max(0.0, (now - item.envelope.occurred_at).total_seconds())
                )
        self.handled_total += len(records)
        self.last_success_at = time.monotonic()

    async def _run(
        self, conn: DbConnection, parsed: list[_Parsed], *, isolate: bool
    ) -> list[tuple[str, str]]:
        outcomes: list[tuple[str, str]] = []
        async with conn.transaction():
            with buffering(OutboxBuffer(conn, self.schema)) as outbox:
                fresh = await self._claim_in_inbox(conn, parsed)
                for item in parsed:
                    if item.message_id not in fresh:
                        outcomes.append((_type_of(item), "duplicate"))
                        continue
                    fresh.discard(item.message_id)  # a second copy in this batch is a duplicate
                    outcomes.append(
                        (_type_of(item), await self._apply(conn, item, isolate, outbox))
                    )
                await outbox.flush()
        return outcomes

    async def _claim_in_inbox(self, conn: DbConnection, parsed: list[_Parsed]) -> set[str]:
        """Insert every message id once; returns those seen for the first time."""
        rows = await conn.fetch(
            """INSERT INTO inbox (message_id, event_type, source_topic, source_partition,
                                  source_offset, outcome)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[],
                                    $5::bigint[], $6::text[])
               ON CONFLICT (message_id) DO NOTHING
               RETURNING message_id""",
            [p.message_id for p in parsed],
            [p.envelope.event_type if p.envelope else None for p in parsed],
            [p.record.topic for p in parsed],
            [p.record.partition for p in parsed],
            [p.record.offset for p in parsed],
            ["handled" for _ in parsed],
        )
        return {r["message_id"] for r in rows}

    async def _apply(
        self, conn: DbConnection, item: _Parsed, isolate: bool, outbox: OutboxBuffer
    ) -> str:
        if item.envelope is None:
            await self._dead_letter(conn, item, item.error or "unparsable")
            return "dead_lettered"
        handler = self.handlers.get(item.envelope.event_type)
        if handler is None:
            await self._set_outcome(conn, item, "ignored")
            return "ignored"
        if not isolate:
            try:
                await handler(conn, item.envelope)
            except _TRANSIENT:
                raise
            except Exception as exc:
                raise _NeedsIsolation from exc
            return "handled"
        staged_before = len(outbox.rows)
        callbacks_before = after_commit.mark()
        try:
            async with conn.transaction():  # a savepoint: a failed handler leaves no trace
                await handler(conn, item.envelope)
        except _TRANSIENT:
            raise
        except Exception as exc:
            del outbox.rows[staged_before:]  # and neither do the events it staged
            after_commit.discard_from(callbacks_before)  # nor its counters
            reason = f"{type(exc).__name__}: {_short(exc)}"
            log.warning("%s: dead-lettering %s: %s", self.service, item.message_id, reason)
            await self._dead_letter(conn, item, reason)
            return "dead_lettered"
        return "handled"

    async def _set_outcome(self, conn: DbConnection, item: _Parsed, outcome: str) -> None:
        await conn.execute(
            "UPDATE inbox SET outcome = $2 WHERE message_id = $1", item.message_id, outcome
        )

    async def _dead_letter(self, conn: DbConnection, item: _Parsed, reason: str) -> None:
        r = item.record
        letter = DeadLetter(
            dead_letter_id=uuid.uuid4(),
            service=self.service,
            reason=reason,
            source_topic=r.topic,
            source_partition=r.partition,
            source_offset=r.offset,
            source_key=r.key.decode("utf-8", "replace") if r.key is not None else None,
            event_id=item.envelope.event_id if item.envelope else None,
            event_type=item.envelope.event_type if item.envelope else _peek_type(r.value),
            raw_value=(r.value or b"").decode("utf-8", "replace"),
            failed_at=datetime.now(UTC),
        )
        await conn.execute(
            """INSERT INTO dead_letters (dead_letter_id, source_topic, source_partition,
                   source_offset, event_id, event_type, reason, raw_value)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            letter.dead_letter_id,
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
            letter.event_id,
            letter.event_type,
            letter.reason,
            letter.raw_value,
        )
        await stage_raw(
            conn,
            self.schema,
            event_id=letter.dead_letter_id,
            topic=DEAD_LETTER,
            key=letter.source_key,
            event_type="dead_letter",
            payload=letter.model_dump_json(),
        )
        await self._set_outcome(conn, item, "dead_lettered")
        DEAD_LETTERS.labels(self.service).inc()


def _type_of(item: _Parsed) -> str:
    return item.envelope.event_type if item.envelope else "unparsable"


def _peek_type(value: bytes | None) -> str | None:
    """Best effort: the event type of a message whose envelope did not validate."""
    try:
        data: Any = json.loads(value or b"")
    except ValueError:
        return None
    found = data.get("event_type") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None
