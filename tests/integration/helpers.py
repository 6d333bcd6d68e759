"""What several integration tests of the messaging core need: a stand-in for a consumer
record, a scratch schema with a table for a handler's effects, a review decision to
carry, and a wait for a condition (never a bare sleep)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from shared.contracts import BankAccount, EventEnvelope, ReviewDecidedV1
from shared.db import create_pool, migrate

PAYEE = BankAccount(
    bank_name="自贡银行", account_name="测试企业", account_number="6222020200001234567"
)


@dataclass
class Rec:
    """Stands in for an aiokafka ConsumerRecord; the consumer reads only these fields."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def approved(amount_fen: int = 100, received_at: datetime | None = None) -> ReviewDecidedV1:
    return ReviewDecidedV1(
        decision="approved",
        approved_amount_fen=amount_fen,
        claim_kind="vat_refund",
        payee=PAYEE,
        claim_received_at=received_at or datetime.now(UTC),
    )


def decided(
    amount_fen: int = 100,
    *,
    producer: str = "test",
    claim_id: uuid.UUID | None = None,
    received_at: datetime | None = None,
) -> EventEnvelope:
    return EventEnvelope.wrap(
        approved(amount_fen, received_at),
        claim_id=claim_id or uuid.uuid4(),
        producer=producer,
    )


@asynccontextmanager
async def scratch_schema(
    dsn: str, folder: Path, effects_ddl: str, prefix: str = "t"
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A schema of its own with the shared messaging tables and ``effects_ddl``."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    migrations = folder / f"migrations-{name}"
    migrations.mkdir()
    (migrations / "0001_effects.sql").write_text(effects_ddl)
    await migrate(dsn, name, migrations)
    pool = await create_pool(dsn, name)
    try:
        yield name, pool
    finally:
        await pool.close()


async def wait_for(
    probe: Callable[[], Awaitable[bool]], timeout: float, what: str, every_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await probe():
            return
        await asyncio.sleep(every_s)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")
