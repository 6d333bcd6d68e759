"""Routes for department reviewers."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.review.domain.model import Decision
from services.review.service_layer import handlers
from shared.identity import Caller, current_caller
from shared.money import fen_to_yuan
from shared.service_app import runtime_of

router = APIRouter(tags=["review"])


class WorklistItem(BaseModel):
    task_id: uuid.UUID
    claim_id: uuid.UUID
    department: str
    kind: str
    uscc: str
    enterprise_name: str
    requested_amount: Decimal
    eligible_amount: Decimal
    created_at: datetime
    due_at: datetime
    overdue: bool


class DecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Decision
    comment: str | None = Field(default=None, max_length=2000)


@router.get("/worklist", response_model=list[WorklistItem])
async def worklist(
    request: Request,
    department: Annotated[str, Query(min_length=1)],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[WorklistItem]:
    async with runtime_of(request).db.acquire() as conn:
        rows = await conn.fetch(
            """SELECT t.task_id, t.claim_id, t.department, t.created_at, t.due_at,
                      t.due_at < now() AS overdue, c.kind, c.uscc, c.enterprise_name,
                      c.requested_amount_fen, c.eligible_amount_fen
               FROM review_tasks t JOIN review_cases c USING (claim_id)
               WHERE t.department = $1 AND t.status = 'pending'
               ORDER BY t.due_at, t.created_at LIMIT $2""",
            department,
            limit,
        )
    return [
        WorklistItem(
            requested_amount=fen_to_yuan(r["requested_amount_fen"]),
            eligible_amount=fen_to_yuan(r["eligible_amount_fen"]),
            **{
                k: r[k]
                for k in (
                    "task_id",
                    "claim_id",
                    "department",
                    "kind",
                    "uscc",
                    "enterprise_name",
                    "created_at",
                    "due_at",
                    "overdue",
                )
            },
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
    async with runtime_of(request).db.acquire() as conn:
        try:
            result = await handlers.decide_task(
                conn,
                task_id=task_id,
                decision=body.decision,
                comment=body.comment,
                user_id=caller.user_id,
                department=caller.department,
            )
        except handlers.ReviewError as err:
            return JSONResponse(
                status_code=err.status_code,
                content={
                    "detail": str(err),
                    "errors": [{"field": err.field, "rule": err.rule, "message": str(err)}],
                },
            )
    return JSONResponse({k: str(v) for k, v in result.items()})


@router.get("/claims/{claim_id}/review")
async def claim_review(claim_id: uuid.UUID, request: Request) -> dict[str, object]:
    async with runtime_of(request).db.acquire() as conn:
        case = await conn.fetchrow("SELECT * FROM review_cases WHERE claim_id = $1", claim_id)
        if case is None:
            raise HTTPException(404, detail=f"no review case for claim {claim_id}")
        tasks = await conn.fetch(
            """SELECT task_id, department, status, due_at, decided_by, decided_at, comment
               FROM review_tasks WHERE claim_id = $1 ORDER BY department""",
            claim_id,
        )
    approved = case["approved_amount_fen"]
    return {
        "claim_id": claim_id,
        "status": case["status"],
        "approved_amount": fen_to_yuan(approved) if approved is not None else None,
        "decision_reason": case["decision_reason"],
        "decided_at": case["decided_at"],
        "tasks": [dict(t) for t in tasks],
    }
