"""Recomputing stored deadlines after the working-day calendar changed (issue 9, item
5): what changed, recorded in the service's ``deadline_recomputations`` table with who
ran it, when, and which calendar file (by digest) it used."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from shared.db import DbConnection


@dataclass(frozen=True)
class DeadlineChange:
    subject: str
    """What the deadline belongs to: claim_documents (intake) or review_deadline."""
    subject_id: str
    old_due_at: datetime | None
    new_due_at: datetime
    applied: bool
    note: str | None = None


def calendar_digest(path: Path) -> str:
    if not path.exists():
        return "absent"
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


async def record_changes(
    conn: DbConnection,
    changes: list[DeadlineChange],
    *,
    by: str,
    at: datetime,
    calendar_file: Path,
) -> None:
    """One audit row per change, in the caller's transaction (with the changes)."""
    if not changes:
        return
    digest = calendar_digest(calendar_file)
    await conn.executemany(
        """INSERT INTO deadline_recomputations (recomputed_at, recomputed_by, calendar_file,
               calendar_digest, subject, subject_id, old_due_at, new_due_at, applied, note)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        [
            (
                at,
                by,
                str(calendar_file),
                digest,
                c.subject,
                c.subject_id,
                c.old_due_at,
                c.new_due_at,
                c.applied,
                c.note,
            )
            for c in changes
        ],
    )
