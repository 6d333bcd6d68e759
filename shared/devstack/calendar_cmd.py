"""``claimflow calendar recompute``: after shared/reference/calendar.yaml changed (the
State Council published a year's arrangement), count every stored deadline again on
the new calendar, in intake (documents deadlines) and review (time limits), with an
audit row per change in each service's ``deadline_recomputations``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.intake.service_layer.recompute import recompute_documents_deadlines
from services.review.config import ReviewSettings
from services.review.service_layer.policy import ReviewPolicy
from services.review.service_layer.recompute import recompute_review_deadlines
from shared.db import create_pool
from shared.deadline_audit import DeadlineChange, calendar_digest
from shared.workdays import calendar_file, current_calendar


def _summary(changes: list[DeadlineChange]) -> dict[str, Any]:
    return {
        "changed": sum(c.applied for c in changes),
        "kept": sum(not c.applied for c in changes),
        "changes": [
            {
                "id": c.subject_id,
                "old_due_at": c.old_due_at.isoformat() if c.old_due_at else None,
                "new_due_at": c.new_due_at.isoformat(),
                "applied": c.applied,
                **({"note": c.note} if c.note else {}),
            }
            for c in changes
        ],
    }


async def recompute(
    dsn: str,
    *,
    by: str,
    dry_run: bool = False,
    intake_schema: str = "intake",
    review_schema: str = "review",
) -> dict[str, Any]:
    at = datetime.now(UTC)
    current_calendar(fresh=True)  # the file as it is now, not as a second ago
    result: dict[str, Any] = {
        "calendar_file": str(calendar_file()),
        "calendar_digest": calendar_digest(calendar_file()),
        "by": by,
        "at": at.isoformat(),
        "dry_run": dry_run,
    }
    intake = await create_pool(dsn, intake_schema, min_size=1, max_size=1)
    try:
        async with intake.acquire() as conn:
            changes = await recompute_documents_deadlines(conn, by=by, at=at, dry_run=dry_run)
        result["intake"] = _summary(changes)
    finally:
        await intake.close()
    review = await create_pool(dsn, review_schema, min_size=1, max_size=1)
    try:
        policy = ReviewPolicy.from_settings(ReviewSettings())
        async with review.acquire() as conn:
            changes = await recompute_review_deadlines(conn, policy, by=by, at=at, dry_run=dry_run)
        result["review"] = _summary(changes)
    finally:
        await review.close()
    return result
