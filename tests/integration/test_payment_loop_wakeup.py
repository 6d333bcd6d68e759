"""Issue 15, item 2: the payment loop is woken by the commit that makes a payout
issuable, instead of waiting out its idle poll (the largest part of submit → paid)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.payout.bootstrap import PAYOUT_WORK_CHANNEL
from shared.devstack.stack import StackConfig
from shared.messaging.after_commit import after_commit_scope
from shared.wakeup import Wakeup
from tests.integration.test_payout_service import (  # noqa: F401 - the pool fixture
    CONSUME,
    always,
    apply,
    approval,
    drive,
    gateway,
    pool,
    status_of,
    submit,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def wakeup(infra: StackConfig) -> AsyncIterator[Wakeup]:
    listener = Wakeup(infra.dsn, PAYOUT_WORK_CHANNEL)
    await listener.listen()
    try:
        yield listener
    finally:
        await listener.close()


async def test_a_committed_approval_wakes_the_payment_loop(
    pool: asyncpg.Pool,  # noqa: F811 - the fixture imported above
    wakeup: Wakeup,
) -> None:
    assert not await wakeup.wait(0.3)  # nothing happened yet
    event = approval(50_000)
    await apply(pool, event)
    assert await status_of(pool, event.claim_id) == "requested"
    # Well under any idle poll a test could tell apart, yet no timing claim: without the
    # trigger nothing wakes the listener at all.
    assert await wakeup.wait(30)


async def test_a_rolled_back_approval_wakes_nobody(
    pool: asyncpg.Pool,  # noqa: F811
    wakeup: Wakeup,
) -> None:
    event = approval(50_000)
    await submit(pool, event)  # intake's submission: the approval would be requested
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        with after_commit_scope():  # as a consumer batch holds it (never run here)
            await CONSUME[(event.event_type, event.version)](conn, event)
        await tx.rollback()
    assert await status_of(pool, event.claim_id) is None
    assert not await wakeup.wait(1.0)


async def test_issuing_and_paying_do_not_wake_the_loop_again(
    pool: asyncpg.Pool,  # noqa: F811
    wakeup: Wakeup,
) -> None:
    event = approval(50_000)
    await apply(pool, event)
    assert await wakeup.wait(30)

    async def paid() -> bool:
        return await status_of(pool, event.claim_id) == "paid"

    await drive(pool, gateway(pool, always("arrive")), paid)
    assert not await wakeup.wait(1.0)
