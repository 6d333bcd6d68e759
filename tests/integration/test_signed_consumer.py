"""Signed events through the outbox and the consumer on the real PostgreSQL (issue 12
item 4): staged rows carry the signature; the consumer applies only events signed by the
service entitled to their type, dead-letters the rest with the reason (counted after
commit), and keeps a held event's signature for its re-drive."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from cryptography.exceptions import InvalidSignature

from shared.audit.keys import KeyRing, ServiceKey
from shared.contracts import EventEnvelope
from shared.contracts.topics import REVIEW_EVENTS
from shared.db import DbConnection
from shared.devstack.stack import StackConfig
from shared.messaging import signing
from shared.messaging.consumer import IdempotentBatchConsumer
from shared.messaging.redrive import redrive
from shared.metrics import REGISTRY
from shared.unit_of_work import UnitOfWorkFactory
from tests.integration import helpers
from tests.integration.helpers import Rec

pytestmark = pytest.mark.integration

KEYS = {s: ServiceKey.generate(s) for s in ("intake", "review", "payout")}
RING = KeyRing.of(KEYS.values())


def decided(amount: int = 100, producer: str = "review") -> EventEnvelope:
    return helpers.decided(
        amount, producer=producer, received_at=datetime(2026, 11, 27, tzinfo=UTC)
    )


def signed(env: EventEnvelope, by: str, offset: int) -> Rec:
    value = signing.envelope_bytes(env)
    key = KEYS[by]
    headers = signing.signed_headers(key.key_id, signing.sign(key, value)) or []
    return Rec(REVIEW_EVENTS, 0, offset, b"k", value, headers)


@pytest.fixture
async def schema(infra: StackConfig, tmp_path: Path) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    async with helpers.scratch_schema(
        infra.dsn, tmp_path, "CREATE TABLE effects (amount bigint);", "s"
    ) as made:
        yield made


@pytest.fixture
def review_signs(schema: tuple[str, asyncpg.Pool]) -> Iterator[str]:
    name, _ = schema
    signing.install_signer(name, ServiceKey.generate(name))
    try:
        yield name
    finally:
        signing.remove_signer(name)


def consumer_of(name: str, pool: asyncpg.Pool) -> IdempotentBatchConsumer:
    async def handle(conn: DbConnection, env: EventEnvelope) -> None:
        await conn.execute("INSERT INTO effects VALUES ($1)", env.payload["approved_amount_fen"])

    return IdempotentBatchConsumer(
        service=name,
        schema=name,
        pool=pool,
        handlers={("review.decided", 1): handle},
        retry_backoff_s=0,
        verifier=signing.EventVerifier(RING),
    )


def refused_count(service: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "claimflow_events_refused_total", {"service": service, "reason": reason}
    )
    return value or 0.0


async def test_staged_events_are_canonical_bytes_signed_by_the_service(
    schema: tuple[str, asyncpg.Pool], review_signs: str
) -> None:
    name, pool = schema
    key = signing.signer_for(name)
    assert key is not None
    async with UnitOfWorkFactory(name, REVIEW_EVENTS).acquire(pool) as uow:
        sent = uow.emit(decided().parse_payload(), claim_id=uuid.uuid4())
    row = await pool.fetchrow("SELECT payload, key_id, signature FROM outbox")
    assert row is not None and row["key_id"] == key.key_id
    value = row["payload"].encode()
    assert value == signing.envelope_bytes(sent)  # RFC 8785: what the relay publishes
    ring = KeyRing.of([key])
    signature = base64.b64decode(row["signature"])
    assert ring.verify(key.key_id, signature, signing.EVENT_CONTEXT + value) == name
    with pytest.raises(InvalidSignature):
        ring.verify(key.key_id, signature, signing.EVENT_CONTEXT + value.replace(b"100", b"900"))


async def test_only_events_signed_by_the_entitled_service_are_applied(
    schema: tuple[str, asyncpg.Pool],
) -> None:
    name, pool = schema
    consumer = consumer_of(name, pool)
    good = decided(100)
    unsigned = decided(5_000_000_000_00)
    wrong_key = decided(7_00)  # producer review, signed by intake
    not_entitled = decided(8_00, producer="intake")  # honest about it, still not allowed
    tampered = signed(decided(9_00), "review", 5)
    tampered.value = (tampered.value or b"").replace(b":900,", b":900000,")
    before = {r: refused_count(name, r) for r in ("unsigned", "not_entitled", "bad_signature")}
    await consumer.handle_batch(
        [
            Rec(REVIEW_EVENTS, 0, 1, b"k", unsigned.to_bytes()),
            signed(wrong_key, "intake", 2),
            signed(not_entitled, "intake", 3),
            signed(good, "review", 4),
            tampered,
        ]
    )
    assert [r["amount"] for r in await pool.fetch("SELECT amount FROM effects")] == [100]
    reasons = [
        r["reason"] for r in await pool.fetch("SELECT reason FROM dead_letters ORDER BY failed_at")
    ]
    assert len(reasons) == 4
    text = "\n".join(reasons)
    assert "refused: the event is not signed" in text
    assert "signed by intake but the envelope names 'review'" in text
    assert "intake is not entitled to emit 'review.decided' (only review is)" in text
    assert "does not match the bytes received" in text
    # Not one forgery holds an inbox row under its (claimed) event id.
    ids = {r["message_id"] for r in await pool.fetch("SELECT message_id FROM inbox")}
    assert str(good.event_id) in ids and str(unsigned.event_id) not in ids
    assert refused_count(name, "unsigned") == before["unsigned"] + 1
    assert refused_count(name, "not_entitled") == before["not_entitled"] + 2
    assert refused_count(name, "bad_signature") == before["bad_signature"] + 1


async def test_a_held_events_signature_is_kept_and_its_redrive_carries_it(
    schema: tuple[str, asyncpg.Pool],
) -> None:
    name, pool = schema
    consumer = consumer_of(name, pool)
    v2 = decided(100).model_copy(update={"version": 2})
    record = signed(v2, "review", 1)
    await consumer.handle_batch([record])
    held = await pool.fetchrow("SELECT source_key_id, source_signature FROM held_events")
    assert held is not None and held["source_key_id"] == KEYS["review"].key_id
    conn = await asyncpg.connect(pool._connect_args[0])  # type: ignore[attr-defined]
    try:
        await redrive(conn, name, str(v2.event_id))
    finally:
        await conn.close()
    row = await pool.fetchrow("SELECT payload, key_id, signature FROM outbox")
    assert row is not None and row["payload"].encode() == record.value
    headers = signing.signed_headers(row["key_id"], row["signature"])
    assert signing.EventVerifier(RING).check(row["payload"].encode(), headers) == "review"
