"""SQL of review_tasks: department tasks (stage 2) and sign-off tasks (stage 3)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.review.adapters.rows import build
from services.review.domain.model import Task, TaskStatus
from services.review.domain.segregation import refusal_for_constraint
from shared.db import DbConnection


async def insert(
    conn: DbConnection,
    claim_id: uuid.UUID,
    department: str,
    stage: str,
    now: datetime,
    due_at: datetime,
) -> uuid.UUID:
    """A pending task; returns its id."""
    task_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO review_tasks (task_id, claim_id, department, status, stage,
               created_at, due_at)
           VALUES ($1, $2, $3, 'pending', $4, $5, $6)""",
        task_id,
        claim_id,
        department,
        stage,
        now,
        due_at,
    )
    return task_id


async def claim_of(conn: DbConnection, task_id: uuid.UUID) -> uuid.UUID | None:
    claim_id: uuid.UUID | None = await conn.fetchval(
        "SELECT claim_id FROM review_tasks WHERE task_id = $1", task_id
    )
    return claim_id


async def get(conn: DbConnection, task_id: uuid.UUID) -> Task | None:
    row = await conn.fetchrow(
        """SELECT task_id, claim_id, department, stage, status, created_at
           FROM review_tasks WHERE task_id = $1""",
        task_id,
    )
    return build(Task, row, status=TaskStatus(row["status"])) if row is not None else None


async def departments_decided_by(
    conn: DbConnection, claim_id: uuid.UUID, user_id: str, *, other_than: str
) -> list[str]:
    """The departments other than ``other_than`` that ``user_id`` decided for on the claim."""
    rows = await conn.fetch(
        """SELECT department FROM review_tasks WHERE claim_id = $1 AND decided_by = $2
           AND department <> $3""",
        claim_id,
        user_id,
        other_than,
    )
    return [r["department"] for r in rows]


async def record_decision(
    conn: DbConnection,
    task_id: uuid.UUID,
    *,
    status: TaskStatus,
    user_id: str,
    role: str | None,
    comment: str | None,
    documents: Sequence[str],
    titles: dict[str, str],
    now: datetime,
) -> None:
    """Write the decision. A segregation constraint of the database (two requests raced
    past the checks of ``domain.segregation``) becomes the same refusal: the database
    has the last word."""
    try:
        await conn.execute(
            """UPDATE review_tasks SET status = $2, decided_by = $3, decided_at = $4,
                   comment = $5, decided_role = $6, documents = $7,
                   document_titles = $8::jsonb
               WHERE task_id = $1""",
            task_id,
            status.value,
            user_id,
            now,
            comment,
            role,
            list(documents),
            json.dumps(titles, ensure_ascii=False),
        )
    except asyncpg.CheckViolationError as err:
        refusal = refusal_for_constraint(err.constraint_name)
        if refusal is None:
            raise
        raise refusal from None


async def department_statuses(
    conn: DbConnection, claim_id: uuid.UUID, decided: uuid.UUID
) -> list[TaskStatus]:
    """The statuses that count for stage 2: every live or decided department task (a
    task returned earlier and re-opened counts by its new task) and ``decided``."""
    rows = await conn.fetch(
        """SELECT status FROM review_tasks WHERE claim_id = $1
           AND stage = 'department_review'
           AND (status IN ('pending', 'approved', 'rejected') OR task_id = $2)""",
        claim_id,
        decided,
    )
    return [TaskStatus(r["status"]) for r in rows]


async def cancel_pending(conn: DbConnection, claim_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE review_tasks SET status = 'cancelled' WHERE claim_id = $1 AND status = 'pending'",
        claim_id,
    )


async def other_document_titles(conn: DbConnection, claim_id: uuid.UUID) -> dict[str, str]:
    """Every ``other-N`` document asked for on the claim so far, with its title."""
    earlier: dict[str, str] = {}
    for r in await conn.fetch(
        "SELECT document_titles FROM review_tasks WHERE claim_id = $1", claim_id
    ):
        earlier |= json.loads(r["document_titles"])
    return earlier


async def departments_to_reopen(conn: DbConnection, claim_id: uuid.UUID) -> list[str]:
    """The departments whose only tasks are returned ones: each gets a new task."""
    rows = await conn.fetch(
        """SELECT DISTINCT department FROM review_tasks t
           WHERE claim_id = $1 AND status = 'returned' AND NOT EXISTS (
               SELECT 1 FROM review_tasks u WHERE u.claim_id = t.claim_id
                 AND u.department = t.department AND u.status <> 'returned')""",
        claim_id,
    )
    return [r["department"] for r in rows]


async def pending_department_tasks(
    conn: DbConnection, claim_id: uuid.UUID
) -> list[tuple[uuid.UUID, str]]:
    """(task id, department) of the stage-2 tasks still waiting for a decision."""
    rows = await conn.fetch(
        """SELECT task_id, department FROM review_tasks
           WHERE claim_id = $1 AND status = 'pending' AND stage = 'department_review'""",
        claim_id,
    )
    return [(r["task_id"], r["department"]) for r in rows]


async def set_due(
    conn: DbConnection, task_id: uuid.UUID, due_at: datetime, *, only_pending: bool = False
) -> None:
    if only_pending:
        await conn.execute(
            "UPDATE review_tasks SET due_at = $2 WHERE task_id = $1 AND status = 'pending'",
            task_id,
            due_at,
        )
    else:
        await conn.execute(
            "UPDATE review_tasks SET due_at = $2 WHERE task_id = $1", task_id, due_at
        )


async def open_counts(conn: DbConnection, now: datetime) -> dict[tuple[str, str], int]:
    """Pending tasks of cases that take decisions, by (department, deadline state)."""
    rows = await conn.fetch(
        """SELECT t.department,
                  CASE WHEN t.due_at <= $1 THEN 'overdue'
                       WHEN d.warn_at IS NOT NULL AND d.warn_at <= $1 THEN 'approaching'
                       ELSE 'on_time' END AS state,
                  count(*) AS n
           FROM review_tasks t JOIN review_cases c USING (claim_id)
           LEFT JOIN review_deadlines d ON d.task_id = t.task_id AND d.closed_at IS NULL
           WHERE t.status = 'pending' AND c.status IN ('department_review', 'sign_off')
           GROUP BY 1, 2""",
        now,
    )
    return {(r["department"], r["state"]): int(r["n"]) for r in rows}
