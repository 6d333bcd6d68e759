"""Transactional outbox: events are rows written in the same transaction as the state
change, and a relay publishes them afterwards (at least once, in row order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import asyncpg
from aiokafka import AIOKafkaProducer

from shared.contracts import EventEnvelope
from shared.db import DbConnection
from shared.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE, OUTBOX_PUBLISHED

log = logging.getLogger(__name__)


def notify_channel(schema: str) -> str:
    return f"claimflow_outbox_{schema}"


@dataclass
class OutboxBuffer:
    """Outbox rows staged during one consumer batch, written together before its commit.

    While a buffer is active (``buffering``), ``stage_events`` on the same connection
    appends here instead of inserting: a batch of N events then costs one INSERT and one
    NOTIFY instead of N of each.
    """

    conn: DbConnection
    schema: str
    rows: list[tuple[object, str, str | None, str, str]] = field(default_factory=list)

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


async def _insert(
    conn: DbConnection, schema: str, rows: list[tuple[object, str, str | None, str, str]]
) -> None:
    # One statement for the whole batch: unnest() beats executemany's per-row round.
    event_ids, topics, keys, types, payloads = zip(*rows, strict=True)
    await conn.execute(
        """INSERT INTO outbox (event_id, topic, message_key, event_type, payload)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[])""",
        list(event_ids),
        list(topics),
        list(keys),
        list(types),
        list(payloads),
    )
    # Delivered at commit, and only then: a rolled-back change wakes nobody.
    await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))


async def _stage(
    conn: DbConnection, schema: str, rows: list[tuple[object, str, str | None, str, str]]
) -> None:
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
    """Write events to the outbox inside the caller's transaction."""
    await _stage(
        conn,
        schema,
        [
            (e.event_id, topic, str(e.claim_id), e.event_type, e.model_dump_json())
            for e in envelopes
        ],
    )


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
    """Stage a message that is not an EventEnvelope (dead letters)."""
    await _stage(conn, schema, [(event_id, topic, key, event_type, payload)])


class OutboxRelay:
    """Publishes unpublished outbox rows in batches, woken by NOTIFY, polling as fallback.

    One relay per schema publishes at a time (an advisory lock), so per-claim order in
    the outbox is the order on the topic.
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
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self._schema = schema
        self._bootstrap = bootstrap_servers
        self._batch_size = batch_size
        self._poll_interval = poll_interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None
        self._listen_conn: DbConnection | None = None
        self.last_cycle_at = time.monotonic()
        self.published_total = 0

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            linger_ms=2,
            max_batch_size=1024 * 1024,
            request_timeout_ms=15000,
        )
        await self._producer.start()
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close()
        if self._producer:
            await self._producer.stop()

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        if self._listen_conn is not None and not self._listen_conn.is_closed():
            return
        try:
            self._listen_conn = await asyncpg.connect(self._dsn)
            await self._listen_conn.add_listener(
                notify_channel(self._schema), lambda *_: self._wake.set()
            )
        except (OSError, asyncpg.PostgresError) as exc:
            self._listen_conn = None
            log.warning("outbox relay cannot LISTEN (polling only for now): %s", exc)

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
                while await self.publish_batch() == self._batch_size:
                    pass
                await self._refresh_backlog()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay cycle failed; retrying")
                await asyncio.sleep(self._poll_interval)
            self.last_cycle_at = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
            self._wake.clear()

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many rows were published."""
        assert self._producer is not None
        async with self._pool.acquire() as conn, conn.transaction():
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext('claimflow.outbox.' || $1::text))",
                self._schema,
            )
            if not locked:
                return 0
            rows = await conn.fetch(
                """SELECT id, topic, message_key, payload FROM outbox
                   WHERE published_at IS NULL ORDER BY id LIMIT $1""",
                self._batch_size,
            )
            if not rows:
                return 0
            # send() only enqueues; waiting on all the futures together lets the
            # producer batch per partition instead of one round trip per event.
            futures = [
                await self._producer.send(
                    r["topic"],
                    value=r["payload"].encode(),
                    key=r["message_key"].encode() if r["message_key"] else None,
                )
                for r in rows
            ]
            await asyncio.gather(*futures)
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                [r["id"] for r in rows],
            )
        for r in rows:
            OUTBOX_PUBLISHED.labels(self._schema, r["topic"]).inc()
        self.published_total += len(rows)
        return len(rows)

    async def _refresh_backlog(self) -> None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                """SELECT count(*) AS n,
                          coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
                   FROM outbox WHERE published_at IS NULL"""
            )
        assert row is not None
        OUTBOX_BACKLOG.labels(self._schema).set(row["n"])
        OUTBOX_OLDEST_AGE.labels(self._schema).set(float(row["age"]))
