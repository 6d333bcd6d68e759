"""Routes for department reviewers and approvers. Thin: parse, call a use case or a
view, answer. Refusals of the use cases become the one problem body (service_app)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from services.review import views
from services.review.domain.model import Decision
from services.review.service_layer import decisions
from services.review.service_layer.policy import ReviewPolicy
from shared.audit.history import ClaimAudit
from shared.auth.scope import ReviewReadDesks, WorklistDesks, off_desk_worklist
from shared.http_cache import NOT_MODIFIED_DOC, conditional_json
from shared.http_deps import ConnectionDep, RuntimeDep, UnitOfWorkDep
from shared.identity import CallerDep

router = APIRouter(tags=["review"])


async def _policy(runtime: RuntimeDep) -> ReviewPolicy:
    policy: ReviewPolicy = runtime.extras["review_policy"]
    return policy


PolicyDep = Annotated[ReviewPolicy, Depends(_policy)]


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


class DecisionOut(BaseModel):
    task_id: uuid.UUID
    claim_id: uuid.UUID
    task_status: str
    claim_status: str
    """The claim's stage after this decision (department_review while others decide)."""


@router.get("/worklist", response_model=list[views.WorklistItem], responses=NOT_MODIFIED_DOC)
async def worklist(
    request: Request,
    conn: ConnectionDep,
    department: Annotated[
        str, Query(min_length=1, description="a department, or sign_off for approvers")
    ],
    desks: WorklistDesks,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """Tasks waiting for the department, oldest deadline first, with the cross-checks.
    A department reviewer reads only their own department's worklist (403 otherwise).
    Carries an ETag; polling with If-None-Match gets 304 while nothing changed."""
    if desks is not None and department not in desks:
        raise off_desk_worklist(department, desks)
    return conditional_json(request, await views.worklist(conn, department, limit))


@router.post("/tasks/{task_id}/decision", response_model=DecisionOut)
async def decide(
    task_id: uuid.UUID,
    body: DecisionRequest,
    uow: UnitOfWorkDep,
    policy: PolicyDep,
    caller: CallerDep,
) -> DecisionOut:
    """approve / reject / return (with documents) for a department task; approve /
    reject for a sign-off task (an approver's token)."""
    result = await decisions.decide_task(
        uow,
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
    return DecisionOut(**result)


@router.get("/claims/{claim_id}/review", response_model=views.ClaimReview)
async def claim_review(
    claim_id: uuid.UUID, conn: ConnectionDep, desks: ReviewReadDesks
) -> views.ClaimReview:
    """The whole joint review of a claim: cross-checks, every task, who decided and when,
    deadlines with their warnings and escalations. A department reviewer reads it only
    when their department has (or had) a task on the claim (403 department_scope, the
    same answer as for a claim review does not know)."""
    return await views.claim_review(conn, claim_id, desks=desks)


@router.get("/claims/{claim_id}/audit", response_model=ClaimAudit, tags=["audit"])
async def claim_audit(claim_id: uuid.UUID, conn: ConnectionDep, runtime: RuntimeDep) -> ClaimAudit:
    """Auditors: the claim's hash-chained history in this service, every entry verified
    on the server now (hash, link, head, signed seals, state rows against the chain),
    with each break named (docs/audit.md). 404 when the service never saw the claim."""
    return await views.claim_audit(conn, runtime.settings, claim_id)
