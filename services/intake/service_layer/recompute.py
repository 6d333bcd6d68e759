"""Recompute the documents deadlines of live claims after the working-day calendar
changed (``claimflow calendar recompute``)."""

from __future__ import annotations

from datetime import datetime

from services.intake.adapters.repository import ClaimRepository
from services.intake.domain.model import LAPSABLE
from shared.db import DbConnection
from shared.deadline_audit import DeadlineChange, record_changes
from shared.workdays import calendar_file, deadline_after

KEPT = "kept: a documents deadline the enterprise was given is never shortened"


async def recompute_documents_deadlines(
    conn: DbConnection, *, by: str, at: datetime, dry_run: bool = False
) -> list[DeadlineChange]:
    """Each live claim with documents outstanding gets its deadline counted again from
    the same moment and number of working days on the calendar as it is now. A later
    deadline is applied; an earlier one is only recorded (a lapse is final, and the
    window told the enterprise the date it has). Every difference is audited."""
    changes: list[DeadlineChange] = []
    repo = ClaimRepository(conn)
    async with conn.transaction():
        for r in await repo.documents_deadlines([s.value for s in LAPSABLE]):
            new = deadline_after(r["documents_due_from"], r["documents_due_days"])
            old: datetime = r["documents_due_at"]
            if new == old:
                continue
            later = new > old
            changes.append(
                DeadlineChange(
                    "claim_documents", str(r["claim_id"]), old, new, later, None if later else KEPT
                )
            )
            if later and not dry_run:
                await repo.move_documents_deadline(r["claim_id"], new)
        if not dry_run:
            await record_changes(conn, changes, by=by, at=at, calendar_file=calendar_file())
    return changes
