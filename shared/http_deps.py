"""FastAPI dependencies of every service: a unit of work or a read connection per request.

Routes declare what they need instead of reaching into the runtime::

    @router.post("/claims/{claim_id}/withdraw", response_model=ClaimOut)
    async def withdraw(claim_id: UUID, body: WithdrawIn, uow: UnitOfWorkDep) -> ClaimOut:
        return await withdrawal.withdraw(uow, claim_id, body.reason)

``scope="function"``: the unit of work commits (or rolls back, when the route raised)
as soon as the route function returns — before the response is sent, so a client never
reads an answer whose change is not yet committed, and a failed commit is the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from shared.db import DbConnection
from shared.service_app import ServiceRuntime, runtime_of
from shared.unit_of_work import UnitOfWork, UnitOfWorkFactory


async def _runtime(request: Request) -> ServiceRuntime:
    return runtime_of(request)


RuntimeDep = Annotated[ServiceRuntime, Depends(_runtime)]


async def _uows(request: Request) -> UnitOfWorkFactory:
    uows = runtime_of(request).uows
    if uows is None:
        raise RuntimeError("the service's bootstrap set no unit-of-work factory")
    return uows


UnitOfWorkFactoryDep = Annotated[UnitOfWorkFactory, Depends(_uows)]


async def _unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    runtime = runtime_of(request)
    async with (await _uows(request)).acquire(runtime.db) as uow:
        yield uow


UnitOfWorkDep = Annotated[UnitOfWork, Depends(_unit_of_work, scope="function")]
"""A unit of work in its own transaction, committed when the route returns."""


async def _connection(request: Request) -> AsyncIterator[DbConnection]:
    async with runtime_of(request).db.acquire() as conn:
        yield conn


ConnectionDep = Annotated[DbConnection, Depends(_connection, scope="function")]
"""A pooled connection for reads (``views``); writes go through ``UnitOfWorkDep``."""
