"""Review's use cases: open tasks when a claim arrives, record department decisions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.review.domain.model import CaseStatus, Decision, TaskStatus, outcome_after
from shared.contracts import (
    BankAccount,
    ClaimSubmittedV1,
    EventEnvelope,
    ReviewDecidedV1,
    ReviewTaskDecidedV1,
)
from shared.contracts.topics import REVIEW_EVENTS
from shared.db import DbConnection
from shared.messaging.outbox import stage_events

SERVICE = "review"


class ReviewError(Exception):
    status_code = 409

    def __init__(self, message: str, *, field: str, rule: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


class NotFound(ReviewError):
    status_code = 404


class Forbidden(ReviewError):
    status_code = 403


def open_review(departments_by_kind: dict[str, list[str]], task_days: int):  # type: ignore[no-untyped-def]
    """Handler for claim.submitted: a case and one pending task per required department."""

    async def handle(conn: DbConnection, envelope: EventEnvelope) -> None:
        claim = envelope.parse_payload()
        assert isinstance(claim, ClaimSubmittedV1)
        departments = departments_by_kind.get(claim.claim_kind)
        if not departments:
            raise ValueError(f"no reviewing departments configured for {claim.claim_kind}")
        inserted = await conn.fetchval(
            """INSERT INTO review_cases (claim_id, kind, uscc, enterprise_name,
                   requested_amount_fen, eligible_amount_fen, payee, claim_received_at,
                   registered_by, status)
               VALUES ($1,$2,$3,$4,$5,$6,$7::jsonb,$8,$9,'in_review')
               ON CONFLICT (claim_id) DO NOTHING RETURNING true""",
            envelope.claim_id,
            claim.claim_kind,
            claim.uscc,
            claim.enterprise_name,
            claim.requested_amount_fen,
            claim.eligible_amount_fen,
            claim.payee.model_dump_json(),
            claim.received_at,
            claim.registered_by,
        )
        if not inserted:
            return
        due = datetime.now(UTC) + timedelta(days=task_days)
        await conn.executemany(
            """INSERT INTO review_tasks (task_id, claim_id, department, status, due_at)
               VALUES ($1, $2, $3, 'pending', $4)""",
            [(uuid.uuid4(), envelope.claim_id, d, due) for d in departments],
        )

    return handle


async def decide_task(
    conn: DbConnection,
    *,
    task_id: uuid.UUID,
    decision: Decision,
    comment: str | None,
    user_id: str,
    department: str | None,
) -> dict[str, object]:
    async with conn.transaction():
        claim_id = await conn.fetchval(
            "SELECT claim_id FROM review_tasks WHERE task_id = $1", task_id
        )
        if claim_id is None:
            raise NotFound(f"no task {task_id}", field="task_id", rule="exists")
        # Lock the case first: concurrent decisions on one claim are serialised here.
        case = await conn.fetchrow(
            "SELECT * FROM review_cases WHERE claim_id = $1 FOR UPDATE", claim_id
        )
        task = await conn.fetchrow("SELECT * FROM review_tasks WHERE task_id = $1", task_id)
        assert case is not None and task is not None
        if department != task["department"]:
            raise Forbidden(
                f"task belongs to department {task['department']!r}",
                field="header.X-Department",
                rule="task_department",
            )
        if task["status"] != TaskStatus.PENDING:
            raise ReviewError(
                f"task is already {task['status']}", field="task_id", rule="task_pending"
            )
        if case["registered_by"] == user_id:
            raise Forbidden(
                "the registrant of a claim cannot review it",
                field="header.X-User-Id",
                rule="segregation_registrant",
            )
        status = TaskStatus.APPROVED if decision is Decision.APPROVE else TaskStatus.REJECTED
        now = datetime.now(UTC)
        try:
            await conn.execute(
                """UPDATE review_tasks SET status = $2, decided_by = $3, decided_at = $4,
                       comment = $5 WHERE task_id = $1""",
                task_id,
                status.value,
                user_id,
                now,
                comment,
            )
        except asyncpg.UniqueViolationError:
            raise Forbidden(
                "one person cannot decide for two departments on one claim",
                field="header.X-User-Id",
                rule="segregation_one_department",
            ) from None
        events = [
            EventEnvelope.wrap(
                ReviewTaskDecidedV1(
                    task_id=task_id,
                    department=task["department"],
                    decision=decision.value,
                    reason=comment,
                    decided_by=user_id,
                ),
                claim_id=claim_id,
                producer=SERVICE,
                occurred_at=now,
            )
        ]
        statuses = [
            TaskStatus(r["status"])
            for r in await conn.fetch(
                "SELECT status FROM review_tasks WHERE claim_id = $1 AND status <> 'cancelled'",
                claim_id,
            )
        ]
        outcome = outcome_after(
            statuses,
            requested_fen=case["requested_amount_fen"],
            eligible_fen=case["eligible_amount_fen"],
            rejection_reason=comment if status is TaskStatus.REJECTED else None,
        )
        if outcome.status is not CaseStatus.IN_REVIEW:
            await conn.execute(
                """UPDATE review_cases SET status = $2, approved_amount_fen = $3,
                       decision_reason = $4, decided_at = $5 WHERE claim_id = $1""",
                claim_id,
                outcome.status.value,
                outcome.approved_amount_fen,
                outcome.reason,
                now,
            )
            await conn.execute(
                """UPDATE review_tasks SET status = 'cancelled'
                   WHERE claim_id = $1 AND status = 'pending'""",
                claim_id,
            )
            events.append(
                EventEnvelope.wrap(
                    ReviewDecidedV1(
                        decision="approved"
                        if outcome.status is CaseStatus.APPROVED
                        else "rejected",
                        approved_amount_fen=outcome.approved_amount_fen,
                        reason=outcome.reason,
                        claim_kind=case["kind"],
                        payee=BankAccount.model_validate_json(case["payee"]),
                        claim_received_at=case["claim_received_at"],
                    ),
                    claim_id=claim_id,
                    producer=SERVICE,
                    occurred_at=now,
                )
            )
        await stage_events(conn, SERVICE, REVIEW_EVENTS, events)
    return {
        "task_id": task_id,
        "claim_id": claim_id,
        "task_status": status.value,
        "claim_status": outcome.status.value,
    }
