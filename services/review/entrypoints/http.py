"""Routes for department reviewers and approvers. Thin: parse, call a handler, answer."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.review.domain.model import Decision
from services.review.service_layer import handlers
from shared.identity import Caller, current_caller
from shared.money import fen_to_yuan, optional_fen_to_yuan
from shared.problems import problem
from shared.service_app import runtime_of

router = APIRouter(tags=["review"])


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


class OtherDocument(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200, description="e.g. 补充说明（盖章）")


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Decision
    comment: str | None = Field(default=None, max_length=2000)
    documents: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list,
        max_length=20,
        description="for return: ids from the claim's checklist (GET /programs at intake)",
    )
    """For ``return``: the checklist documents the enterprise must supply."""
    other_documents: list[OtherDocument] = Field(
        default_factory=list,
        max_length=10,
        description="for return: documents the checklist does not name, each with a title; "
        "each gets an id other-N the window records",
    )


def _error(err: handlers.ReviewError) -> JSONResponse:
    return problem(err.status_code, str(err), err.field, err.rule)


@router.get("/worklist", response_model=list[WorklistItem])
async def worklist(
    request: Request,
    department: Annotated[
        str, Query(min_length=1, description="a department, or sign_off for approvers")
    ],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[WorklistItem]:
    """Tasks waiting for the department, oldest deadline first, with the cross-checks."""
    async with runtime_of(request).db.acquire() as conn:
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
            task_id=r["task_id"],
            claim_id=r["claim_id"],
            department=r["department"],
            stage=r["stage"],
            kind=r["kind"],
            program_id=r["program_id"],
            uscc=r["uscc"],
            enterprise_name=r["enterprise_name"],
            tax_period=r["tax_period"],
            requested_amount=fen_to_yuan(r["requested_amount_fen"]),
            eligible_amount=fen_to_yuan(r["eligible_amount_fen"]),
            recommended_amount=optional_fen_to_yuan(r["recommended_amount_fen"]),
            cross_check_result=r["cross_check_result"],
            findings=[Finding(**f) for f in json.loads(r["findings"])],
            pending_documents=list(r["pending_documents"]),
            created_at=r["created_at"],
            due_at=r["due_at"],
            overdue=r["overdue"],
            escalated=r["escalated"],
        )
        for r in rows
    ]


@router.post("/tasks/{task_id}/decision")
async def decide(
    task_id: uuid.UUID,
    body: DecisionRequest,
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
) -> JSONResponse:
    """approve / reject / return (with documents) for a department task; approve /
    reject for a sign-off task (X-Role: approver)."""
    policy: handlers.ReviewPolicy = request.app.state.review_policy
    async with runtime_of(request).db.acquire() as conn:
        try:
            result = await handlers.decide_task(
                conn,
                policy,
                task_id=task_id,
                decision=body.decision,
                comment=body.comment,
                documents=body.documents,
                other_documents=[d.title for d in body.other_documents],
                user_id=caller.user_id,
                department=caller.department,
                role=caller.role,
            )
        except handlers.ReviewError as err:
            return _error(err)
    return JSONResponse({k: str(v) for k, v in result.items()})


@router.get("/claims/{claim_id}/review")
async def claim_review(claim_id: uuid.UUID, request: Request) -> JSONResponse:
    """The whole joint review of a claim: cross-checks, every task, who decided and when,
    deadlines with their warnings and escalations."""
    async with runtime_of(request).db.acquire() as conn:
        case = await conn.fetchrow("SELECT * FROM review_cases WHERE claim_id = $1", claim_id)
        if case is None:
            return _error(
                handlers.NotFound(
                    f"no review case for claim {claim_id}", field="claim_id", rule="exists"
                )
            )
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
    body: dict[str, Any] = {
        "claim_id": claim_id,
        "kind": case["kind"],
        "program_id": case["program_id"],
        "status": case["status"],
        "stage_started_at": case["stage_started_at"],
        "registered_by": case["registered_by"],
        "requested_amount": fen_to_yuan(case["requested_amount_fen"]),
        "eligible_amount": fen_to_yuan(case["eligible_amount_fen"]),
        "recommended_amount": optional_fen_to_yuan(case["recommended_amount_fen"]),
        "approved_amount": optional_fen_to_yuan(case["approved_amount_fen"]),
        "cross_check_result": case["cross_check_result"],
        "findings": json.loads(case["findings"]),
        "pending_documents": list(case["pending_documents"]),
        "returned_documents": list(case["returned_documents"]),
        "decision_reason": case["decision_reason"],
        "decided_at": case["decided_at"],
        "tasks": [{**dict(t), "document_titles": json.loads(t["document_titles"])} for t in tasks],
        "deadlines": [dict(d) for d in deadlines],
    }
    return JSONResponse(json.loads(json.dumps(body, default=str)))
