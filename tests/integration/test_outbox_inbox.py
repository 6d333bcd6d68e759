"""The reliability mechanism on the real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.contracts import EventEnvelope
from shared.contracts.topics import DEAD_LETTER, REVIEW_EVENTS
from shared.db import DbConnection
from shared.devstack.stack import StackConfig, StackPorts, create_topics, start_broker, stop_pid
from shared.messaging.after_commit import after_commit, after_commit_scope
from shared.messaging.consumer import EventHandler, IdempotentBatchConsumer, TransientError
from shared.messaging.outbox import OutboxRelay, stage_events
from shared.messaging.redrive import OpenLetter, RedriveRefused, list_open, redrive
from shared.messaging.signing import envelope_bytes
from shared.metrics import REGISTRY
from tests.conftest import PORT_BASE
from tests.integration import helpers
from tests.integration.helpers import Rec, wait_for
from tests.kafka_helpers import find_on_topic

pytestmark = pytest.mark.integration


def decided(claim_id: uuid.UUID | None = None) -> EventEnvelope:
    return helpers.decided(claim_id=claim_id)


def rec(value: bytes | None, offset: int) -> Rec:
    return Rec(REVIEW_EVENTS, 0, offset, b"k", value)


@pytest.fixture
async def schema(infra: StackConfig, tmp_path: Path) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    async with helpers.scratch_schema(
        infra.dsn, tmp_path, "CREATE TABLE effects (event_id uuid, claim_id uuid);"
    ) as made:
        yield made


async def test_rolled_back_change_leaves_no_event(schema: tuple[str, asyncpg.Pool]) -> None:
    name, pool = schema
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await stage_events(conn, name, REVIEW_EVENTS, [decided()])
                raise RuntimeError("the state change failed")
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0


async def test_relay_publishes_on_notify_not_only_by_polling(
    infra: StackConfig, schema: tuple[str, asyncpg.Pool]
) -> None:
    name, pool = schema
    relay = OutboxRelay(
        pool=pool, dsn=infra.dsn, schema=name, bootstrap_servers=infra.bootstrap, poll_interval_s=60
    )  # polling alone would take a minute
    await relay.start()
    try:
        await asyncio.sleep(0.5)  # let the relay LISTEN
        envelope = decided()
        async with pool.acquire() as conn, conn.transaction():
            await stage_events(conn, name, REVIEW_EVENTS, [envelope])
        found = await find_on_topic(
            infra.bootstrap,
            REVIEW_EVENTS,
            lambda m: m.get("event_id") == str(envelope.event_id),
            timeout=10,
        )
        assert found["claim_id"] == str(envelope.claim_id)
        # The row is marked after the broker acknowledged, which can be a moment after
        # a consumer already sees the message.
        for _ in range(50):
            published = await pool.fetchval(
                "SELECT published_at IS NOT NULL FROM outbox WHERE event_id = $1", envelope.event_id
            )
            if published:
                break
            await asyncio.sleep(0.1)
        assert published
    finally:
        await relay.stop()


def effect_handler() -> EventHandler:
    async def handle(conn: DbConnection, env: EventEnvelope) -> None:
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", env.event_id, env.claim_id)

    return handle


async def test_redelivered_event_changes_nothing(schema: tuple[str, asyncpg.Pool]) -> None:
    name, pool = schema
    consumer = IdempotentBatchConsumer(
        service="t", schema=name, pool=pool, handlers={"review.decided": effect_handler()}
    )
    env = decided()
    # Twice in one batch and once more in a later batch (a redelivery after a rebalance).
    await consumer.handle_batch([rec(env.to_bytes(), 1), rec(env.to_bytes(), 2)])
    await consumer.handle_batch([rec(env.to_bytes(), 3)])
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM effects") == 1
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 1


async def test_poison_messages_are_dead_lettered_and_the_rest_applied(
    schema: tuple[str, asyncpg.Pool],
) -> None:
    name, pool = schema

    async def picky(conn: DbConnection, env: EventEnvelope) -> None:
        if env.payload["approved_amount_fen"] == 13:
            raise ValueError("unlucky amount")
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", env.event_id, env.claim_id)

    consumer = IdempotentBatchConsumer(
        service="t", schema=name, pool=pool, handlers={"review.decided": picky}
    )
    good = decided()
    unlucky = EventEnvelope.model_validate(
        {
            **decided().model_dump(mode="json"),
            "payload": {**decided().payload, "approved_amount_fen": 13},
        }
    )
    await consumer.handle_batch(
        [rec(b"{not json", 10), rec(unlucky.to_bytes(), 11), rec(good.to_bytes(), 12)]
    )
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM effects") == 1
        letters = await conn.fetch("SELECT * FROM dead_letters ORDER BY source_offset")
        assert [r["source_offset"] for r in letters] == [10, 11]
        assert "envelope invalid" in letters[0]["reason"]
        assert "unlucky amount" in letters[1]["reason"]
        staged = await conn.fetch("SELECT topic FROM outbox")
        assert [r["topic"] for r in staged] == [DEAD_LETTER, DEAD_LETTER]


async def test_transient_failure_rolls_back_the_whole_batch(
    schema: tuple[str, asyncpg.Pool],
) -> None:
    name, pool = schema
    calls = 0

    async def flaky(conn: DbConnection, env: EventEnvelope) -> None:
        nonlocal calls
        calls += 1
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", env.event_id, env.claim_id)
        if calls == 2:
            raise TransientError("database hiccup")

    consumer = IdempotentBatchConsumer(
        service="t",
        schema=name,
        pool=pool,
        handlers={"review.decided": flaky},
        retry_backoff_s=0.01,
    )
    batch = [rec(decided().to_bytes(), 20), rec(decided().to_bytes(), 21)]
    with pytest.raises(TransientError):
        await consumer.handle_batch(batch)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM effects") == 0
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 0
    await consumer.handle_batch(batch)  # the re-read succeeds and applies both once
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM effects") == 2


async def test_events_staged_by_a_failing_handler_are_not_published(
    schema: tuple[str, asyncpg.Pool],
) -> None:
    name, pool = schema

    async def stage_then_fail(conn: DbConnection, env: EventEnvelope) -> None:
        await stage_events(conn, name, REVIEW_EVENTS, [decided(env.claim_id)])
        if env.payload["approved_amount_fen"] == 13:
            raise ValueError("failed after staging")

    consumer = IdempotentBatchConsumer(
        service="t", schema=name, pool=pool, handlers={"review.decided": stage_then_fail}
    )
    good, bad = decided(), decided()
    bad = EventEnvelope.model_validate(
        {**bad.model_dump(mode="json"), "payload": {**bad.payload, "approved_amount_fen": 13}}
    )
    await consumer.handle_batch([rec(good.to_bytes(), 30), rec(bad.to_bytes(), 31)])
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT topic, message_key FROM outbox ORDER BY id")
    # The good event's follow-up, then the bad one's dead letter; not the bad one's follow-up.
    assert [(r["topic"], r["message_key"]) for r in rows] == [
        (REVIEW_EVENTS, str(good.claim_id)),
        (DEAD_LETTER, "k"),
    ]


# --- issue 9 item 11: NUL bytes ---------------------------------------------------------


def with_nul_in(field: str) -> bytes:
    env = decided().model_dump(mode="json")
    if field == "event_type":
        env["event_type"] = "review.decided\x00"
    else:
        env["payload"] = {**env["payload"], "reason": "bad\x00byte"}
    return json.dumps(env).encode()  # JSON escapes NUL as \u0000: valid JSON


async def test_messages_with_nul_bytes_are_dead_lettered_and_the_next_event_processed(
    schema: tuple[str, asyncpg.Pool],
) -> None:
    name, pool = schema
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE reasons (event_id uuid, reason text)")

    async def keeps_reason(conn: DbConnection, env: EventEnvelope) -> None:
        await conn.execute(
            "INSERT INTO reasons VALUES ($1, $2)", env.event_id, env.payload.get("reason")
        )

    consumer = IdempotentBatchConsumer(
        service="t", schema=name, pool=pool, handlers={"review.decided": keeps_reason}
    )
    raw_nul = b'{"event_type": "review.decided", "x": "\x00"}'  # a raw NUL: not JSON
    poison = [
        Rec(REVIEW_EVENTS, 0, 40, b"k\x00ey", raw_nul),
        Rec(REVIEW_EVENTS, 0, 41, b"k", with_nul_in("event_type")),
        Rec(REVIEW_EVENTS, 0, 42, b"k", with_nul_in("payload")),  # the handler's text column
    ]
    good = decided()
    await consumer.handle_batch([*poison, rec(good.to_bytes(), 43)])
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT event_id FROM reasons") == good.event_id
        letters = await conn.fetch(
            "SELECT source_offset, raw_value, source_key, reason FROM dead_letters"
            " ORDER BY source_offset"
        )
        assert [r["source_offset"] for r in letters] == [40, 42]
        assert [bytes(r["raw_value"]) for r in letters] == [poison[0].value, poison[2].value]
        assert bytes(letters[0]["source_key"]) == b"k\x00ey"
        assert "CharacterNotInRepertoire" in letters[1]["reason"]
        # A type nobody handles, NUL and all, is recorded (visibly escaped) and ignored.
        ignored = await conn.fetchrow(
            "SELECT event_type, outcome FROM inbox WHERE source_offset = 41"
        )
        assert ignored is not None
        assert (ignored["event_type"], ignored["outcome"]) == ("review.decided\\u0000", "ignored")
        staged = await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = $1", DEAD_LETTER)
        assert staged == 2


async def test_a_failure_while_dead_lettering_still_records_a_minimal_dead_letter(
    schema: tuple[str, asyncpg.Pool],
) -> None:
    name, pool = schema
    async with pool.acquire() as conn:
        # The full dead letter is refused (as a NUL once was); the minimal one is not.
        await conn.execute(
            """CREATE FUNCTION refuse_full() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 IF NEW.reason NOT LIKE 'dead-lettering failed%' THEN
                   RAISE EXCEPTION 'refused by the test';
                 END IF;
                 RETURN NEW;
               END $$;
               CREATE TRIGGER refuse_full BEFORE INSERT ON dead_letters
               FOR EACH ROW EXECUTE FUNCTION refuse_full();"""
        )
    consumer = IdempotentBatchConsumer(
        service="t", schema=name, pool=pool, handlers={"review.decided": effect_handler()}
    )
    good = decided()
    await consumer.handle_batch([rec(b"{not json", 50), rec(good.to_bytes(), 51)])
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM effects") == 1
        letter = await conn.fetchrow("SELECT * FROM dead_letters")
        assert letter is not None
        assert letter["source_offset"] == 50 and bytes(letter["raw_value"]) == b"{not json"
        assert "refused by the test" in letter["reason"]
        assert "original reason: envelope invalid" in letter["reason"]
        outcome = await conn.fetchval(
            "SELECT outcome FROM inbox WHERE message_id = $1", f"unparsable:{REVIEW_EVENTS}:0:50"
        )
        assert outcome == "dead_lettered"


# --- issue 9 item 13: error classes, unknown versions, re-drive ---------------------------


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.QueryCanceledError,
        asyncpg.exceptions.LockNotAvailableError,
        asyncpg.exceptions.ReadOnlySQLTransactionError,
        asyncpg.exceptions.OutOfMemoryError,
        asyncpg.exceptions.DiskFullError,
        asyncpg.exceptions.TooManyConnectionsError,
    ],
)
async def test_database_trouble_is_transient_not_poison(
    schema: tuple[str, asyncpg.Pool], error: type[Exception]
) -> None:
    name, pool = schema
    calls = 0

    async def troubled(conn: DbConnection, env: EventEnvelope) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error("simulated by the test")
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", env.event_id, env.claim_id)

    consumer = IdempotentBatchConsumer(
        service="t",
        schema=name,
        pool=pool,
        handlers={"review.decided": troubled},
        retry_backoff_s=0.01,
    )
    batch = [rec(decided().to_bytes(), 60)]
    with pytest.raises(error):
        await consumer.handle_batch(batch)
    await consumer.handle_batch(batch)  # the re-read applies it
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0
        assert await conn.fetchval("SELECT count(*) FROM effects") == 1


async def test_a_real_statement_timeout_and_lock_timeout_are_retried(
    infra: StackConfig, schema: tuple[str, asyncpg.Pool]
) -> None:
    name, pool = schema
    locker = await asyncpg.connect(infra.dsn)
    tx = locker.transaction()
    await tx.start()
    await locker.execute(f'LOCK TABLE "{name}".effects IN ACCESS EXCLUSIVE MODE')
    mode = "lock"

    async def slow(conn: DbConnection, env: EventEnvelope) -> None:
        if mode == "lock":
            await conn.execute("SET LOCAL lock_timeout = '100ms'")
        else:
            await conn.execute("SET LOCAL statement_timeout = '100ms'")
            await conn.execute("SELECT pg_sleep(2)")
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", env.event_id, env.claim_id)

    consumer = IdempotentBatchConsumer(
        service="t", schema=name, pool=pool, handlers={"review.decided": slow}, retry_backoff_s=0
    )
    batch = [rec(decided().to_bytes(), 61)]
    try:
        with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
            await consumer.handle_batch(batch)
    finally:
        await tx.rollback()
        await locker.close()
    mode = "sleep"
    with pytest.raises(asyncpg.exceptions.QueryCanceledError):
        await consumer.handle_batch(batch)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 0


def decided_v(version: int) -> EventEnvelope:
    return decided().model_copy(update={"version": version})


async def test_an_unknown_version_is_held_not_dropped_then_released_by_a_new_handler(
    schema: tuple[str, asyncpg.Pool],
) -> None:
    name, pool = schema

    async def parses(conn: DbConnection, env: EventEnvelope) -> None:
        env.parse_payload()  # raises UnknownEventType for a version it has no contract for
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", env.event_id, env.claim_id)

    by_type = IdempotentBatchConsumer(
        service="t", schema=name, pool=pool, handlers={"review.decided": parses}
    )
    by_version = IdempotentBatchConsumer(
        service="t", schema=name, pool=pool, handlers={("review.decided", 1): parses}
    )
    v2_a, v2_b, v1 = decided_v(2), decided_v(2), decided()
    before = REGISTRY.get_sample_value("claimflow_held_events_total", {"service": "t"}) or 0
    await by_type.handle_batch([rec(v2_a.to_bytes(), 70), rec(v1.to_bytes(), 71)])
    await by_version.handle_batch([rec(v2_b.to_bytes(), 72)])
    await by_version.handle_batch([rec(v2_b.to_bytes(), 73)])  # redelivered: held once
    after = REGISTRY.get_sample_value("claimflow_held_events_total", {"service": "t"})
    assert after == before + 3
    async with pool.acquire() as conn:
        held = await conn.fetch("SELECT * FROM held_events ORDER BY source_offset")
        assert [h["message_id"] for h in held] == [str(v2_a.event_id), str(v2_b.event_id)]
        assert "version 2" in held[0]["reason"] and "handled versions: 1" in held[1]["reason"]
        assert bytes(held[0]["raw_value"]) == v2_a.to_bytes()
        assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0
        in_inbox = {r["message_id"] for r in await conn.fetch("SELECT message_id FROM inbox")}
        assert in_inbox == {str(v1.event_id)}  # not the held ones: they must come back
    assert await by_version.release_held() == 0  # still no handler for version 2
    # A handler for every version that still cannot parse version 2: tried once, held
    # again, and the release ends (it does not chase the rows it held again).
    assert await by_type.release_held() == 2
    assert await pool.fetchval("SELECT count(*) FROM held_events") == 2

    applied: list[int] = []

    async def handles_v2(conn: DbConnection, env: EventEnvelope) -> None:
        applied.append(env.version)
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", env.event_id, env.claim_id)

    upgraded = IdempotentBatchConsumer(
        service="t",
        schema=name,
        pool=pool,
        handlers={("review.decided", 1): parses, ("review.decided", 2): handles_v2},
    )
    assert await upgraded.release_held() == 2
    assert applied == [2, 2]
    await upgraded.handle_batch([rec(v2_a.to_bytes(), 74)])  # a late copy: a duplicate
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM held_events") == 0
        assert await conn.fetchval("SELECT count(*) FROM effects") == 3


# --- issue 9 item 15 (consumer part): counters after commit --------------------------------


async def test_counters_move_only_after_the_batch_committed(
    schema: tuple[str, asyncpg.Pool],
) -> None:
    name, pool = schema
    counted: list[str] = []
    fail_transiently = True

    async def counting(conn: DbConnection, env: EventEnvelope) -> None:
        after_commit(lambda: counted.append(str(env.event_id)))
        if env.payload["approved_amount_fen"] == 13:
            raise ValueError("poison")
        if env.payload["approved_amount_fen"] == 14 and fail_transiently:
            raise TransientError("database hiccup")
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", env.event_id, env.claim_id)

    def amount(n: int) -> EventEnvelope:
        env = decided()
        return env.model_copy(update={"payload": {**env.payload, "approved_amount_fen": n}})

    consumer = IdempotentBatchConsumer(
        service="t-counters",
        schema=name,
        pool=pool,
        handlers={"review.decided": counting},
        retry_backoff_s=0,
    )
    good, poison, flaky = amount(100), amount(13), amount(14)
    batch = [rec(good.to_bytes(), 80), rec(poison.to_bytes(), 81), rec(flaky.to_bytes(), 82)]

    def dead_letters() -> float:
        return (
            REGISTRY.get_sample_value("claimflow_dead_letters_total", {"service": "t-counters"})
            or 0
        )

    # First read: the poison is isolated (a re-run), then the batch rolls back anyway.
    with pytest.raises(TransientError):
        await consumer.handle_batch(batch)
    assert counted == [] and dead_letters() == 0
    fail_transiently = False
    await consumer.handle_batch(batch)  # fast run fails on the poison, isolated run commits
    assert counted == [str(good.event_id), str(flaky.event_id)]  # once each, not the poison
    assert dead_letters() == 1


def test_after_commit_outside_a_unit_of_work_is_refused() -> None:
    with pytest.raises(RuntimeError):
        after_commit(lambda: None)
    with after_commit_scope() as pending:
        after_commit(lambda: None)
    assert len(pending) == 1


# --- issue 9 item 12: relay failures visible, an unsendable row does not halt the outbox ---


async def count_on_topic(
    bootstrap: str, topic: str, event_ids: set[str], settle_s: float = 3.0
) -> dict[str, int]:
    """How often each event id is on the topic (read from the beginning until quiet)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    counts = dict.fromkeys(event_ids, 0)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < settle_s:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                quiet_since = time.monotonic()
                for record in records:
                    try:
                        found = json.loads(record.value).get("event_id")
                    except (ValueError, AttributeError):
                        continue
                    if found in counts:
                        counts[found] += 1
    finally:
        await consumer.stop()
    return counts


async def test_an_unsendable_row_is_quarantined_and_the_rows_behind_it_flow(
    infra: StackConfig, schema: tuple[str, asyncpg.Pool]
) -> None:
    name, pool = schema
    before, huge, after, same_claim = decided(), decided(), decided(), decided()
    same_claim = same_claim.model_copy(update={"claim_id": huge.claim_id})
    too_big = huge.model_copy(update={"payload": {**huge.payload, "pad": "x" * 2_000_000}})
    async with pool.acquire() as conn, conn.transaction():
        # The broker takes at most 1 MB a message: the second row can never be sent.
        await stage_events(conn, name, REVIEW_EVENTS, [before, too_big, after, same_claim])
    relay = OutboxRelay(
        pool=pool,
        dsn=infra.dsn,
        schema=name,
        bootstrap_servers=infra.bootstrap,
        poll_interval_s=0.2,
        max_attempts=3,
    )
    quarantined_before = (
        REGISTRY.get_sample_value(
            "claimflow_outbox_quarantined_total", {"service": name, "topic": REVIEW_EVENTS}
        )
        or 0
    )
    await relay.start()
    try:

        async def state() -> dict[uuid.UUID, asyncpg.Record]:
            rows = await pool.fetch(
                "SELECT event_id, published_at, quarantined_at, attempts, last_error FROM outbox"
            )
            return {r["event_id"]: r for r in rows}

        async def others_flowed() -> bool:
            s = await state()
            return all(s[e.event_id]["published_at"] for e in (before, after))

        await wait_for(others_flowed, 10, "the rows before and after the bad one published")

        async def quarantined() -> bool:
            s = await state()
            return bool(
                s[huge.event_id]["quarantined_at"] and s[same_claim.event_id]["published_at"]
            )

        await wait_for(quarantined, 15, "the bad row quarantined, its claim's next row sent")
        s = await state()
        assert s[huge.event_id]["attempts"] == 3
        assert s[huge.event_id]["published_at"] is None
        assert "MessageSizeTooLarge" in s[huge.event_id]["last_error"]
        # Per-claim order: the claim's later row went only after the bad one was set aside.
        assert s[same_claim.event_id]["published_at"] > s[huge.event_id]["quarantined_at"]
        letter = await pool.fetchrow("SELECT * FROM dead_letters WHERE kind = 'outbox'")
        assert letter is not None
        assert letter["event_id"] == huge.event_id and letter["source_topic"] == REVIEW_EVENTS
        assert "quarantined after 3 failed sends" in letter["reason"]
        # The exact bytes staged: the envelope's RFC 8785 form (shared.messaging.signing).
        assert bytes(letter["raw_value"]) == envelope_bytes(too_big)
        quarantined_now = REGISTRY.get_sample_value(
            "claimflow_outbox_quarantined_total", {"service": name, "topic": REVIEW_EVENTS}
        )
        assert quarantined_now == quarantined_before + 1
        assert relay.last_error is None
        assert time.monotonic() - relay.last_progress_at < 5
    finally:
        await relay.stop()
    counts = await count_on_topic(
        infra.bootstrap, REVIEW_EVENTS, {str(e.event_id) for e in (before, after, same_claim)}
    )
    assert set(counts.values()) == {1}, counts  # nothing re-sent every second


async def test_a_broker_outage_shows_no_progress_and_the_gauges_still_move(
    infra: StackConfig, schema: tuple[str, asyncpg.Pool], tmp_path: Path
) -> None:
    """A broker of its own (the shared one must stay up), stopped under the relay."""
    name, pool = schema
    cfg = StackConfig(data_dir=tmp_path, ports=StackPorts.from_base(PORT_BASE + 30))
    broker = start_broker(cfg)
    try:
        await create_topics(cfg.bootstrap, 1)
        relay = OutboxRelay(
            pool=pool,
            # The shared PostgreSQL's (this config has a broker only, no database).
            dsn=infra.dsn,
            schema=name,
            bootstrap_servers=cfg.bootstrap,
            poll_interval_s=0.2,
            max_attempts=2,
            send_timeout_s=1.0,
        )
        await relay.start()
        try:
            first = decided()
            async with pool.acquire() as conn, conn.transaction():
                await stage_events(conn, name, REVIEW_EVENTS, [first])

            async def published() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT published_at IS NOT NULL FROM outbox WHERE event_id = $1",
                        first.event_id,
                    )
                )

            await wait_for(published, 10, "the first row published")
            stop_pid(broker)
            broker = 0
            async with pool.acquire() as conn, conn.transaction():
                await stage_events(conn, name, REVIEW_EVENTS, [decided() for _ in range(3)])
            await asyncio.sleep(8)
            idle = time.monotonic() - relay.last_progress_at
            assert idle > 5, f"progress reported during the outage ({idle:.1f}s ago)"
            assert relay.last_error is not None
            backlog = REGISTRY.get_sample_value("claimflow_outbox_backlog", {"service": name})
            oldest = REGISTRY.get_sample_value(
                "claimflow_outbox_oldest_age_seconds", {"service": name}
            )
            assert backlog == 3
            assert oldest is not None and oldest > 4
            # An outage is nobody's row's fault: nothing counted, nothing quarantined.
            attempts = await pool.fetch(
                "SELECT attempts, quarantined_at FROM outbox WHERE published_at IS NULL"
            )
            assert [(r["attempts"], r["quarantined_at"]) for r in attempts] == [(0, None)] * 3
        finally:
            await relay.stop()
    finally:
        if broker:
            stop_pid(broker)


# --- issue 9 item 13: re-drive after the fix --------------------------------------------


async def test_a_dead_letter_is_redriven_after_the_fix_and_the_inbox_lets_it_through_once(
    infra: StackConfig, schema: tuple[str, asyncpg.Pool]
) -> None:
    name, pool = schema
    fixed = False

    async def buggy_until_fixed(conn: DbConnection, env: EventEnvelope) -> None:
        if not fixed:
            raise KeyError("a bug in this build")
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", env.event_id, env.claim_id)

    consumer = IdempotentBatchConsumer(
        service="t", schema=name, pool=pool, handlers={"review.decided": buggy_until_fixed}
    )
    env = decided()
    original = Rec(REVIEW_EVENTS, 1, 90, str(env.claim_id).encode(), env.to_bytes())
    await consumer.handle_batch([original])
    letter_id = await pool.fetchval("SELECT dead_letter_id::text FROM dead_letters")
    open_before = await list_open_letters(infra, [name])
    assert [(x.kind, x.id, x.event_id) for x in open_before] == [
        ("consumed", letter_id, str(env.event_id))
    ]
    await consumer.handle_batch([original])  # redelivered before the fix: a duplicate
    fixed = True  # the new build
    conn = await asyncpg.connect(infra.dsn)
    try:
        done = await redrive(conn, name, letter_id)
        assert "published again" in done
        with pytest.raises(RedriveRefused, match="re-driven"):
            await redrive(conn, name, letter_id)
    finally:
        await conn.close()
    assert await list_open_letters(infra, [name]) == []
    relay = OutboxRelay(pool=pool, dsn=infra.dsn, schema=name, bootstrap_servers=infra.bootstrap)
    await relay.start()
    try:
        copy = await read_record(infra.bootstrap, REVIEW_EVENTS, env.event_id, after=None)
    finally:
        await relay.stop()
    assert copy.value == env.to_bytes() and copy.key == original.key  # the exact bytes
    await consumer.handle_batch([copy])
    await consumer.handle_batch([copy])  # and once only
    async with pool.acquire() as conn2:
        assert await conn2.fetchval("SELECT count(*) FROM effects") == 1
        assert (
            await conn2.fetchval(
                "SELECT outcome FROM inbox WHERE message_id = $1", str(env.event_id)
            )
            == "handled"
        )


async def list_open_letters(infra: StackConfig, schemas: list[str]) -> list[OpenLetter]:
    conn = await asyncpg.connect(infra.dsn)
    try:
        return await list_open(conn, schemas)
    finally:
        await conn.close()


async def read_record(
    bootstrap: str, topic: str, event_id: uuid.UUID, after: int | None, timeout: float = 15
) -> Any:
    """The first aiokafka ConsumerRecord on the topic carrying this event id."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    if str(event_id).encode() in (record.value or b""):
                        return record
        raise AssertionError(f"{event_id} not on {topic}")
    finally:
        await consumer.stop()


async def test_a_quarantined_outbox_row_is_released_by_a_redrive(
    infra: StackConfig, schema: tuple[str, asyncpg.Pool]
) -> None:
    name, pool = schema
    env = decided()
    async with pool.acquire() as conn, conn.transaction():
        await stage_events(conn, name, REVIEW_EVENTS, [env])
    # As the relay leaves a row it gave up on (the broker refused it three times).
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE outbox SET attempts = 3, last_error = 'KafkaTimeoutError: gone',
                                 quarantined_at = now()"""
        )
        await conn.execute(
            """INSERT INTO dead_letters (dead_letter_id, kind, outbox_id, source_topic,
                   event_id, event_type, reason, raw_value)
               SELECT gen_random_uuid(), 'outbox', id, topic, event_id, event_type,
                      'outbox row quarantined after 3 failed sends', convert_to(payload, 'UTF8')
               FROM outbox"""
        )
    [letter] = await list_open_letters(infra, [name])
    assert letter.kind == "outbox"
    relay = OutboxRelay(pool=pool, dsn=infra.dsn, schema=name, bootstrap_servers=infra.bootstrap)
    await relay.start()
    try:
        await asyncio.sleep(1.5)
        assert await pool.fetchval("SELECT published_at FROM outbox") is None  # set aside
        admin = await asyncpg.connect(infra.dsn)
        try:
            assert "released from quarantine" in await redrive(admin, name, letter.id)
        finally:
            await admin.close()

        async def published() -> bool:
            return bool(await pool.fetchval("SELECT published_at IS NOT NULL FROM outbox"))

        await wait_for(published, 10, "the released row published")
    finally:
        await relay.stop()
    assert await list_open_letters(infra, [name]) == []
