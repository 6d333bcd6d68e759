"""What the payment loop's use cases (dispatch, notices, resolver) work with."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from services.payout.adapters.gateway import PaymentGateway
from services.payout.domain.model import RetryPolicy
from shared.unit_of_work import UnitOfWork, UnitOfWorkFactory


@dataclass(frozen=True)
class Payments:
    """The bank behind its port, the database, and the unit of work of each short
    transaction. Nothing here holds a transaction open across a bank call: each use case
    opens one unit of work (``unit``) before or after calling the bank, never around it."""

    uows: UnitOfWorkFactory
    pool: asyncpg.Pool
    gateway: PaymentGateway
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @contextlib.asynccontextmanager
    async def unit(self) -> AsyncIterator[UnitOfWork]:
        """One short transaction of its own (a connection from the pool)."""
        async with self.uows.acquire(self.pool) as uow:
            yield uow
