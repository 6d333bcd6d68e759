"""A whole unit of work again after a deadlock or a serialization failure.

The lock order (fund, then payouts by id) leaves none between payout's own paths; this
is for a deadlock with something else (and what the HTTP routes run their work in)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

import asyncpg

from shared.unit_of_work import UnitOfWork, UnitOfWorkFactory

T = TypeVar("T")
P = ParamSpec("P")

TRIES = 5


async def retried_on_conflict(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` (one whole transaction) again after a deadlock or serialization
    failure: five tries, a short and growing pause between them."""
    for n in range(TRIES):
        try:
            return await attempt()
        except (
            asyncpg.exceptions.DeadlockDetectedError,
            asyncpg.exceptions.SerializationError,
        ):
            if n == TRIES - 1:
                raise
            await asyncio.sleep(0.05 * (n + 1))
    raise AssertionError("unreachable")


async def in_unit_of_work(
    uows: UnitOfWorkFactory,
    pool: asyncpg.Pool,
    use_case: Callable[Concatenate[UnitOfWork, P], Awaitable[T]],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """``use_case(uow, *args)`` in a unit of work of its own, retried after a deadlock;
    its after-commit effects run once, after the commit that counts."""

    async def once() -> T:
        async with uows.acquire(pool) as uow:
            return await use_case(uow, *args, **kwargs)

    return await retried_on_conflict(once)
