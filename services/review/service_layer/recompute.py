"""Recompute the open review deadlines after the working-day calendar changed
(``claimflow calendar recompute``)."""

from __future__ import annotations

from datetime import datetime

from services.review.adapters import deadlines, tasks
from services.review.service_layer.policy import ReviewPolicy
from shared.db import DbConnection
from shared.deadline_audit import DeadlineChange, record_changes
from shared.workdays import calendar_file


async def recompute_review_deadlines(
    conn: DbConnection,
    policy: ReviewPolicy,
    *,
    by: str,
    at: datetime,
    dry_run: bool = False,
) -> list[DeadlineChange]:
    """Every open, not yet escalated deadline is counted again from its start on the
    calendar as it is now (warning and due time; the task's due time with it). These
    are the administration's own time limits, so they move either way. A warning
    already sent is not sent again. Every change is audited."""
    changes: list[DeadlineChange] = []
    async with conn.transaction():
        for d in await deadlines.lock_open_unescalated(conn):
            # Deadlines opened before their length was stored: the policy's limit.
            days = d.working_days or policy.working_days(d.scope, d.stage)
            plan = policy.plan(d.started_at, days)
            if (plan.due_at, plan.warn_at) == (d.due_at, d.warn_at):
                continue
            changes.append(
                DeadlineChange("review_deadline", str(d.deadline_id), d.due_at, plan.due_at, True)
            )
            if dry_run:
                continue
            await deadlines.replan(conn, d.deadline_id, plan)
            if d.task_id is not None:
                await tasks.set_due(conn, d.task_id, plan.due_at, only_pending=True)
        if not dry_run:
            await record_changes(conn, changes, by=by, at=at, calendar_file=calendar_file())
    return changes
