"""Reads for the HTTP API (read models straight from the tables, as cosmicpython's
``views``): the worklist of a department and the whole review of a claim."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel

from shared.audit.history import ClaimAudit, service_claim_audit
from shared.auth.scope import Desks, off_desk
from shared.config import ServiceSettings
from shared.db import DbConnection
from shared.money import fen_to_yuan, optional_fen_to_yuan
from shared.problems import NotFound


class Finding(BaseModel):
    check: str
    result: str
    reason: str


class WorklistItem(BaseModel):
    task_id: uuid.UUID
    claim_id: uuid.UUID
    department: str
    stage: str
    kind: str
    program_id: str | None
    uscc: str
    enterprise_name: str
    tax_period: str | None
    requested_amount: Decimal
    eligible_amount: Decimal
    recommended_amount: Decimal | None
    """What may be approved: min(requested, eligible, cap left)."""
    cross_check_result: str | None
    findings: list[Finding]
    pending_documents: list[str]
    created_at: datetime
    due_at: datetime
    overdue: bool
    escalated: bool


class TaskView(BaseModel):
    task_id: uuid.UUID
    department: str
    stage: str
    status: str
    created_at: datetime
    due_at: datetime
    decided_by: str | None
    decided_role: str | None
    decided_at: datetime | None
    comment: str | None
    documents: list[str]
    document_titles: dict[str, str]
    """Titles of the ``other-N`` documents a return asked for."""


class DeadlineView(BaseModel):
    scope: str
    stage: str
    department: str | None
    task_id: uuid.UUID | None
    started_at: datetime
    warn_at: datetime
    due_at: datetime
    warned_at: datetime | None
    escalated_at: datetime | None
    closed_at: datetime | None


class ClaimReview(BaseModel):
    claim_id: uuid.UUID
    kind: str
    program_id: str | None
    status: str
    stage_started_at: datetime
    registered_by: str
    requested_amount: Decimal
    eligible_amount: Decimal
    recommended_amount: Decimal | None
    approved_amount: Decimal | None
    cross_check_result: str | None
    findings: list[Finding]
    pending_documents: list[str]
    returned_documents: list[str]
    decision_reason: str | None
    decided_at: datetime | None
    tasks: list[TaskView]
    deadlines: list[DeadlineView]


def _findings(raw: str) -> list[Finding]:
    return [Finding(**f) for f in json.loads(raw)]


async def worklist(conn: DbConnection, department: str, limit: int) -> list[WorklistItem]:
    """Tasks waiting for the department, oldest deadline first, with the cross-checks."""
    rows = await conn.fetch(
        """SELECT t.task_id, t.claim_id, t.department, t.stage, t.created_at, t.due_at,
                  t.due_at < now() AS overdue,
                  EXISTS (SELECT 1 FROM review_deadlines d WHERE d.task_id = t.task_id
                          AND d.escalated_at IS NOT NULL) AS escalated,
                  c.kind, c.program_id, c.uscc, c.enterprise_name, c.tax_period,
                  c.requested_amount_fen, c.eligible_amount_fen, c.recommended_amount_fen,
                  c.cross_check_result, c.findings, c.pending_documents
           FROM review_tasks t JOIN review_cases c USING (claim_id)
           WHERE t.department = $1 AND t.status = 'pending'
             AND c.status = CASE WHEN t.stage = 'sign_off' THEN 'sign_off'
                                 ELSE 'department_review' END
           ORDER BY t.due_at, t.created_at LIMIT $2""",
        department,
        limit,
    )
    return [
        WorklistItem(
            **{k: r[k] for k in _WORKLIST_COLUMNS},
            requested_amount=fen_to_yuan(r["requested_amount_fen"]),
            eligible_amount=fen_to_yuan(r["eligible_amount_fen"]),
            recommended_amount=optional_fen_to_yuan(r["recommended_amount_fen"]),
            findings=_findings(r["findings"]),
            pending_documents=list(r["pending_documents"]),
        )
        for r in rows
    ]


_WORKLIST_COLUMNS = [
    "task_id",
    "claim_id",
    "department",
    "stage",
    "kind",
    "program_id",
    "uscc",
    "enterprise_name",
    "tax_period",
    "cross_check_result",
    "created_at",
    "due_at",
    "overdue",
    "escalated",
]


async def claim_review(conn: DbConnection, claim_id: uuid.UUID, *, desks: Desks) -> ClaimReview:
    """The whole joint review of a claim: cross-checks, every task, who decided and when,
    deadlines with their warnings and escalations.

    ``desks`` (shared/auth/scope.py): a department reviewer's departments; the case is
    read only when one of them has (or had) a task on the claim, else the caller gets
    the same refusal as for a claim review has never seen."""
    case = await conn.fetchrow(
        """SELECT * FROM review_cases c WHERE claim_id = $1
             AND ($2::text[] IS NULL OR EXISTS (
                   SELECT 1 FROM review_tasks t
                   WHERE t.claim_id = c.claim_id AND t.department = ANY($2::text[])))""",
        claim_id,
        desks,
    )
    if case is None:
        if desks is not None:
            raise off_desk(desks)
        raise NotFound(f"no review case for claim {claim_id}", field="claim_id", rule="exists")
    tasks = await conn.fetch(
        """SELECT task_id, department, stage, status, created_at, due_at, decided_by,
                  decided_role, decided_at, comment, documents, document_titles
           FROM review_tasks WHERE claim_id = $1 ORDER BY created_at, department""",
        claim_id,
    )
    deadlines = await conn.fetch(
        """SELECT scope, stage, department, task_id, started_at, warn_at, due_at,
                  warned_at, escalated_at, closed_at
           FROM review_deadlines WHERE claim_id = $1 ORDER BY deadline_id""",
        claim_id,
    )
    return ClaimReview(
        **{k: case[k] for k in _CASE_COLUMNS},
        requested_amount=fen_to_yuan(case["requested_amount_fen"]),
        eligible_amount=fen_to_yuan(case["eligible_amount_fen"]),
        recommended_amount=optional_fen_to_yuan(case["recommended_amount_fen"]),
        approved_amount=optional_fen_to_yuan(case["approved_amount_fen"]),
        findings=_findings(case["findings"]),
        pending_documents=list(case["pending_documents"]),
        returned_documents=list(case["returned_documents"]),
        tasks=[
            TaskView(**{**dict(t), "document_titles": json.loads(t["document_titles"])})
            for t in tasks
        ],
        deadlines=[DeadlineView(**dict(d)) for d in deadlines],
    )


_CASE_COLUMNS = [
    "claim_id",
    "kind",
    "program_id",
    "status",
    "stage_started_at",
    "registered_by",
    "cross_check_result",
    "decision_reason",
    "decided_at",
]


async def claim_audit(
    conn: DbConnection, settings: ServiceSettings, claim_id: uuid.UUID
) -> ClaimAudit:
    """The claim's audit chain(s) in review, each entry verified now (shared.audit.history):
    hashes, links, head, seals, and review's state rows against the chain."""
    return await service_claim_audit(conn, "review", settings, claim_id)
