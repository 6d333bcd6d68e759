"""Idempotent batch consumer: a fetched batch is handled in one database transaction.

For each batch: the envelopes are parsed, their event ids inserted into the inbox in
one statement (duplicates fall out there), each new event is applied by its handler
inside a savepoint, and the transaction commits before the offsets are acknowledged.
A message that cannot be parsed or whose handler fails for a reason that a retry would
not cure is dead-lettered (in the same transaction, through the outbox) and the
partition moves on. A failure of the database or broker rolls the whole batch back,
the offsets are rewound, and the batch is read again after a pause.

An event of a type the service handles but in a version it has no handler (or no
contract) for is *held*, not dropped: it goes to ``held_events`` (not the inbox, not
the dead letters), ``claimflow_held_events`` and the ``EventsHeld`` alert say so, and
it is applied once a handler exists (``release_held`` at start, or a re-drive).

Handlers are keyed by event type (every version; the handler parses the payload and
raising ``UnknownEventType`` for a version it does not know holds the event) or by
``(event type, version)`` (that version only).

Metrics and other effects that must follow a commit go through
``shared.messaging.after_commit``: they run only once the batch committed.
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

from shared.contracts import DeadLetter, EventEnvelope, UnknownEventType
from shared.contracts.topics import DEAD_LETTER
from shared.db import DbConnection
from shared.messaging import signing
from shared.messaging.after_commit import AfterCommit, after_commit_scope
from shared.messaging.outbox import OutboxBuffer, buffering, stage_raw
from shared.messaging.signing import EventVerifier
from shared.metrics import (
    CONSUMED,
    CONSUMER_BATCH_FAILURES,
    DEAD_LETTERS,
    EVENTS_REFUSED,
    HELD,
    PROCESSING_LATENCY,
)

log = logging.getLogger(__name__)

EventHandler = Callable[[DbConnection, EventEnvelope], Awaitable[None]]
HandlerKey = str | tuple[str, int]
"""An event type (every version) or an (event type, version) pair."""
Handlers = (
    Mapping[str, EventHandler]
    | Mapping[tuple[str, int], EventHandler]
    | Mapping[HandlerKey, EventHandler]
)
PrepareBatch = Callable[[DbConnection, Sequence[EventEnvelope]], Awaitable[None]]
"""Run first in a batch's transaction with its fresh events (``prepare_batch``)."""


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


# Failures where trying the same batch again later may succeed: the event is fine, the
# database or the machine is not (yet). Dead-lettering on one of these would drop a good
# event for ever.
TRANSIENT: tuple[type[BaseException], ...] = (
    TransientError,
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,  # class 08
    asyncpg.exceptions.TransactionRollbackError,  # class 40: serialization, deadlock
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: disk full, out of memory,
    # too many connections
    asyncpg.exceptions.OperatorInterventionError,  # class 57: query cancelled (statement
    # timeout), admin/crash shutdown, cannot connect now
    asyncpg.exceptions.PostgresSystemError,  # class 58: I/O error
    asyncpg.exceptions.LockNotAvailableError,  # 55P03: lock_timeout, NOWAIT
    asyncpg.exceptions.ObjectInUseError,  # 55006
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: a standby, or a failover
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,  # 25P03
)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or during, nearest first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_transient(exc: BaseException) -> bool:
    """A retry may cure it, also when a handler wrapped the database's error in its own."""
    return any(isinstance(e, TRANSIENT) for e in _chain(exc))


def _unknown_version(exc: BaseException) -> UnknownEventType | None:
    for e in _chain(exc):
        if isinstance(e, UnknownEventType):
            return e
    return None


def pg_text(value: str) -> str:
    """PostgreSQL ``text`` cannot hold NUL: make it visible instead of failing the batch."""
    return value.replace("\x00", "\\u0000")


@dataclass(frozen=True, slots=True)
class _Parsed:
    record: Record
    envelope: EventEnvelope | None
    error: str | None
    refused: str | None = None
    """Why the signature check refused it (``claimflow_events_refused_total`` reason)."""

    @property
    def message_id(self) -> str:
        if self.envelope is not None:
            return str(self.envelope.event_id)
        r = self.record
        return f"unparsable:{r.topic}:{r.partition}:{r.offset}"


@dataclass(slots=True)
class HeldRecord:
    """A held event read back from ``held_events``, in the shape of a consumer record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    key_id: str | None = None
    signature: str | None = None

    @property
    def headers(self) -> list[tuple[str, bytes]] | None:
        return signing.signed_headers(self.key_id, self.signature)


def _headers(record: Record) -> Sequence[tuple[str, bytes]] | None:
    headers: Sequence[tuple[str, bytes]] | None = getattr(record, "headers", None)
    return headers


def _parse(record: Record, verifier: EventVerifier | None = None) -> _Parsed:
    if record.value is None:
        return _Parsed(record, None, "empty message value (tombstone)")
    # A held event was verified when it was held (its signature is kept with it).
    signer: str | None = None
    if verifier is not None and not isinstance(record, HeldRecord):
        try:
            signer = verifier.check(record.value, _headers(record))
        except signing.Refused as refused:
            # Not parsed: a forgery must not claim the inbox under a genuine event's id.
            return _Parsed(record, None, f"refused: {refused}", refused=refused.code)
    try:
        envelope = EventEnvelope.read(record.value)
    except ValidationError as exc:
        return _Parsed(record, None, f"envelope invalid: {_short(exc)}")
    if verifier is not None and signer is not None:
        try:  # the parsed envelope, not only what a plain JSON reading saw
            verifier.check_envelope(signer, envelope.producer, envelope.event_type)
        except signing.Refused as refused:
            return _Parsed(record, None, f"refused: {refused}", refused=refused.code)
    return _Parsed(record, envelope, None)


def _short(exc: BaseException) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= 1000 else text[:997] + "..."


Outcomes = list[tuple[str, str]]


class IdempotentBatchConsumer:
    def __init__(
        self,
        *,
        service: str,
        schema: str,
        pool: asyncpg.Pool | None,
        handlers: Handlers,
        retry_backoff_s: float = 1.0,
        verifier: EventVerifier | None = None,
        prepare_batch: PrepareBatch | None = None,
    ) -> None:
        self.service = service
        self.prepare_batch = prepare_batch
        """Runs first in each batch's transaction with the batch's fresh events: a service
        takes there the locks its handlers will take, in its one lock order (one batch
        holds them all until it commits; taken event by event they could cross)."""
        self.verifier = verifier
        """Checks each message's signature and the signer's entitlement before anything
        else (``shared.messaging.signing``); None: no check (tools, tests)."""
        self.schema = schema
        self.pool = pool
        self.handlers: dict[HandlerKey, EventHandler] = {k: v for k, v in handlers.items()}
        self._versions: dict[str, list[int]] = {}
        for key in self.handlers:
            if isinstance(key, tuple):
                self._versions.setdefault(key[0], []).append(key[1])
        self.retry_backoff_s = retry_backoff_s
        self.last_success_at: float | None = None
        self.handled_total = 0

    def handler_for(self, event_type: str, version: int) -> tuple[EventHandler | None, str | None]:
        """The handler for an event, or (None, why it is held), or (None, None): ignored."""
        handler = self.handlers.get((event_type, version)) or self.handlers.get(event_type)
        if handler is not None:
            return handler, None
        known = self._versions.get(event_type)
        if known:
            return None, (
                f"no handler for {event_type!r} version {version} "
                f"(handled versions: {', '.join(map(str, sorted(known)))})"
            )
        return None, None

    async def handle_batch(self, records: Sequence[Record]) -> None:
        """Apply a fetched batch in one transaction; raise only when it should be re-read.

        Fast path: every handler runs straight in the batch's transaction and their outbox
        rows are written together at the end. If a handler fails for a reason a retry would
        not cure, the batch is rolled back and run again with a savepoint around each
        event, so only the poison event is dead-lettered.
        """
        await self._process(records)

    async def release_held(self, page: int = 500) -> int:
        """Apply held events that a handler now exists for; returns how many were tried.

        They go through the normal path (inbox, handler, savepoint), a page per
        transaction that also removes them from ``held_events``; one still without a
        handler is held again (with a new ``held_at``, after the cut-off: tried once).
        """
        assert self.pool is not None, "consumer used before the pool was created"
        cutoff = await self.pool.fetchval("SELECT now()")
        last: tuple[Any, str] | None = None
        tried = 0
        while True:
            rows = await self.pool.fetch(
                """SELECT message_id, event_type, version, source_topic, source_partition,
                          source_offset, source_key, raw_value, held_at, source_key_id,
                          source_signature
                   FROM held_events
                   WHERE held_at < $1
                     AND ($2::timestamptz IS NULL OR (held_at, message_id) > ($2, $3))
                   ORDER BY held_at, message_id LIMIT $4""",
                cutoff,
                last[0] if last else None,
                last[1] if last else "",
                page,
            )
            if not rows:
                break
            last = (rows[-1]["held_at"], rows[-1]["message_id"])
            ready = [r for r in rows if self.handler_for(r["event_type"], r["version"])[0]]
            if ready:
                await self._release(ready)
                tried += len(ready)
        if tried:
            log.info("%s: tried %d held events again", self.service, tried)
        return tried

    async def _release(self, ready: list[asyncpg.Record]) -> None:
        ids = [r["message_id"] for r in ready]

        async def unhold(conn: DbConnection) -> None:
            await conn.execute("DELETE FROM held_events WHERE message_id = ANY($1::text[])", ids)

        records = [
            HeldRecord(
                r["source_topic"],
                r["source_partition"],
                r["source_offset"],
                r["source_key"],
                r["raw_value"],
                r["source_key_id"],
                r["source_signature"],
            )
            for r in ready
        ]
        await self._process(records, before=unhold)

    async def _process(
        self,
        records: Sequence[Record],
        before: Callable[[DbConnection], Awaitable[None]] | None = None,
    ) -> None:
        assert self.pool is not None, "consumer used before the pool was created"
        parsed = [_parse(r, self.verifier) for r in records]
        try:
            async with self.pool.acquire() as conn:
                try:
                    outcomes, pending = await self._run(conn, parsed, isolate=False, before=before)
                except _NeedsIsolation:
                    # The first run's after-commit work is discarded with its transaction.
                    outcomes, pending = await self._run(conn, parsed, isolate=True, before=before)
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
        # Committed: now, and only now, the counters move.
        pending.run()
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
        self,
        conn: DbConnection,
        parsed: list[_Parsed],
        *,
        isolate: bool,
        before: Callable[[DbConnection], Awaitable[None]] | None,
    ) -> tuple[Outcomes, AfterCommit]:
        outcomes: Outcomes = []
        with after_commit_scope() as pending:
            async with conn.transaction():
                with buffering(OutboxBuffer(conn, self.schema)) as outbox:
                    if before is not None:
                        await before(conn)
                    fresh = await self._claim_in_inbox(conn, parsed)
                    if self.prepare_batch is not None:
                        await self.prepare_batch(
                            conn,
                            [
                                p.envelope
                                for p in parsed
                                if p.envelope is not None and p.message_id in fresh
                            ],
                        )
                    for item in parsed:
                        if item.message_id not in fresh:
                            outcomes.append((_type_of(item), "duplicate"))
                            continue
                        fresh.discard(item.message_id)  # a second copy in this batch is a dup
                        outcome = await self._apply(conn, item, isolate, outbox, pending)
                        outcomes.append((_type_of(item), outcome))
                    await outbox.flush()
        return outcomes, pending

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
            [pg_text(p.envelope.event_type) if p.envelope else None for p in parsed],
            [p.record.topic for p in parsed],
            [p.record.partition for p in parsed],
            [p.record.offset for p in parsed],
            # An event no handler takes (and none is held for) is recorded as ignored at
            # once: one statement for the batch instead of an UPDATE per such event
            # (payout ignores 5 of its 12 deliveries per claim).
            ["ignored" if self._ignores(p) else "handled" for p in parsed],
        )
        return {r["message_id"] for r in rows}

    def _ignores(self, item: _Parsed) -> bool:
        if item.envelope is None:
            return False
        return self.handler_for(item.envelope.event_type, item.envelope.version) == (None, None)

    async def _apply(
        self,
        conn: DbConnection,
        item: _Parsed,
        isolate: bool,
        outbox: OutboxBuffer,
        pending: AfterCommit,
    ) -> str:
        envelope = item.envelope
        if envelope is None:
            await self._dead_letter(conn, item, item.error or "unparsable", pending)
            if item.refused is not None:
                pending.add(EVENTS_REFUSED.labels(self.service, item.refused).inc)
            return "dead_lettered"
        handler, held_because = self.handler_for(envelope.event_type, envelope.version)
        if handler is None:
            if held_because is not None:
                await self._hold(conn, item, held_because, pending)
                return "held"
            return "ignored"  # recorded so when the inbox row was written
        if not isolate:
            try:
                await handler(conn, envelope)
            except Exception as exc:
                if is_transient(exc):
                    raise
                raise _NeedsIsolation from exc
            return "handled"
        staged_before = len(outbox.rows)
        mark = pending.mark()
        try:
            async with conn.transaction():  # a savepoint: a failed handler leaves no trace
                await handler(conn, envelope)
        except Exception as exc:
            if is_transient(exc):
                raise
            del outbox.rows[staged_before:]  # and neither do the events it staged
            pending.rollback_to(mark)  # nor the counters it meant to move
            unknown = _unknown_version(exc)
            if unknown is not None:
                await self._hold(conn, item, str(unknown), pending)
                return "held"
            reason = f"{type(exc).__name__}: {_short(exc)}"
            log.warning("%s: dead-lettering %s: %s", self.service, item.message_id, reason)
            await self._dead_letter(conn, item, reason, pending)
            return "dead_lettered"
        return "handled"

    async def _set_outcome(self, conn: DbConnection, item: _Parsed, outcome: str) -> None:
        await conn.execute(
            "UPDATE inbox SET outcome = $2 WHERE message_id = $1", item.message_id, outcome
        )

    async def _hold(
        self, conn: DbConnection, item: _Parsed, reason: str, pending: AfterCommit
    ) -> None:
        """Keep the event for later: out of the inbox, so that it can be applied then."""
        assert item.envelope is not None
        r = item.record
        log.warning("%s: holding %s: %s", self.service, item.message_id, reason)
        await conn.execute("DELETE FROM inbox WHERE message_id = $1", item.message_id)
        key_id, signature = _signature_of(r)
        await conn.execute(
            """INSERT INTO held_events (message_id, event_type, version, source_topic,
                   source_partition, source_offset, source_key, raw_value, reason,
                   source_key_id, source_signature)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
               ON CONFLICT (message_id) DO NOTHING""",
            item.message_id,
            pg_text(item.envelope.event_type),
            item.envelope.version,
            r.topic,
            r.partition,
            r.offset,
            r.key,
            r.value or b"",
            pg_text(reason),
            key_id,
            signature,
        )
        pending.add(HELD.labels(self.service).inc)

    async def _dead_letter(
        self, conn: DbConnection, item: _Parsed, reason: str, pending: AfterCommit
    ) -> None:
        try:
            async with conn.transaction():  # a savepoint: a failure here is not the end
                await self._write_dead_letter(conn, item, reason)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.exception(
                "%s: dead-lettering %s failed; recording a minimal dead letter",
                self.service,
                item.message_id,
            )
            await self._write_minimal_dead_letter(conn, item, reason, exc)
        await self._set_outcome(conn, item, "dead_lettered")
        pending.add(DEAD_LETTERS.labels(self.service).inc)

    async def _write_dead_letter(self, conn: DbConnection, item: _Parsed, reason: str) -> None:
        r = item.record
        peeked = item.envelope.event_type if item.envelope else _peek_type(r.value)
        letter = DeadLetter(
            dead_letter_id=uuid.uuid4(),
            service=self.service,
            reason=reason,
            source_topic=r.topic,
            source_partition=r.partition,
            source_offset=r.offset,
            source_key=r.key.decode("utf-8", "replace") if r.key is not None else None,
            event_id=item.envelope.event_id if item.envelope else None,
            event_type=peeked,
            raw_value=(r.value or b"").decode("utf-8", "replace"),
            failed_at=datetime.now(UTC),
        )
        # The raw value and key as bytes (bytea): whatever a producer sent, NUL included,
        # can be stored, and re-driven exactly as it was (with the signature it came with).
        key_id, signature = _signature_of(r)
        await conn.execute(
            """INSERT INTO dead_letters (dead_letter_id, source_topic, source_partition,
                   source_offset, event_id, event_type, reason, raw_value, source_key,
                   source_key_id, source_signature)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            letter.dead_letter_id,
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
            letter.event_id,
            pg_text(peeked) if peeked is not None else None,
            pg_text(reason),
            r.value or b"",
            r.key,
            key_id,
            signature,
        )
        await stage_raw(
            conn,
            self.schema,
            event_id=letter.dead_letter_id,
            topic=DEAD_LETTER,
            key=pg_text(letter.source_key) if letter.source_key is not None else None,
            event_type="dead_letter",
            payload=letter.model_dump_json(),  # JSON escapes NUL: fine in text
        )

    async def _write_minimal_dead_letter(
        self, conn: DbConnection, item: _Parsed, reason: str, failure: BaseException
    ) -> None:
        """Only what cannot fail: where it came from, the bytes, and both reasons."""
        r = item.record
        await conn.execute(
            """INSERT INTO dead_letters (dead_letter_id, source_topic, source_partition,
                   source_offset, reason, raw_value, source_key)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            uuid.uuid4(),
            r.topic,
            r.partition,
            r.offset,
            pg_text(
                f"dead-lettering failed ({type(failure).__name__}: {_short(failure)}); "
                f"original reason: {reason}"
            ),
            r.value or b"",
            r.key,
        )


def _signature_of(record: Record) -> tuple[str | None, str | None]:
    """The signature headers a record came with (both or neither), kept for a re-drive."""
    headers = _headers(record)
    key_id = signing.header(headers, signing.HEADER_KEY_ID)
    signature = signing.header(headers, signing.HEADER_SIGNATURE)
    if key_id is None or signature is None:
        return None, None
    return pg_text(key_id), pg_text(signature)


def _type_of(item: _Parsed) -> str:
    return pg_text(item.envelope.event_type) if item.envelope else "unparsable"


def _peek_type(value: bytes | None) -> str | None:
    """Best effort: the event type of a message whose envelope did not validate."""
    try:
        data: Any = json.loads(value or b"")
    except ValueError:
        return None
    found = data.get("event_type") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None
