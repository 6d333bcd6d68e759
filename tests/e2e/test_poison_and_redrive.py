"""Poison on the real stack (issue 9 items 11 and 13): a NUL byte on any topic wedges no
consumer; an event of an unknown version is held, listed and re-driven by the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from shared.contracts import EventEnvelope
from shared.contracts.topics import INTAKE_EVENTS, PAYOUT_EVENTS, REVIEW_EVENTS
from shared.devstack import stack
from tests.e2e.helpers import eventually
from tests.kafka_helpers import produce, produce_as

pytestmark = pytest.mark.e2e

CONSUMERS = {
    INTAKE_EVENTS: ("review", "payout"),
    REVIEW_EVENTS: ("intake", "payout"),
    PAYOUT_EVENTS: ("intake",),
}


@pytest.fixture
async def db(services: stack.StackConfig) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(services.dsn)
    try:
        yield conn
    finally:
        await conn.close()


PRODUCER = {INTAKE_EVENTS: "intake", REVIEW_EVENTS: "review", PAYOUT_EVENTS: "payout"}
"""Whose events a topic carries: the test signs as that service (signing.py)."""


def envelope(
    event_type: str,
    version: int = 1,
    payload: dict[str, Any] | None = None,
    producer: str = "test",
) -> bytes:
    return EventEnvelope(
        event_id=uuid.uuid4(),
        event_type=event_type,
        version=version,
        claim_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        correlation_id=uuid.uuid4(),
        producer=producer,
        payload=payload or {},
    ).to_bytes()


@pytest.mark.parametrize("topic", list(CONSUMERS))
async def test_a_nul_byte_on_a_topic_is_dead_lettered_and_the_next_event_processed(
    services: stack.StackConfig, db: asyncpg.Connection, topic: str
) -> None:
    marker = uuid.uuid4().hex
    nul_value = b'{"event_type": "claim.submitted", "note": "' + marker.encode() + b'\x00"}'
    producer = PRODUCER[topic]
    prefix = {"intake": "claim"}.get(producer, producer)
    # A type of the topic's producer that no consumer handles (ignored), signed by it.
    good = envelope(f"{prefix}.test_after_nul", producer=producer)
    good_id = json.loads(good)["event_id"]
    # One partition, the good event last: the poison must not hold it up.
    await produce(services.bootstrap, topic, nul_value, key=b"nul\x00key", partition=0)
    await produce_as(services, producer, topic, good, key=b"nul", partition=0)
    for service in CONSUMERS[topic]:

        async def processed(service: str = service) -> str | None:
            outcome: str | None = await db.fetchval(
                f"SELECT outcome FROM {service}.inbox WHERE message_id = $1", good_id
            )
            return outcome

        assert await eventually(processed, timeout=30, what=f"{service} past the NUL") == "ignored"
        stored = await db.fetchval(
            f"SELECT raw_value FROM {service}.dead_letters WHERE source_topic = $1"
            " AND position($2::bytea IN raw_value) > 0",
            topic,
            marker.encode(),
        )
        assert bytes(stored) == nul_value, service


def claimflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.devstack.cli", "dead-letters", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_an_unknown_version_is_held_listed_and_redriven_by_the_cli(
    services: stack.StackConfig, db: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    """payout handles review.decided version 1 only: a version 2 is held (not dropped, not
    dead-lettered), shows in `claimflow dead-letters list`, counts in the held gauge, and
    a re-drive sends it round again (still no handler here: held again)."""
    v2 = envelope(
        "review.decided", version=2, payload={"decision": "approved", "new": 1}, producer="review"
    )
    event_id = json.loads(v2)["event_id"]
    await produce_as(services, "review", REVIEW_EVENTS, v2, key=b"v2")

    async def held_at() -> Any:
        return await db.fetchval(
            "SELECT held_at FROM payout.held_events WHERE message_id = $1", event_id
        )

    first_held = await eventually(held_at, timeout=30, what="payout holds the v2 event")
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payout.dead_letters WHERE event_id = $1", uuid.UUID(event_id)
        )
        == 0
    )
    url = services.dsn
    listed = claimflow("list", "--json", "--service", "payout", "--database-url", url)
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    mine = [r for r in rows if r["id"] == event_id]
    assert len(mine) == 1 and mine[0]["kind"] == "held"
    assert "UnknownEventType" not in mine[0]["reason"] or "version 2" in mine[0]["reason"]
    assert "version 2" in mine[0]["reason"]

    async def gauge() -> bool:
        text = (await client.get(f"{services.url('payout')}/metrics")).text
        return any(
            line.startswith('claimflow_held_events_waiting{service="payout"}')
            and float(line.split()[-1]) >= 1
            for line in text.splitlines()
        )

    await eventually(gauge, timeout=15, what="the held gauge")

    redriven = claimflow("redrive", event_id, "--database-url", url)
    assert redriven.returncode == 0, redriven.stderr
    assert "published again" in redriven.stdout

    async def held_again() -> bool:
        again = await held_at()
        return again is not None and again > first_held

    await eventually(held_again, timeout=30, what="the re-driven copy held again by payout")


async def test_the_cli_refuses_to_redrive_what_cannot_be_an_event(
    services: stack.StackConfig, db: asyncpg.Connection
) -> None:
    marker = uuid.uuid4().hex.encode()
    await produce(services.bootstrap, PAYOUT_EVENTS, b"\x00" + marker, key=b"x", partition=1)

    async def letter() -> str | None:
        found: str | None = await db.fetchval(
            "SELECT dead_letter_id::text FROM intake.dead_letters"
            " WHERE position($1::bytea IN raw_value) > 0",
            marker,
        )
        return found

    letter_id = await eventually(letter, timeout=30, what="intake's dead letter")
    refused = claimflow("redrive", letter_id, "--database-url", services.dsn)
    assert refused.returncode == 1
    assert "NUL" in refused.stderr
    unknown = claimflow("redrive", str(uuid.uuid4()), "--database-url", services.dsn)
    assert unknown.returncode == 1 and "not an open dead letter" in unknown.stderr
