"""payout_hops: every step of every payout, with its attempt and time."""

from __future__ import annotations

import uuid
from datetime import datetime

from shared.db import DbConnection


async def add(
    conn: DbConnection,
    payout_id: uuid.UUID,
    issue_no: int,
    attempt: int,
    hop: str,
    at: datetime,
    detail: str | None = None,
) -> None:
    """Record a hop once: a repeat of the same (issue, attempt, hop) changes nothing."""
    await conn.execute(
        """INSERT INTO payout_hops (payout_id, issue_no, attempt, hop, at, detail)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (payout_id, issue_no, attempt, hop) DO NOTHING""",
        payout_id,
        issue_no,
        attempt,
        hop,
        at,
        detail,
    )
