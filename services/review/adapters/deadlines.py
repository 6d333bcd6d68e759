"""SQL of review_deadlines (限时办结): the clocks of stages and tasks, marked once each
when warned and when escalated."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.review.adapters.rows import build
from services.review.domain.model import DeadlinePlan
from shared.db import DbConnection


@dataclass(frozen=True)
class Deadline:
    deadline_id: int
    claim_id: uuid.UUID
    task_id: uuid.UUID | None
    scope: str
    stage: str
    department: str | None
    started_at: datetime
    warn_at: datetime
    due_at: datetime
    working_days: int | None


async def open_deadline(
    conn: DbConnection,
    claim_id: uuid.UUID,
    task_id: uuid.UUID | None,
    stage: str,
    department: str | None,
    plan: DeadlinePlan,
) -> None:
    """A task's clock (``task_id``) or the stage's (None)."""
    await conn.execute(
        """INSERT INTO review_deadlines (claim_id, task_id, scope, stage, department,
               started_at, warn_at, due_at, working_days)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        claim_id,
        task_id,
        "task" if task_id else "stage",
        stage,
        department,
        plan.started_at,
        plan.warn_at,
        plan.due_at,
        plan.working_days,
    )


async def close_all(conn: DbConnection, claim_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        """UPDATE review_deadlines SET closed_at = $2
           WHERE claim_id = $1 AND closed_at IS NULL""",
        claim_id,
        now,
    )


async def close_task(conn: DbConnection, task_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        "UPDATE review_deadlines SET closed_at = $2 WHERE task_id = $1 AND closed_at IS NULL",
        task_id,
        now,
    )


# The conditional UPDATEs make each mark happen once, also with two schedulers at the
# same moment (SKIP LOCKED), in the transaction that stages the event of the mark.
_MARK_WARNED = """
    WITH due AS (
        SELECT deadline_id FROM review_deadlines
        WHERE warned_at IS NULL AND escalated_at IS NULL AND closed_at IS NULL
          AND warn_at <= $1
        ORDER BY warn_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    UPDATE review_deadlines d SET warned_at = $1 FROM due
    WHERE d.deadline_id = due.deadline_id AND d.warned_at IS NULL
    RETURNING d.*"""
_MARK_ESCALATED = """
    WITH due AS (
        SELECT deadline_id FROM review_deadlines
        WHERE escalated_at IS NULL AND closed_at IS NULL AND due_at <= $1
        ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
    UPDATE review_deadlines d SET escalated_at = $1 FROM due
    WHERE d.deadline_id = due.deadline_id AND d.escalated_at IS NULL
    RETURNING d.*"""


async def mark_warned(conn: DbConnection, now: datetime, limit: int) -> list[Deadline]:
    """Mark the open deadlines whose warning time has come, neither warned nor
    escalated yet; returns them."""
    return [build(Deadline, r) for r in await conn.fetch(_MARK_WARNED, now, limit)]


async def mark_escalated(conn: DbConnection, now: datetime, limit: int) -> list[Deadline]:
    """Mark the open deadlines that are due and not yet escalated; returns them."""
    return [build(Deadline, r) for r in await conn.fetch(_MARK_ESCALATED, now, limit)]


async def lock_open_unescalated(conn: DbConnection) -> list[Deadline]:
    """Every open deadline not yet escalated, locked (a calendar recomputation)."""
    rows = await conn.fetch(
        """SELECT deadline_id, claim_id, task_id, scope, stage, department, started_at,
                  working_days, warn_at, due_at
           FROM review_deadlines WHERE closed_at IS NULL AND escalated_at IS NULL
           ORDER BY deadline_id FOR UPDATE"""
    )
    return [build(Deadline, r) for r in rows]


async def replan(conn: DbConnection, deadline_id: int, plan: DeadlinePlan) -> None:
    await conn.execute(
        """UPDATE review_deadlines SET due_at = $2, warn_at = $3, working_days = $4
           WHERE deadline_id = $1""",
        deadline_id,
        plan.due_at,
        plan.warn_at,
        plan.working_days,
    )
