"""What intake said about a claim (documents completed, lapsed, withdrawn), kept even
before payout hears of the claim's approval."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import asyncpg

from shared.db import DbConnection

Ending = Literal["lapsed", "withdrawn"]


async def get(conn: DbConnection, claim_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM claim_documents WHERE claim_id = $1", claim_id)


async def record_completed(conn: DbConnection, claim_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        """INSERT INTO claim_documents (claim_id, documents_completed_at) VALUES ($1, $2)
           ON CONFLICT (claim_id) DO UPDATE
               SET documents_completed_at = coalesce(claim_documents.documents_completed_at,
                                                     excluded.documents_completed_at),
                   updated_at = now()""",
        claim_id,
        at,
    )


async def record_ended(
    conn: DbConnection, claim_id: uuid.UUID, ending: Ending, at: datetime
) -> None:
    # ``ending`` is one of two literals (never input): it names the column.
    column = "lapsed_at" if ending == "lapsed" else "withdrawn_at"
    await conn.execute(
        f"""INSERT INTO claim_documents (claim_id, {column}, reason) VALUES ($1, $2, $3)
            ON CONFLICT (claim_id) DO UPDATE
                SET {column} = coalesce(claim_documents.{column}, excluded.{column}),
                    reason = coalesce(claim_documents.reason, excluded.reason),
                    updated_at = now()""",
        claim_id,
        at,
        f"claim {ending}",
    )
