"""Two payout consumers (two instances) applying batches that approve claims of two
funds in opposite orders: each batch locked a fund per event, after the payout rows of
the events before it, and the two batches deadlocked (seen with two instances of every
service: docs/performance.md). With the funds of the whole batch locked first, in fund
order, the second batch waits for the first instead."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from services.payout.service_layer.on_events import batch_fund_locks
from shared.contracts import EventEnvelope
from shared.db import DbConnection
from shared.messaging.consumer import EventHandler, IdempotentBatchConsumer, PrepareBatch
from shared.programs import load_catalogue
from tests.integration.helpers import Rec
from tests.integration.test_payout_service import (  # noqa: F401 - the pool fixture
    CLIENTS,
    CONSUME,
    PROGRAM,
    approval,
    pool,
    status_of,
    submit,
)

pytestmark = pytest.mark.integration

SUBSIDY, REFUND = PROGRAM, None
"""Two funds: the program's and the treasury's VAT refund fund."""


def lingering(handler: EventHandler) -> EventHandler:
    """The handler, then a pause inside the batch's transaction: the other batch runs its
    first event meanwhile (what a loaded machine does by chance)."""

    async def handle(conn: DbConnection, envelope: EventEnvelope) -> None:
        await handler(conn, envelope)
        await asyncio.sleep(0.5)

    return handle


def consumer(db: asyncpg.Pool, prepare: PrepareBatch | None) -> IdempotentBatchConsumer:
    return IdempotentBatchConsumer(
        service="payout",
        schema=CLIENTS[id(db)],
        pool=db,
        handlers={key: lingering(h) for key, h in CONSUME.items()},
        retry_backoff_s=0.01,
        prepare_batch=prepare,
    )


async def both(
    db: asyncpg.Pool, prepare: PrepareBatch | None
) -> tuple[list[BaseException | None], list[EventEnvelope]]:
    first = [approval(100_00, program_id=SUBSIDY), approval(100_00, program_id=REFUND)]
    second = [approval(100_00, program_id=REFUND), approval(100_00, program_id=SUBSIDY)]
    for decided in first + second:
        await submit(db, decided)

    def batch(events: list[EventEnvelope], offset: int) -> Callable[[], Awaitable[None]]:
        records = [Rec("t", 0, offset + i, b"k", e.to_bytes()) for i, e in enumerate(events)]
        return lambda: consumer(db, prepare).handle_batch(records)

    results = await asyncio.gather(batch(first, 0)(), batch(second, 10)(), return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results], first + second


async def test_without_the_batch_locks_opposite_batches_deadlock(
    pool: asyncpg.Pool,  # noqa: F811 - the fixture imported above
) -> None:
    """What the fix is for, shown on the code without it."""
    errors, _ = await both(pool, None)
    assert any(isinstance(e, asyncpg.DeadlockDetectedError) for e in errors), errors


async def test_a_batch_takes_its_funds_first_and_opposite_batches_both_commit(
    pool: asyncpg.Pool,  # noqa: F811
) -> None:
    errors, events = await both(pool, batch_fund_locks(load_catalogue()))
    assert errors == [None, None]
    for decided in events:
        assert await status_of(pool, decided.claim_id) == "requested"
