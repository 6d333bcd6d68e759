"""A fund's queue of payouts waiting for budget: first come, first served (queue_seq)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared.db import DbConnection


async def lock_queue(conn: DbConnection, fund_id: str) -> list[asyncpg.Record]:
    """A fund's queued payouts in queue order, locked (the caller holds the fund's lock)."""
    return list(
        await conn.fetch(
            """SELECT * FROM payouts WHERE fund_id = $1 AND status = 'queued'
               ORDER BY queue_seq FOR UPDATE""",
            fund_id,
        )
    )


async def queued_exists(
    conn: DbConnection, fund_id: str, other_than: uuid.UUID | None = None
) -> bool:
    """Whether someone waits in the fund's queue (first come, first served)."""
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM payouts WHERE fund_id = $1 AND status = 'queued'
                                AND ($2::uuid IS NULL OR payout_id <> $2))""",
            fund_id,
            other_than,
        )
    )


async def queue_position(conn: DbConnection, fund_id: str, queue_seq: int) -> int:
    """Where a payout queued as ``queue_seq`` stands in its fund's queue (1 = next)."""
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM payouts
               WHERE fund_id = $1 AND status = 'queued' AND queue_seq <= $2""",
            fund_id,
            queue_seq,
        )
    )


async def enqueue(conn: DbConnection, payout_id: uuid.UUID, now: datetime) -> int:
    """A new (queued) payout takes its place at the end of the queue; returns it."""
    seq: int = await conn.fetchval(
        """UPDATE payouts SET queue_seq = nextval('payout_queue_seq'), queued_at = $2
           WHERE payout_id = $1 RETURNING queue_seq""",
        payout_id,
        now,
    )
    return seq
