"""Funds: budget, reserved, committed, paid. Invariant 2 is the table's CHECK; every
reservation here is also a conditional update under the fund's row lock."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from shared.db import DbConnection


async def create_missing(conn: DbConnection, funds: list[tuple[str, str, str, int | None]]) -> int:
    """Create the funds (id, claim kind, name, budget) that do not exist yet; an existing
    fund keeps its budget. Returns how many were created."""
    created = 0
    for fund_id, kind, name, budget in funds:
        created += bool(
            await conn.fetchval(
                """INSERT INTO funds (fund_id, claim_kind, name, budget_fen)
                   VALUES ($1, $2, $3, $4) ON CONFLICT (fund_id) DO NOTHING RETURNING true""",
                fund_id,
                kind,
                name,
                budget,
            )
        )
    return created


async def lock(conn: DbConnection, fund_id: str) -> asyncpg.Record | None:
    """The fund's row, locked first in the one lock order (None: no such fund)."""
    return await conn.fetchrow("SELECT * FROM funds WHERE fund_id = $1 FOR NO KEY UPDATE", fund_id)


async def lock_for_claims(
    conn: DbConnection, fund_ids: Sequence[str], claim_ids: Sequence[uuid.UUID]
) -> None:
    """The funds ``fund_ids`` and those of the claims' existing payouts, in fund id order:
    a consumer batch takes them before its events (the one lock order: funds first)."""
    await conn.execute(
        """SELECT 1 FROM funds
           WHERE fund_id = ANY($1::text[])
              OR fund_id IN (SELECT fund_id FROM payouts WHERE claim_id = ANY($2::uuid[]))
           ORDER BY fund_id FOR NO KEY UPDATE""",
        list(fund_ids),
        list(claim_ids),
    )


async def try_reserve(conn: DbConnection, fund_id: str, amount_fen: int) -> bool:
    """The budget guard: a conditional update; the CHECK constraint backs it up."""
    return bool(
        await conn.fetchval(
            """UPDATE funds SET reserved_fen = reserved_fen + $2
               WHERE fund_id = $1
                 AND (budget_fen IS NULL OR budget_fen - reserved_fen - committed_fen >= $2)
               RETURNING true""",
            fund_id,
            amount_fen,
        )
    )


async def unreserve(conn: DbConnection, fund_id: str, amount_fen: int) -> None:
    await conn.execute(
        "UPDATE funds SET reserved_fen = reserved_fen - $2 WHERE fund_id = $1", fund_id, amount_fen
    )


async def commit_reserved(conn: DbConnection, fund_id: str, amount_fen: int) -> None:
    """The reservation becomes a commitment: the money is leaving."""
    await conn.execute(
        """UPDATE funds SET reserved_fen = reserved_fen - $2, committed_fen = committed_fen + $2
           WHERE fund_id = $1""",
        fund_id,
        amount_fen,
    )


async def uncommit(conn: DbConnection, fund_id: str, amount_fen: int) -> None:
    await conn.execute(
        "UPDATE funds SET committed_fen = committed_fen - $2 WHERE fund_id = $1",
        fund_id,
        amount_fen,
    )


async def add_paid(conn: DbConnection, fund_id: str, amount_fen: int) -> None:
    await conn.execute(
        "UPDATE funds SET paid_fen = paid_fen + $2 WHERE fund_id = $1", fund_id, amount_fen
    )


async def add_budget(conn: DbConnection, fund_id: str, amount_fen: int) -> None:
    await conn.execute(
        "UPDATE funds SET budget_fen = budget_fen + $2 WHERE fund_id = $1", fund_id, amount_fen
    )
