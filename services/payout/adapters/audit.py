"""finance_audit: who did what to which fund or payout, and why."""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

import asyncpg

from shared.db import DbConnection

Action = Literal[
    "top_up",
    "account_correction",
    "close",
    "top_up_requested",
    "account_correction_requested",
    "request_approved",
    "request_rejected",
]


async def record(
    conn: DbConnection,
    actor: str,
    action: Action,
    *,
    fund_id: str,
    amount_fen: int,
    reason: str,
    detail: dict[str, Any],
    payout_id: uuid.UUID | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO finance_audit (actor, action, fund_id, payout_id, amount_fen, reason,
               detail)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)""",
        actor,
        action,
        fund_id,
        payout_id,
        amount_fen,
        reason,
        json.dumps(detail),
    )


async def payout_action(
    conn: DbConnection,
    actor: str,
    action: Literal["account_correction", "close"],
    row: asyncpg.Record,
    reason: str,
    detail: dict[str, Any],
) -> None:
    """The audit row of a finance action on one payout (``row``: the payout before it)."""
    await record(
        conn,
        actor,
        action,
        fund_id=row["fund_id"],
        payout_id=row["payout_id"],
        amount_fen=row["amount_fen"],
        reason=reason,
        detail=detail,
    )
