"""Recompute the open review deadlines after the working-day calendar changed
(``claimflow calendar recompute``)."""

from __future__ import annotations

from datetime import datetime

from services.review.domain.model import SIGN_OFF, plan_deadline
from services.review.service_layer.handlers import ReviewPolicy
from shared.db import DbConnection
from shared.deadline_audit import DeadlineChange, record_changes
from shared.workdays import calendar_file


def _working_days(policy: ReviewPolicy, scope: str, stage: str) -> int:
    """For deadlines opened before their length was stored: the policy's limit."""
    if stage == SIGN_OFF:
        return policy.sign_off_working_days
    return policy.task_working_days if scope == "task" else policy.department_review_working_days


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
        rows = await conn.fetch(
            """SELECT deadline_id, task_id, scope, stage, started_at, working_days, warn_at,
                      due_at
               FROM review_deadlines WHERE closed_at IS NULL AND escalated_at IS NULL
               ORDER BY deadline_id FOR UPDATE"""
        )
        for r in rows:
            days = r["working_days"] or _working_days(policy, r["scope"], r["stage"])
            plan = plan_deadline(r["started_at"], days, policy.warn_working_days_before)
            if (plan.due_at, plan.warn_at) == (r["due_at"], r["warn_at"]):
                continue
            changes.append(
                DeadlineChange(
                    "review_deadline", str(r["deadline_id"]), r["due_at"], plan.due_at, True
                )
            )
            if dry_run:
                continue
            await conn.execute(
                """UPDATE review_deadlines SET due_at = $2, warn_at = $3, working_days = $4
                   WHERE deadline_id = $1""",
                r["deadline_id"],
                plan.due_at,
                plan.warn_at,
                days,
            )
            if r["task_id"] is not None:
                await conn.execute(
                    "UPDATE review_tasks SET due_at = $2 WHERE task_id = $1 AND status = 'pending'",
                    r["task_id"],
                    plan.due_at,
                )
        if not dry_run:
            await record_changes(conn, changes, by=by, at=at, calendar_file=calendar_file())
    return changes
