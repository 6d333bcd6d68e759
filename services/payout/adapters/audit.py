"""finance_audit: who did what to which fund or payout, and why."""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

import asyncpg

from shared.audit.chain import append_finance
from shared.db import DbConnection

Action = Literal[
    "top_up",
    "account_correction",
    "close",
    "top_up_requested",
    "account_correction_requested",
    "request_approved",
    "request_rejected",
    "hold_release_requested",
    "hold_cancel_requested",
    "hold_release",
    "hold_cancel",
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
    # The same action on the hash chains of its fund and its payout (docs/audit.md).
    await append_finance(
        conn,
        actor=actor,
        action=action,
        body={
            "fund_id": fund_id,
            "payout_id": None if payout_id is None else str(payout_id),
            "amount_fen": str(amount_fen),
            "reason": reason,
            "detail": detail,
        },
        program_id=fund_id,
        payout_id=payout_id,
    )


async def payout_action(
    conn: DbConnection,
    actor: str,
    action: Literal["account_correction", "close", "hold_release", "hold_cancel"],
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
