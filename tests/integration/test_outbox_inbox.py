"""The reliability mechanism on the real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from shared.contracts import BankAccount, EventEnvelope, ReviewDecidedV1
from shared.contracts.topics import DEAD_LETTER, REVIEW_EVENTS
from shared.db import DbConnection, create_pool, migrate
from shared.devstack.stack import StackConfig
from shared.messaging.consumer import EventHandler, IdempotentBatchConsumer, TransientError
from shared.messaging.outbox import OutboxRelay, stage_events
from tests.kafka_helpers import find_on_topic

pytestmark = pytest.mark.integration

PAYEE = BankAccount(
    bank_name="自贡银行", account_name="测试企业", account_number="6222020200001234567"
)


def decided(claim_id: uuid.UUID | None = None) -> EventEnvelope:
    return EventEnvelope.wrap(
        ReviewDecidedV1(
            decision="approved",
            approved_amount_fen=100,
            claim_kind="vat_refund",
            payee=PAYEE,
            claim_received_at=datetime.now(UTC),
        ),
        claim_id=claim_id or uuid.uuid4(),
        producer="test",
    )


@dataclass
class Rec:
    """Stands in for an aiokafka ConsumerRecord; the consumer reads only these fields."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def rec(value: bytes | None, offset: int) -> Rec:
    return Rec(REVIEW_EVENTS, 0, offset, b"k", value)


@pytest.fixture
async def schema(infra: StackConfig, tmp_path: Path) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    name = f"t_{uuid.uuid4().hex[:10]}"
    (tmp_path / "0001_effects.sql").write_text(
        "CREATE TABLE effects (event_id uuid, claim_id uuid);"
    )
    await migrate(infra.dsn, name, tmp_path)
    pool = await create_pool(infra.dsn, name)
    try:
        yield name, pool
    finally:
        await pool.close()


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
