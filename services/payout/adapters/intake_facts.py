"""What intake said about a claim (claim_submissions) and what each enterprise has been
admitted for per program (enterprise_cap_ledger). Lock order: fund, then the ledger row,
then payouts (the ledger row is only ever touched under the claim's fund lock)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from services.payout.domain.admission import Submitted
from shared.contracts import BankAccount, ClaimSubmittedV1
from shared.db import DbConnection


async def record(
    conn: DbConnection,
    claim_id: uuid.UUID,
    event_id: uuid.UUID,
    claim: ClaimSubmittedV1,
    now: datetime,
) -> bool:
    """Keep intake's facts of a claim once (the first claim.submitted wins); whether new."""
    done = await conn.execute(
        """INSERT INTO claim_submissions (claim_id, event_id, claim_kind, program_id, uscc,
               eligible_amount_fen, payee, received_at, recorded_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9)
           ON CONFLICT (claim_id) DO NOTHING""",
        claim_id,
        event_id,
        claim.claim_kind,
        claim.program_id,
        claim.uscc,
        claim.eligible_amount_fen,
        claim.payee.model_dump_json(),
        claim.received_at,
        now,
    )
    return bool(done == "INSERT 0 1")


async def get(conn: DbConnection, claim_id: uuid.UUID) -> Submitted | None:
    row = await conn.fetchrow("SELECT * FROM claim_submissions WHERE claim_id = $1", claim_id)
    if row is None:
        return None
    return Submitted(
        claim_kind=row["claim_kind"],
        program_id=row["program_id"],
        uscc=row["uscc"],
        eligible_amount_fen=row["eligible_amount_fen"],
        payee=BankAccount.model_validate_json(row["payee"]),
    )


async def charge_cap(
    conn: DbConnection, program_id: str, uscc: str, cap_fen: int, amount_fen: int
) -> int | None:
    """Add ``amount_fen`` to the enterprise's use of the program's cap, if it fits:
    returns the new use, or None (nothing changed) when it would exceed the cap. The
    row lock serialises two claims of one enterprise; CHECK enterprise_cap_not_exceeded
    refuses what would slip past this code."""
    if amount_fen > cap_fen:
        return None
    used: int | None = await conn.fetchval(
        """INSERT INTO enterprise_cap_ledger AS l (program_id, uscc, cap_fen, used_fen)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (program_id, uscc) DO UPDATE
               SET used_fen = l.used_fen + EXCLUDED.used_fen, cap_fen = EXCLUDED.cap_fen
               WHERE l.used_fen + EXCLUDED.used_fen <= EXCLUDED.cap_fen
           RETURNING used_fen""",
        program_id,
        uscc,
        cap_fen,
        amount_fen,
    )
    return used


async def used(conn: DbConnection, program_id: str, uscc: str) -> int:
    value = await conn.fetchval(
        "SELECT used_fen FROM enterprise_cap_ledger WHERE program_id = $1 AND uscc = $2",
        program_id,
        uscc,
    )
    return int(value or 0)


async def give_back(conn: DbConnection, row: asyncpg.Record | Mapping[str, Any]) -> None:
    """A released payout gives back what it took of its enterprise's cap (once)."""
    charged: int = row["cap_charged_fen"]
    if not charged:
        return
    await conn.execute(
        """UPDATE enterprise_cap_ledger SET used_fen = used_fen - $3
           WHERE program_id = $1 AND uscc = $2""",
        row["program_id"],
        row["uscc"],
        charged,
    )
    await conn.execute(
        "UPDATE payouts SET cap_charged_fen = 0 WHERE payout_id = $1", row["payout_id"]
    )
