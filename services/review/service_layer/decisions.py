"""A department decides its task (approve / reject / return with documents), or an
approver signs off; what the decisions together mean for the claim follows here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict

from services.review import metrics
from services.review.adapters import cases, deadlines, tasks
from services.review.domain.model import Case, CaseStatus, Decision, Outcome, Task, outcome_after
from services.review.domain.segregation import Actor, check_may_decide, check_segregation
from services.review.service_layer import returns, sign_off
from services.review.service_layer.policy import ReviewPolicy
from services.review.service_layer.stages import finish
from shared.contracts import ReviewTaskDecidedV1
from shared.problems import NotFound
from shared.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Ruling:
    """What the caller decided, with the documents a return asks for as ids."""

    decision: Decision
    comment: str | None
    documents: list[str]
    titles: dict[str, str]


class DecisionResult(TypedDict):
    task_id: uuid.UUID
    claim_id: uuid.UUID
    task_status: str
    claim_status: str


async def decide_task(
    uow: UnitOfWork,
    policy: ReviewPolicy,
    *,
    task_id: uuid.UUID,
    decision: Decision,
    comment: str | None,
    user_id: str,
    department: str | None,
    role: str | None,
    documents: Sequence[str] = (),
    other_documents: Sequence[str] = (),
) -> DecisionResult:
    """``documents``: checklist ids asked for with a return; ``other_documents``: titles
    of documents the checklist does not name (each gets an ``other-N`` id)."""
    actor = Actor(user_id, department, role)
    case, task = await _lock(uow, task_id)
    check_may_decide(case, task, actor, decision, bool(documents or other_documents))
    asked, titles = await returns.asked_documents(uow, policy, case, documents, other_documents)
    others = await tasks.departments_decided_by(
        uow.conn, case.claim_id, user_id, other_than=task.department
    )
    check_segregation(case, task, actor, others)
    ruling = Ruling(decision, comment, asked, titles)
    await tasks.record_decision(
        uow.conn,
        task_id,
        status=decision.task_status,
        user_id=user_id,
        role=role,
        comment=comment,
        documents=asked,
        titles=titles,
        now=uow.now,
    )
    await deadlines.close_task(uow.conn, task_id, uow.now)
    if task.is_sign_off:
        outcome = await sign_off.signed_off(uow, case, task, actor, decision, comment)
    else:
        outcome = await _department_decided(uow, policy, case, task, actor, ruling)
    _count(uow, task, decision)
    return DecisionResult(
        task_id=task_id,
        claim_id=case.claim_id,
        task_status=decision.task_status.value,
        claim_status=outcome.status.value,
    )


async def _lock(uow: UnitOfWork, task_id: uuid.UUID) -> tuple[Case, Task]:
    """The task and its case, the case locked first (concurrent decisions on one claim
    are serialised there)."""
    claim_id = await tasks.claim_of(uow.conn, task_id)
    if claim_id is None:
        raise NotFound(f"no task {task_id}", field="task_id", rule="exists")
    case = await cases.lock(uow.conn, claim_id)
    task = await tasks.get(uow.conn, task_id)
    assert case is not None and task is not None  # the task references its case
    return case, task


async def _department_decided(
    uow: UnitOfWork, policy: ReviewPolicy, case: Case, task: Task, actor: Actor, ruling: Ruling
) -> Outcome:
    """Tell everyone what the department decided, then move the claim where all the
    department decisions so far put it (still in stage 2: nothing to do)."""
    uow.emit(
        ReviewTaskDecidedV1(
            task_id=task.task_id,
            department=task.department,
            decision=ruling.decision.value,
            reason=ruling.comment,
            decided_by=actor.user_id,
            documents=ruling.documents,
            document_titles=ruling.titles,
        ),
        claim_id=case.claim_id,
    )
    statuses = await tasks.department_statuses(uow.conn, case.claim_id, task.task_id)
    rejected = ruling.decision is Decision.REJECT
    outcome = outcome_after(
        statuses,
        requested_fen=case.requested_amount_fen,
        eligible_fen=case.eligible_amount_fen,
        recommended_fen=case.recommended_amount_fen,
        rejection_reason=f"{task.department}: {ruling.comment or 'rejected'}" if rejected else None,
        sign_off_threshold_fen=policy.sign_off_threshold_for(case.kind, case.program_id),
    )
    if outcome.status in (CaseStatus.APPROVED, CaseStatus.REJECTED):
        await finish(uow, case, outcome)
    elif outcome.status is CaseStatus.RETURNED:
        await returns.pause_for_documents(
            uow, case, task, ruling.documents, ruling.titles, ruling.comment
        )
    elif outcome.status is CaseStatus.SIGN_OFF:
        await sign_off.await_sign_off(uow, policy, case, outcome)
    return outcome


def _count(uow: UnitOfWork, task: Task, decision: Decision) -> None:
    decisions = metrics.DECISIONS.labels(department=task.department, decision=decision.value)
    duration = metrics.TASK_DURATION.labels(department=task.department)
    seconds = max(0.0, (uow.now - task.created_at).total_seconds())
    uow.after_commit(decisions.inc)
    uow.after_commit(lambda: duration.observe(seconds))
