"""Transactional outbox: events are rows written in the same transaction as the state
change, and a relay publishes them afterwards (at least once, in row order).

The database is the source of truth, the broker a replaceable transport: the relay
records the partition and offset the broker acknowledged for every row, keeps published
rows for ``retention_s``, and publishes again the rows a broker has lost (its log-end
offset fell below an offset it acknowledged, an acknowledged offset went backwards, or the
cluster id changed). The consumers' inboxes (keyed by event id) make the repeat harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka import errors as kafka_errors

from shared.contracts import EventEnvelope
from shared.db import DbConnection
from shared.messaging import signing
from shared.messaging.epochs import broker_cluster_id
from shared.metrics import (
    DEAD_LETTERS_OPEN,
    HELD_WAITING,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PUBLISHED,
    OUTBOX_QUARANTINED,
    OUTBOX_RELAY_FAILURES,
    OUTBOX_REPLAYED,
    OUTBOX_SEND_FAILURES,
)
from shared.wakeup import Wakeup

log = logging.getLogger(__name__)


def notify_channel(schema: str) -> str:
    return f"claimflow_outbox_{schema}"


OutboxRow = tuple[object, str, str | None, str, str, str | None, str | None]
"""event id, topic, key, event type, payload, signing key id, signature (signing.py)."""


@dataclass
class OutboxBuffer:
    """Outbox rows staged during one consumer batch, written together before its commit.

    While a buffer is active (``buffering``), ``stage_events`` on the same connection
    appends here instead of inserting: a batch of N events then costs one INSERT and one
    NOTIFY instead of N of each.
    """

    conn: DbConnection
    schema: str
    rows: list[OutboxRow] = field(default_factory=list)

    async def flush(self) -> None:
        if not self.rows:
            return
        await _insert(self.conn, self.schema, self.rows)
        self.rows.clear()


_active_buffer: ContextVar[OutboxBuffer | None] = ContextVar(
    "claimflow_outbox_buffer", default=None
)


@contextlib.contextmanager
def buffering(buffer: OutboxBuffer) -> Iterator[OutboxBuffer]:
    token = _active_buffer.set(buffer)
    try:
        yield buffer
    finally:
        _active_buffer.reset(token)


async def _insert(conn: DbConnection, schema: str, rows: list[OutboxRow]) -> None:
    # One statement for the whole batch: unnest() beats executemany's per-row round.
    event_ids, topics, keys, types, payloads, key_ids, signatures = zip(*rows, strict=True)
    await conn.execute(
        """INSERT INTO outbox (event_id, topic, message_key, event_type, payload, key_id,
                               signature)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                $6::text[], $7::text[])""",
        list(event_ids),
        list(topics),
        list(keys),
        list(types),
        list(payloads),
        list(key_ids),
        list(signatures),
    )
    # Delivered at commit, and only then: a rolled-back change wakes nobody.
    await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))


async def _stage(conn: DbConnection, schema: str, rows: list[OutboxRow]) -> None:
    if not rows:
        return
    buffer = _active_buffer.get()
    if buffer is not None and buffer.conn is conn:
        buffer.rows.extend(rows)
        return
    await _insert(conn, schema, rows)


async def stage_events(
    conn: DbConnection, schema: str, topic: str, envelopes: Iterable[EventEnvelope]
) -> None:
    """Write events to the outbox inside the caller's transaction, signed with the
    service's key when one is installed (``shared.messaging.signing``)."""
    key = signing.signer_for(schema)
    rows: list[OutboxRow] = []
    for e in envelopes:
        value = signing.envelope_bytes(e)
        signature = signing.sign(key, value) if key is not None else None
        rows.append(
            (
                e.event_id,
                topic,
                str(e.claim_id),
                e.event_type,
                value.decode(),
                key.key_id if key is not None else None,
                signature,
            )
        )
    await _stage(conn, schema, rows)


async def stage_raw(
    conn: DbConnection,
    schema: str,
    *,
    event_id: object,
    topic: str,
    key: str | None,
    event_type: str,
    payload: str,
) -> None:
    """Stage a message that is not an EventEnvelope (dead letters), signed like events."""
    signer = signing.signer_for(schema)
    signature = signing.sign(signer, payload.encode()) if signer is not None else None
    key_id = signer.key_id if signer is not None else None
    await _stage(conn, schema, [(event_id, topic, key, event_type, payload, key_id, signature)])


# Errors that belong to one record, not to the broker as a whole: counting them against
# the row is fair even when nothing else was sent in the same cycle.
_ROW_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.CorruptRecordException,
    kafka_errors.UnsupportedForMessageFormatError,
    ValueError,
    TypeError,
)


# Errors of the broker's own state (its storage, leadership, a timeout): never the row's
# fault, even when other rows went through in the same cycle. A memory tansu just
# restarted answers some produces with UnknownError for a while (its storage refused a
# batch file that existed); counted, they quarantined healthy rows (stop 11's campaign).
_BROKER_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.UnknownError,
    kafka_errors.KafkaStorageError,
    kafka_errors.NotLeaderForPartitionError,
    kafka_errors.LeaderNotAvailableError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.KafkaConnectionError,
    asyncio.TimeoutError,
)


def _counts_against_row(error: BaseException, others_went: bool) -> bool:
    """Whether a failed send is the row's own: a record-level error always; any other
    error only when the broker took other rows in the same cycle, and never one of the
    broker's own state."""
    if isinstance(error, _ROW_ERRORS):
        return True
    return others_went and not isinstance(error, _BROKER_ERRORS)


class RelayOutage(Exception):
    """The broker took none of the rows and no failure was the rows' own fault."""


class OutboxRelay:
    """Publishes unpublished outbox rows in batches, woken by NOTIFY, polling as fallback.

    One relay per schema publishes at a time (an advisory lock), so per-claim order in
    the outbox is the order on the topic. A row that fails to send is retried in the
    next cycle while the rows of other claims flow on; the rows of *its* claim wait
    behind it (order). After ``max_attempts`` failures of its own it is quarantined:
    set aside with the reason, dead-lettered (``dead_letters`` kind ``outbox``), counted
    (``claimflow_outbox_quarantined_total``), and re-drivable (``claimflow dead-letters
    redrive``). A cycle in which the broker took nothing for reasons not the rows' own
    (the broker is down) counts against no row: it is an outage, and ``last_progress_at``
    stays where it was, so ``/health`` and ``OutboxStuck`` see it.
    """

    def __init__(
        self,
        *,
        pool: asyncpg.Pool,
        dsn: str,
        schema: str,
        bootstrap_servers: str,
        batch_size: int = 1000,
        poll_interval_s: float = 1.0,
        max_attempts: int = 5,
        send_timeout_s: float = 15.0,
        retention_s: float = 7 * 24 * 3600.0,
        broker_check_interval_s: float = 2.0,
        client_security: Mapping[str, Any] | None = None,
    ) -> None:
        """``client_security``: aiokafka's security keywords for the broker
        (shared/messaging/kafka_security.py; none: PLAINTEXT)."""
        self._pool = pool
        self._security = dict(client_security or {})
        self._schema = schema
        self._bootstrap = bootstrap_servers
        self._batch_size = batch_size
        self._poll_interval = poll_interval_s
        self._max_attempts = max_attempts
        self._send_timeout_s = send_timeout_s
        self._retention_s = retention_s
        self._broker_check_interval_s = broker_check_interval_s
        self._last_broker_check = 0.0
        self._last_prune = 0.0
        self._suspect_broker = True
        """Check the broker for lost messages before the next publish (at start and after
        a failed cycle: the broker may have restarted meanwhile)."""
        self._checker: AIOKafkaConsumer | None = None
        self._verify_since: datetime | None = None
        """After a loss was found: rows published since then are read back (verify_readable)."""
        self._verify_until = 0.0
        self._last_verify = 0.0
        self._verified: set[tuple[int, int]] = set()
        """(row id, offset) a reader found in place in this window: not read for again."""
        self._wake = Wakeup(dsn, notify_channel(schema))
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self.last_progress_at = time.monotonic()
        """When a cycle last completed without error (not merely ran)."""
        self.last_error: str | None = None
        self.published_total = 0
        self.quarantined_total = 0
        self.replayed_total = 0

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            linger_ms=2,
            max_batch_size=1024 * 1024,
            request_timeout_ms=int(self._send_timeout_s * 1000),
            **self._security,
        )
        await self._producer.start()
        # No group: only asks the broker for log-end offsets and its cluster id.
        self._checker = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=int(self._send_timeout_s * 1000),
            **self._security,
        )
        await self._checker.start()
        self.last_progress_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._wake.close()
        if self._checker:
            await self._checker.stop()
        if self._producer:
            await self._producer.stop()

    async def _run(self) -> None:
        while True:
            failed = False
            try:
                await self._wake.listen()
                now = time.monotonic()
                if self._suspect_broker or (
                    now - self._last_broker_check >= self._broker_check_interval_s
                ):
                    try:
                        await self.check_broker()
                    except (asyncio.CancelledError, asyncpg.PostgresError, OSError):
                        raise
                    except Exception as exc:
                        # Publishing goes on: a send acknowledged below a mark still
                        # reveals a lost log (_record_landed); the check runs again
                        # before the next batch.
                        log.warning("%s: broker check failed: %r", self._schema, exc)
                while await self.publish_batch() == self._batch_size:
                    pass
                if self._verify_since is not None and now - self._last_verify >= VERIFY_EVERY_S:
                    await self._verify_bounded()
                if now - self._last_prune >= PRUNE_INTERVAL_S:
                    await self.prune()
                    self._last_prune = now
                self.last_progress_at = time.monotonic()
                self.last_error = None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failed = True
                self._suspect_broker = True
                self.last_error = f"{type(exc).__name__}: {exc}"
                OUTBOX_RELAY_FAILURES.labels(self._schema).inc()
                log.warning("%s: outbox relay cycle failed; retrying: %s", self._schema, exc)
            # Whatever happened: the backlog gauges are what OutboxStuck alerts on, and
            # they matter most while publishing fails.
            try:
                await self.refresh_gauges()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: outbox gauges not refreshed: %s", self._schema, exc)
            if failed:
                await asyncio.sleep(self._poll_interval)
            await self._wake.wait(self._poll_interval)

    async def _hold_outbox(self, conn: DbConnection) -> bool:
        """Take this schema's outbox for the transaction, or learn another relay has it:
        one relay publishes or puts back rows at a time, so offsets are recorded in order."""
        locked: bool = await conn.fetchval(
            "SELECT pg_try_advisory_xact_lock(hashtext('claimflow.outbox.' || $1::text))",
            self._schema,
        )
        return locked

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many rows were published.

        Raises RelayOutage when the broker took nothing and it was not the rows' fault.
        """
        assert self._producer is not None
        outage: str | None = None
        replays: list[tuple[str, int]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._hold_outbox(conn):
                return 0
            rows = await conn.fetch(
                """SELECT id, topic, message_key, payload, attempts, key_id, signature FROM outbox
                   WHERE published_at IS NULL AND quarantined_at IS NULL
                   ORDER BY id LIMIT $1""",
                self._batch_size,
            )
            if not rows:
                return 0
            sent, failures = await self._send(rows)
            published = [r for r, _ in sent]
            if published:
                replays = await self._record_landed(conn, sent)
            # A failure counts against its row when it is the row's own, or when the
            # broker took other rows in the same cycle (so the broker is up).
            counted = [(r, e) for r, e in failures if _counts_against_row(e, bool(published))]
            quarantined: list[asyncpg.Record] = []
            if counted:
                quarantined = await self._count_failures(conn, counted)
            if failures and not counted:
                first = failures[0][1]
                outage = (
                    f"broker took none of {len(failures)} rows: {type(first).__name__}: {first}"
                )
        # Committed: the counters move now, not inside the transaction.
        for q in quarantined:
            OUTBOX_QUARANTINED.labels(self._schema, q["topic"]).inc()
            log.error(
                "%s: outbox row %d to %s quarantined after %d failed sends "
                "(dead-lettered; `claimflow dead-letters redrive` sends it again)",
                self._schema,
                q["id"],
                q["topic"],
                q["attempts"],
            )
        self.quarantined_total += len(quarantined)
        for r in published:
            OUTBOX_PUBLISHED.labels(self._schema, r["topic"]).inc()
        if failures:
            OUTBOX_SEND_FAILURES.labels(self._schema).inc(len(failures))
        self.published_total += len(published)
        self._count_replays(replays)
        if outage is not None:
            raise RelayOutage(outage)
        return len(published)

    async def _send(
        self, rows: list[asyncpg.Record]
    ) -> tuple[list[tuple[asyncpg.Record, Any]], list[tuple[asyncpg.Record, BaseException]]]:
        """Send every row that may go now; (sent, failed)."""
        assert self._producer is not None
        waiting: list[tuple[asyncpg.Record, asyncio.Future[object]]] = []
        failures: list[tuple[asyncpg.Record, BaseException]] = []
        held_keys: set[str] = set()  # a claim whose earlier row failed: the rest waits
        for r in rows:
            key = r["message_key"]
            if key is not None and key in held_keys:
                continue
            if key is not None and r["attempts"] > 0:
                held_keys.add(key)  # it goes first, alone; the rest next cycle
            try:
                # send() only enqueues; waiting on all the futures together lets the
                # producer batch per partition instead of one round trip per event.
                future = await self._producer.send(
                    r["topic"],
                    value=r["payload"].encode(),
                    key=key.encode() if key else None,
                    headers=signing.signed_headers(r["key_id"], r["signature"]),
                )
            except Exception as exc:  # refused before it was enqueued (e.g. too large)
                failures.append((r, exc))
                if key is not None:
                    held_keys.add(key)
                continue
            waiting.append((r, future))
        results = await asyncio.gather(*(f for _, f in waiting), return_exceptions=True)
        sent: list[tuple[asyncpg.Record, Any]] = []  # (row, aiokafka RecordMetadata)
        for (r, _), result in zip(waiting, results, strict=True):
            if isinstance(result, BaseException):
                failures.append((r, result))
            else:
                sent.append((r, result))
        return sent, failures

    async def _count_failures(
        self, conn: DbConnection, failures: list[tuple[asyncpg.Record, BaseException]]
    ) -> list[asyncpg.Record]:
        """Count each failure against its row; returns the rows quarantined now."""
        quarantined = await conn.fetch(
            """UPDATE outbox o
               SET attempts = o.attempts + 1,
                   last_error = f.error,
                   quarantined_at = CASE WHEN o.attempts + 1 >= $3 THEN now() END
               FROM unnest($1::bigint[], $2::text[]) AS f(id, error)
               WHERE o.id = f.id
               RETURNING o.id, o.topic, o.attempts, o.quarantined_at""",
            [r["id"] for r, _ in failures],
            [_reason(e) for _, e in failures],
            self._max_attempts,
        )
        gone = [q for q in quarantined if q["quarantined_at"] is not None]
        ids = [q["id"] for q in gone]
        for r, exc in failures:
            log.warning(
                "%s: outbox row %d to %s failed to send: %s",
                self._schema,
                r["id"],
                r["topic"],
                _reason(exc),
            )
        if not ids:
            return []
        await conn.execute(
            """INSERT INTO dead_letters (dead_letter_id, kind, outbox_id, source_topic,
                   source_key, event_id, event_type, reason, raw_value)
               SELECT gen_random_uuid(), 'outbox', id, topic, convert_to(message_key, 'UTF8'),
                      event_id, event_type,
                      format('outbox row quarantined after %s failed sends: %s',
                             attempts, last_error),
                      convert_to(payload, 'UTF8')
               FROM outbox WHERE id = ANY($1::bigint[])""",
            ids,
        )
        return gone

    # --- where the broker put each row, and what it lost ----------------------------

    async def _record_landed(
        self, conn: DbConnection, sent: list[tuple[asyncpg.Record, Any]]
    ) -> list[tuple[str, int]]:
        """Mark the rows published with the partition and offset the broker acknowledged,
        and move the per-partition marks. An acknowledged offset at or below one already
        acknowledged means the partition's log was lost and begun again: its earlier rows
        are put back (returned as (reason, rows) for the counters)."""
        lowest: dict[tuple[str, int], int] = {}
        highest: dict[tuple[str, int], int] = {}
        for r, meta in sent:
            tp = (r["topic"], int(meta.partition))
            offset = int(meta.offset)
            lowest[tp] = min(offset, lowest.get(tp, offset))
            highest[tp] = max(offset, highest.get(tp, offset))
        marks = {
            (m["topic"], m["partition"]): m["max_offset"]
            for m in await conn.fetch(
                """SELECT topic, partition, max_offset FROM outbox_broker_marks
                   WHERE topic = ANY($1::text[])""",
                sorted({t for t, _ in lowest}),
            )
        }
        replays: list[tuple[str, int]] = []
        for tp, low in sorted(lowest.items()):
            mark = marks.get(tp)
            if mark is not None and low <= mark:
                # Offsets in a partition only grow: the log this mark was taken on is
                # gone. Every row recorded on it goes again (the batch just sent is
                # not recorded yet, so it is not among them).
                n = await self._put_back(
                    conn,
                    "offset_regressed",
                    topic=tp[0],
                    partition=tp[1],
                    from_offset=0,
                    detail=f"broker acknowledged offset {low}, at or below {mark} "
                    "acknowledged before",
                )
                replays.append(("offset_regressed", n))
        await conn.execute(
            """UPDATE outbox o
               SET published_at = now(), published_partition = f.p, published_offset = f.o,
                   -- Failed sends in a row: a row published again after a broker lost it
                   -- starts from none (they had added up over replays and quarantined it).
                   attempts = 0
               FROM unnest($1::bigint[], $2::int[], $3::bigint[]) AS f(id, p, o)
               WHERE o.id = f.id""",
            [r["id"] for r, _ in sent],
            [int(meta.partition) for _, meta in sent],
            [int(meta.offset) for _, meta in sent],
        )
        tps = list(highest)
        await conn.execute(
            """INSERT INTO outbox_broker_marks AS m (topic, partition, max_offset, cycle_offset)
               SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[])
               ON CONFLICT (topic, partition) DO UPDATE
                   SET max_offset = greatest(m.max_offset, excluded.max_offset),
                       cycle_offset = CASE WHEN excluded.max_offset > m.max_offset
                                           THEN excluded.cycle_offset ELSE m.cycle_offset END,
                       updated_at = now()""",
            [t for t, _ in tps],
            [p for _, p in tps],
            [highest[tp] for tp in tps],
            [lowest[tp] for tp in tps],
        )
        return replays

    async def _put_back(
        self,
        conn: DbConnection,
        reason: str,
        *,
        topic: str | None,
        partition: int | None,
        from_offset: int | None,
        detail: str,
    ) -> int:
        """Rows recorded at or after ``from_offset`` of the partition (all recorded rows
        when topic is None) become unpublished again; the relay sends them in id order."""
        n: int = await conn.fetchval(
            """WITH back AS (
                   UPDATE outbox SET published_at = NULL, published_partition = NULL,
                                     published_offset = NULL, replays = replays + 1
                   WHERE published_offset IS NOT NULL
                     AND ($1::text IS NULL OR (topic = $1 AND published_partition = $2
                                               AND published_offset >= $3))
                   RETURNING 1)
               SELECT count(*) FROM back""",
            topic,
            partition,
            from_offset,
        )
        if topic is None:
            await conn.execute("DELETE FROM outbox_broker_marks")
        elif from_offset:
            await conn.execute(
                """UPDATE outbox_broker_marks
                   SET max_offset = $3, cycle_offset = least(cycle_offset, $3), updated_at = now()
                   WHERE topic = $1 AND partition = $2""",
                topic,
                partition,
                from_offset - 1,
            )
        else:
            await conn.execute(
                "DELETE FROM outbox_broker_marks WHERE topic = $1 AND partition = $2",
                topic,
                partition,
            )
        await conn.execute(
            """INSERT INTO outbox_replays (reason, topic, partition, from_offset, rows, detail)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            reason,
            topic,
            partition,
            from_offset,
            n,
            detail,
        )
        if reason in VERIFY_AFTER:
            if self._verify_since is None:
                # Rows sent in the cycle that found the loss, and after it, are checked too.
                self._verify_since = await conn.fetchval(
                    "SELECT now() - make_interval(secs => $1)", VERIFY_LOOKBACK_S
                )
            self._verify_until = time.monotonic() + VERIFY_WINDOW_S
        where = f"{topic}[{partition}] from offset {from_offset}" if topic else "every topic"
        log.warning(
            "%s: the broker lost acknowledged messages (%s: %s); %d outbox rows of %s "
            "put back for publishing",
            self._schema,
            reason,
            detail,
            n,
            where,
        )
        self._wake.set()
        return n

    async def _verify_bounded(self) -> None:
        """verify_readable, never for longer than VERIFY_TIMEOUT_S and never failing the
        cycle: a read-back that hangs (tansu on S3 has left a reader waiting) must not
        stop the relay from publishing."""
        try:
            await asyncio.wait_for(self.verify_readable(), VERIFY_TIMEOUT_S)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: reading back published rows failed: %r", self._schema, exc)

    async def verify_readable(self) -> int:
        """Read back, from each partition's beginning as a consumer reads, what this relay
        published since the broker was found to have lost messages, and put back every
        row a reader does not find at the offset the broker acknowledged for it. Returns
        how many were put back.

        Why: right after a memory broker's restart tansu has been seen to acknowledge a
        batch at offsets an earlier batch already held (its produce then failed with
        AlreadyExists on the batch file, and the offsets it handed out next overlapped the
        earlier batch): a sequential reader passes over the later batch's first records,
        so events acknowledged and recorded as published reached no consumer (chaos
        campaign of stop 11, docs/resilience.md). Only in the window after a loss."""
        since = self._verify_since
        if since is None:
            return 0
        self._last_verify = time.monotonic()
        if self._last_verify > self._verify_until:
            self._verify_since = None  # this is the window's last pass
        rows = [
            r
            for r in await self._pool.fetch(
                """SELECT id, event_id, topic, published_partition AS partition,
                          published_offset AS "offset"
                   FROM outbox WHERE published_at >= $1 AND published_offset IS NOT NULL""",
                since,
            )
            if (r["id"], r["offset"]) not in self._verified
        ]
        if self._verify_since is None:
            self._verified = set()
        if not rows:
            return 0
        highest: dict[TopicPartition, int] = {}
        for r in rows:
            tp = TopicPartition(r["topic"], r["partition"])
            highest[tp] = max(r["offset"], highest.get(tp, -1))
        found, reached = await self._read_back(highest)
        unreadable = []
        for r in rows:
            if reached.get(TopicPartition(r["topic"], r["partition"]), -1) < r["offset"]:
                continue  # not read as far as this: next pass
            if found.get((r["topic"], r["partition"], r["offset"])) == str(r["event_id"]):
                if self._verify_since is not None:
                    self._verified.add((r["id"], r["offset"]))
            else:
                unreadable.append(r)
        if not unreadable:
            return 0
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._hold_outbox(conn):
                return 0
            n: int = await conn.fetchval(
                """WITH back AS (
                       UPDATE outbox o SET published_at = NULL, published_partition = NULL,
                                           published_offset = NULL, replays = replays + 1
                       FROM unnest($1::bigint[], $2::bigint[]) AS u(id, "offset")
                       WHERE o.id = u.id AND o.published_offset = u."offset"
                       RETURNING 1)
                   SELECT count(*) FROM back""",
                [r["id"] for r in unreadable],
                [r["offset"] for r in unreadable],
            )
            first = unreadable[0]
            detail = (
                f"{len(unreadable)} acknowledged rows not found at their offsets by a reader, "
                f"e.g. {first['topic']}[{first['partition']}] offset {first['offset']}"
            )
            await conn.execute(
                """INSERT INTO outbox_replays (reason, topic, partition, from_offset, rows, detail)
                   VALUES ('unreadable', NULL, NULL, NULL, $1, $2)""",
                n,
                detail,
            )
        log.warning("%s: %s; %d put back for publishing", self._schema, detail, n)
        self._count_replays([("unreadable", n)])
        self._wake.set()
        return n

    async def _read_back(
        self, highest: Mapping[TopicPartition, int], timeout_s: float = 10.0
    ) -> tuple[dict[tuple[str, int, int], str | None], dict[TopicPartition, int]]:
        """Each partition read from its beginning up to ``highest`` (or as far as it goes
        within the timeout): the event id at each offset read, and the offset reached."""
        reader = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            request_timeout_ms=int(self._send_timeout_s * 1000),
            **self._security,
        )
        found: dict[tuple[str, int, int], str | None] = {}
        reached: dict[TopicPartition, int] = {}
        await reader.start()
        try:
            tps = list(highest)
            reader.assign(tps)
            await reader.seek_to_beginning(*tps)
            deadline = time.monotonic() + timeout_s
            empty = 0
            while time.monotonic() < deadline and empty < 3:
                if all(reached.get(tp, -1) >= end for tp, end in highest.items()):
                    break
                batches = await reader.getmany(timeout_ms=200, max_records=5000)
                empty = 0 if batches else empty + 1
                for tp, records in batches.items():
                    for record in records:
                        found[(tp.topic, tp.partition, record.offset)] = _event_id_of(record.value)
                        reached[tp] = max(record.offset, reached.get(tp, -1))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader.stop(), 5.0)
        return found, reached

    def _count_replays(self, replays: list[tuple[str, int]]) -> None:
        for reason, n in replays:
            OUTBOX_REPLAYED.labels(self._schema, reason).inc(n)
            self.replayed_total += n

    async def _cluster_id(self) -> str | None:
        assert self._checker is not None
        return await broker_cluster_id(self._checker._client)

    async def check_broker(self) -> int:
        """Compare the broker with what it acknowledged to this outbox; put back the rows
        it lost. Returns how many rows were put back."""
        assert self._checker is not None
        timeout = self._send_timeout_s
        cluster_id = await asyncio.wait_for(self._cluster_id(), timeout)
        metadata = await asyncio.wait_for(self._checker._client.fetch_all_metadata(), timeout)
        replays: list[tuple[str, int]] = []
        async with self._pool.acquire() as conn, conn.transaction():
            if not await self._hold_outbox(conn):
                return 0
            if cluster_id is not None:
                known = await conn.fetchval("SELECT cluster_id FROM outbox_broker_cluster")
                if known is not None and known != cluster_id:
                    n = await self._put_back(
                        conn,
                        "cluster_changed",
                        topic=None,
                        partition=None,
                        from_offset=None,
                        detail=f"cluster id {cluster_id!r}, was {known!r}",
                    )
                    replays.append(("cluster_changed", n))
                await conn.execute(
                    """INSERT INTO outbox_broker_cluster (cluster_id) VALUES ($1)
                       ON CONFLICT (singleton) DO UPDATE
                           SET cluster_id = excluded.cluster_id, seen_at = now()""",
                    cluster_id,
                )
            marks = await conn.fetch(
                "SELECT topic, partition, max_offset, cycle_offset FROM outbox_broker_marks"
            )
            # A topic or partition missing now (a memory broker between its restart and
            # the topics' creation) is checked once it is back, at offset 0.
            present = [
                m
                for m in marks
                if m["partition"] in (metadata.partitions_for_topic(m["topic"]) or ())
            ]
            tps = [TopicPartition(m["topic"], m["partition"]) for m in present]
            ends: dict[TopicPartition, int] = (
                await asyncio.wait_for(self._checker.end_offsets(tps), timeout) if tps else {}
            )
            for m in present:
                end = ends.get(TopicPartition(m["topic"], m["partition"]))
                # Below the lowest offset of the latest cycle, not at or below its
                # highest: tansu reports the log end as its last record batch's base
                # offset + 1 on memory storage, and as low as that base offset on S3.
                # An empty log never holds what it acknowledged (on S3 a log of one
                # batch at 0 also reads 0: its rows go once more, harmlessly).
                if end is not None and (end < m["cycle_offset"] or end == 0):
                    n = await self._put_back(
                        conn,
                        "log_end_below_mark",
                        topic=m["topic"],
                        partition=m["partition"],
                        from_offset=int(end),
                        detail=f"log-end offset {end}, offsets {m['cycle_offset']}.."
                        f"{m['max_offset']} acknowledged",
                    )
                    replays.append(("log_end_below_mark", n))
        self._last_broker_check = time.monotonic()
        self._suspect_broker = False
        self._count_replays(replays)
        return sum(n for _, n in replays)

    async def prune(self) -> int:
        """Delete published rows older than the retention (a bounded batch per call)."""
        n: int = await self._pool.fetchval(
            """WITH gone AS (
                   DELETE FROM outbox WHERE id IN (
                       SELECT id FROM outbox
                       WHERE published_at < now() - make_interval(secs => $1)
                       ORDER BY id LIMIT 5000)
                   RETURNING 1)
               SELECT count(*) FROM gone""",
            self._retention_s,
        )
        return n

    async def refresh_gauges(self) -> None:
        """Backlog, oldest age, held events and open dead letters: one round trip."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT count(*) AS n,
                          coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age,
                          (SELECT count(*) FROM held_events) AS held,
                          (SELECT count(*) FROM dead_letters
                            WHERE redriven_at IS NULL AND kind = 'consumed') AS consumed,
                          (SELECT count(*) FROM dead_letters
                            WHERE redriven_at IS NULL AND kind = 'outbox') AS quarantined
                   FROM outbox WHERE published_at IS NULL AND quarantined_at IS NULL"""
            )
        assert row is not None
        OUTBOX_BACKLOG.labels(self._schema).set(row["n"])
        OUTBOX_OLDEST_AGE.labels(self._schema).set(float(row["age"]))
        HELD_WAITING.labels(self._schema).set(row["held"])
        DEAD_LETTERS_OPEN.labels(self._schema, "consumed").set(row["consumed"])
        DEAD_LETTERS_OPEN.labels(self._schema, "outbox").set(row["quarantined"])


PRUNE_INTERVAL_S = 60.0
VERIFY_WINDOW_S = 60.0
"""After a loss was found, how long what the relay publishes is read back (verify_readable)."""
VERIFY_EVERY_S = 4.0
VERIFY_LOOKBACK_S = 10.0
VERIFY_TIMEOUT_S = 20.0
VERIFY_AFTER = frozenset({"cluster_changed", "offset_regressed"})
"""The losses after which the relay reads back: a replaced log (a memory broker's restart,
where tansu was seen to hand out overlapping offsets). Not after ``log_end_below_mark``
alone: tansu on S3 reports log ends below the truth often enough to keep the read-back
— every partition from its beginning, from S3 — running all the time."""
"""Rows published this long before the loss was found are read back too."""


def _event_id_of(value: bytes | None) -> str | None:
    try:
        return str(json.loads(value or b"")["event_id"])
    except (ValueError, KeyError, TypeError):
        return None


async def replay_since(conn: DbConnection, schema: str, since: datetime, *, by: str) -> int:
    """An operator's replay: every row of ``schema``'s outbox published at or after
    ``since`` is published again (consumers' inboxes drop what they already had).
    ``conn`` is any connection; the schema is named explicitly."""
    if not schema.isidentifier() or not schema.islower():
        raise ValueError(f"invalid schema name {schema!r}")
    async with conn.transaction():
        n: int = await conn.fetchval(
            f"""WITH back AS (
                    UPDATE "{schema}".outbox
                    SET published_at = NULL, published_partition = NULL,
                        published_offset = NULL, replays = replays + 1
                    WHERE published_at >= $1
                    RETURNING 1)
                SELECT count(*) FROM back""",
            since,
        )
        await conn.execute(
            f"""INSERT INTO "{schema}".outbox_replays (reason, rows, detail)
                VALUES ('operator', $1, $2)""",
            n,
            f"published since {since.isoformat()}, asked by {by}",
        )
        await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))
    return n


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\x00", "\\u0000")
    return text if len(text) <= 1000 else text[:997] + "..."
