"""The shared unit of work and typed dispatch on the real PostgreSQL (issue 10 item 1, 3)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from shared.config import ServiceSettings
from shared.contracts import EventEnvelope, ReviewDecidedV1
from shared.contracts.topics import REVIEW_EVENTS
from shared.devstack.stack import StackConfig
from shared.http_deps import ConnectionDep, UnitOfWorkDep
from shared.messaging.consumer import IdempotentBatchConsumer
from shared.messaging.dispatch import Subscriptions
from shared.problems import Conflict
from shared.service_app import ServiceRuntime, _refusal
from shared.unit_of_work import UnitOfWork, UnitOfWorkFactory
from tests.integration.helpers import Rec, approved, scratch_schema

pytestmark = pytest.mark.integration

FIXED = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def decided(amount: int = 100) -> ReviewDecidedV1:
    return approved(amount, FIXED)


@pytest.fixture
async def pool(infra: StackConfig, tmp_path: Path) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    async with scratch_schema(
        infra.dsn, tmp_path, "CREATE TABLE effects (claim_id uuid, at timestamptz);", "u"
    ) as made:
        yield made


async def test_emit_stages_the_events_at_commit_with_the_injected_clock(
    pool: tuple[str, asyncpg.Pool],
) -> None:
    name, p = pool
    seen: list[str] = []
    uows = UnitOfWorkFactory(name, REVIEW_EVENTS, clock=lambda: FIXED)
    claim = uuid.uuid4()
    async with uows.acquire(p) as uow:
        await uow.conn.execute("INSERT INTO effects VALUES ($1, $2)", claim, uow.now)
        sent = uow.emit(decided(), claim_id=claim)
        uow.after_commit(lambda: seen.append("committed"))
        assert seen == []  # not before the commit
    assert seen == ["committed"]
    row = await p.fetchrow("SELECT event_id, topic, event_type, payload FROM outbox")
    assert row is not None and row["event_id"] == sent.event_id and row["topic"] == REVIEW_EVENTS
    envelope = EventEnvelope.read(row["payload"])
    assert envelope.occurred_at == FIXED and envelope.producer == name
    assert await p.fetchval("SELECT at FROM effects") == FIXED


async def test_a_failed_unit_of_work_leaves_no_change_no_event_no_callback(
    pool: tuple[str, asyncpg.Pool],
) -> None:
    name, p = pool
    seen: list[str] = []
    uows = UnitOfWorkFactory(name, REVIEW_EVENTS, clock=lambda: FIXED)
    with pytest.raises(RuntimeError):
        async with uows.acquire(p) as uow:
            await uow.conn.execute("INSERT INTO effects VALUES ($1, $2)", uuid.uuid4(), uow.now)
            uow.emit(decided(), claim_id=uuid.uuid4())
            uow.after_commit(lambda: seen.append("committed"))
            raise RuntimeError("the domain refused")
    assert seen == []
    assert await p.fetchval("SELECT count(*) FROM outbox") == 0
    assert await p.fetchval("SELECT count(*) FROM effects") == 0


async def test_every_emitted_event_passes_the_emit_hooks_in_the_same_transaction(
    pool: tuple[str, asyncpg.Pool],
) -> None:
    name, p = pool

    async def record(uow: UnitOfWork, events: Sequence[EventEnvelope]) -> None:
        for e in events:
            await uow.conn.execute("INSERT INTO effects VALUES ($1, $2)", e.claim_id, uow.now)

    async def refuse(uow: UnitOfWork, events: Sequence[EventEnvelope]) -> None:
        raise PermissionError("hook refused")

    claim = uuid.uuid4()
    async with UnitOfWorkFactory(name, REVIEW_EVENTS, hooks=(record,)).acquire(p) as uow:
        uow.emit(decided(), claim_id=claim)
    assert await p.fetchval("SELECT claim_id FROM effects") == claim
    with pytest.raises(PermissionError):
        async with UnitOfWorkFactory(name, REVIEW_EVENTS, hooks=(record, refuse)).acquire(p) as uow:
            uow.emit(decided(), claim_id=uuid.uuid4())
    assert await p.fetchval("SELECT count(*) FROM effects") == 1  # the hook's row rolled back
    assert await p.fetchval("SELECT count(*) FROM outbox") == 1


async def test_typed_dispatch_hands_the_parsed_payload_and_a_caused_unit_of_work(
    pool: tuple[str, asyncpg.Pool],
) -> None:
    name, p = pool
    subs = Subscriptions("payout-test")
    applied: list[tuple[int, uuid.UUID | None]] = []

    @subs.on(ReviewDecidedV1)
    async def on_decided(uow: UnitOfWork, event: ReviewDecidedV1, envelope: EventEnvelope) -> None:
        # A typed payload, not a dict; the emitted event is caused by the consumed one.
        applied.append((event.approved_amount_fen, None))
        out = uow.emit(decided(event.approved_amount_fen + 1), claim_id=envelope.claim_id)
        applied.append((out.payload["approved_amount_fen"], out.causation_id))
        uow.after_commit(lambda: applied.append((-1, None)))

    assert subs.topics == [REVIEW_EVENTS]
    uows = UnitOfWorkFactory(name, REVIEW_EVENTS, clock=lambda: FIXED)
    consumer = IdempotentBatchConsumer(
        service="payout-test", schema=name, pool=p, handlers=subs.handlers(uows), retry_backoff_s=0
    )
    incoming = EventEnvelope.wrap(decided(500), claim_id=uuid.uuid4(), producer="review")
    # A field this build does not know is ignored (tolerant reader).
    raw = incoming.model_copy(update={"payload": {**incoming.payload, "new_field": 1}})
    await consumer.handle_batch([Rec(REVIEW_EVENTS, 0, 1, b"k", raw.to_bytes())])
    assert applied == [(500, None), (501, incoming.event_id), (-1, None)]
    assert await p.fetchval("SELECT count(*) FROM outbox") == 1
    # Delivered again: the inbox drops it, the handler does not run.
    await consumer.handle_batch([Rec(REVIEW_EVENTS, 0, 2, b"k", raw.to_bytes())])
    assert len(applied) == 3


def test_a_service_cannot_subscribe_twice_to_one_event() -> None:
    subs = Subscriptions("x")

    async def handler(uow: UnitOfWork, event: ReviewDecidedV1, envelope: EventEnvelope) -> None:
        return None

    subs.add(ReviewDecidedV1, handler)
    with pytest.raises(ValueError, match="twice"):
        subs.add(ReviewDecidedV1, handler)


async def test_a_route_unit_of_work_commits_before_the_answer_and_a_refusal_changes_nothing(
    pool: tuple[str, asyncpg.Pool],
) -> None:
    name, p = pool
    app = FastAPI()
    app.add_exception_handler(Conflict, _refusal)
    app.state.runtime = ServiceRuntime(
        name=name,
        settings=ServiceSettings.model_construct(),
        pool=p,
        uows=UnitOfWorkFactory(name, REVIEW_EVENTS, clock=lambda: FIXED),
    )

    @app.post("/effects/{refuse}")
    async def add(refuse: bool, uow: UnitOfWorkDep) -> dict[str, str]:
        claim = uuid.uuid4()
        await uow.conn.execute("INSERT INTO effects VALUES ($1, $2)", claim, uow.now)
        uow.emit(decided(), claim_id=claim)
        if refuse:
            raise Conflict("already decided", field="claim_id", rule="undecided")
        return {"claim_id": str(claim)}

    @app.get("/effects")
    async def count(conn: ConnectionDep) -> dict[str, int]:
        return {"count": await conn.fetchval("SELECT count(*) FROM effects")}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.post("/effects/false")
        assert ok.status_code == 200
        # Committed before the answer: the next request sees it.
        assert (await client.get("/effects")).json() == {"count": 1}
        refused = await client.post("/effects/true")
        assert refused.status_code == 409
        assert refused.json()["errors"][0] == {
            "field": "claim_id",
            "rule": "undecided",
            "message": "already decided",
        }
    assert await p.fetchval("SELECT count(*) FROM effects") == 1
    assert await p.fetchval("SELECT count(*) FROM outbox") == 1
