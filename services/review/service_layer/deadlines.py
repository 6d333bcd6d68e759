"""Deadlines (限时办结): a warning before each clock runs out, an escalation when it
has; the scheduler loop of the service and the open-tasks gauge."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.review import metrics
from services.review.adapters import deadlines, tasks
from services.review.adapters.deadlines import Deadline
from services.review.domain.model import escalated_to
from shared.contracts import EventPayload, ReviewDeadlineWarningV1, ReviewEscalatedV1
from shared.db import DbConnection
from shared.service_app import BackgroundLoop, ServiceRuntime
from shared.table_gauges import SingleExporter
from shared.unit_of_work import UnitOfWork, UnitOfWorkFactory
from shared.workdays import CHINA, publish_year_gauges


@dataclass(frozen=True)
class DeadlineRun:
    warnings: int
    escalations: int


async def scan(uow: UnitOfWork, *, limit: int = 500) -> DeadlineRun:
    """Emit each due warning and escalation exactly once.

    The conditional UPDATE (``warned_at IS NULL`` / ``escalated_at IS NULL``) marks a
    deadline in the same transaction as the outbox row of its event: a crash before the
    commit loses neither, a second run (another process, a restart) finds nothing to do.
    """
    warned = await deadlines.mark_warned(uow.conn, uow.now, limit)
    for d in warned:
        _emit(uow, d, ReviewDeadlineWarningV1(**_about(d)), "warning")
    escalated = await deadlines.mark_escalated(uow.conn, uow.now, limit)
    for d in escalated:
        to = escalated_to(d.scope, d.stage, d.department)
        _emit(uow, d, ReviewEscalatedV1(**_about(d), escalated_to=to), "escalation")
    return DeadlineRun(warnings=len(warned), escalations=len(escalated))


def _about(d: Deadline) -> dict[str, Any]:
    """What a warning and an escalation both say about their deadline."""
    return {
        "scope": d.scope,
        "stage": d.stage,
        "department": d.department,
        "task_id": d.task_id,
        "due_at": d.due_at,
    }


def _emit(uow: UnitOfWork, d: Deadline, event: EventPayload, kind: str) -> None:
    uow.emit(event, claim_id=d.claim_id)
    # Stage deadlines count under the stage's name.
    counter = metrics.DEADLINE_EVENTS.labels(department=d.department or d.stage, kind=kind)
    uow.after_commit(counter.inc)


async def run_deadlines(uows: UnitOfWorkFactory, conn: DbConnection) -> DeadlineRun:
    """One scan in its own unit of work (at the factory's clock)."""
    async with uows.begin(conn) as uow:
        return await scan(uow)


_OPEN_STATES = ("on_time", "approaching", "overdue")
_seen_departments: set[str] = set()


async def refresh_open_tasks(
    conn: DbConnection, now: datetime, departments: Iterable[str] = ()
) -> dict[tuple[str, str], int]:
    """Set claimflow_review_tasks_open from the tables (a gauge of what is waiting);
    a department seen once is kept at 0 afterwards rather than left at its last value."""
    _seen_departments.update(departments)
    counts = await tasks.open_counts(conn, now)
    _seen_departments.update(d for d, _ in counts)
    for department in _seen_departments:
        for state in _OPEN_STATES:
            metrics.TASKS_OPEN.labels(department=department, state=state).set(
                counts.get((department, state), 0)
            )
    return counts


def deadline_loop(
    uows: UnitOfWorkFactory, departments: Iterable[str], interval_s: float
) -> BackgroundLoop:
    """The scheduler as a background loop of the service (build_service_app)."""
    known = sorted(departments)
    exporter = SingleExporter("review", [metrics.TASKS_OPEN])

    async def loop(runtime: ServiceRuntime) -> None:
        try:
            while True:
                async with runtime.db.acquire() as conn:
                    async with uows.begin(conn) as uow:
                        await scan(uow)
                    # One review instance exports the open-tasks gauge (no doubled sums).
                    if await exporter.holds(runtime.db):
                        await refresh_open_tasks(conn, uow.now, known)
                publish_year_gauges(uow.now.astimezone(CHINA).date())
                await asyncio.sleep(interval_s)
        finally:
            await exporter.release()

    return loop
