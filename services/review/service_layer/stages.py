"""Steps the use cases share: move a case between stages, open tasks with their clocks,
and finish a case with its decision. Each runs inside the caller's unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from services.review import metrics
from services.review.adapters import cases, deadlines, tasks
from services.review.domain.model import Case, CaseStatus, Outcome
from services.review.service_layer.policy import ReviewPolicy
from shared.contracts import BankAccount, ReviewDecidedV1, ReviewStageChangedV1
from shared.unit_of_work import UnitOfWork

DEPARTMENT_REVIEW = CaseStatus.DEPARTMENT_REVIEW.value


async def set_stage(
    uow: UnitOfWork, case: Case, to: CaseStatus, decision: Outcome | None = None
) -> None:
    """Move the case (with its decision when final); observe the stage it leaves."""
    await cases.set_stage(uow.conn, case.claim_id, to, uow.now, decision)
    if case.status.takes_decisions:
        seconds = max(0.0, (uow.now - case.stage_started_at).total_seconds())
        histogram = metrics.STAGE_DURATION.labels(kind=case.kind, stage=case.status.value)
        uow.after_commit(lambda: histogram.observe(seconds))


async def open_task(
    uow: UnitOfWork, policy: ReviewPolicy, claim_id: uuid.UUID, department: str, stage: str
) -> datetime:
    """A pending task and its clock (the stage's time limit for a task); returns its due
    time."""
    plan = policy.plan(uow.now, policy.working_days("task", stage))
    task_id = await tasks.insert(uow.conn, claim_id, department, stage, uow.now, plan.due_at)
    await deadlines.open_deadline(uow.conn, claim_id, task_id, stage, department, plan)
    return plan.due_at


async def restart_task_clock(
    uow: UnitOfWork, policy: ReviewPolicy, claim_id: uuid.UUID, task_id: uuid.UUID, department: str
) -> None:
    """A fresh clock for a task still pending when its case resumes."""
    plan = policy.plan(uow.now, policy.task_working_days)
    await tasks.set_due(uow.conn, task_id, plan.due_at)
    await deadlines.open_deadline(uow.conn, claim_id, task_id, DEPARTMENT_REVIEW, department, plan)


async def start_department_tasks(
    uow: UnitOfWork, policy: ReviewPolicy, claim_id: uuid.UUID, departments: Sequence[str]
) -> datetime:
    """One pending task per department, all at the same moment, each with its deadline;
    plus the deadline of the stage. Returns the stage's due time."""
    for department in departments:
        await open_task(uow, policy, claim_id, department, DEPARTMENT_REVIEW)
    plan = policy.plan(uow.now, policy.department_review_working_days)
    await deadlines.open_deadline(uow.conn, claim_id, None, DEPARTMENT_REVIEW, None, plan)
    return plan.due_at


def stage_changed(
    uow: UnitOfWork,
    claim_id: uuid.UUID,
    left: CaseStatus,
    to: CaseStatus,
    departments: Sequence[str] = (),
    due_at: datetime | None = None,
) -> None:
    """Tell everyone the claim moved: who holds it now, and by when."""
    uow.emit(
        ReviewStageChangedV1(
            from_stage=left.value,
            to_stage=to.value,
            departments=list(departments),
            due_at=due_at,
        ),
        claim_id=claim_id,
    )


async def stop(uow: UnitOfWork, case: Case, to: CaseStatus, decision: Outcome | None) -> None:
    """A final stage: cancel the open tasks, close the clocks."""
    await set_stage(uow, case, to, decision)
    await tasks.cancel_pending(uow.conn, case.claim_id)
    await deadlines.close_all(uow.conn, case.claim_id, uow.now)


async def finish(uow: UnitOfWork, case: Case, outcome: Outcome) -> None:
    """Approve or reject the claim: cancel what is open, close the clocks, tell everyone."""
    await stop(uow, case, outcome.status, outcome)
    approved = outcome.status is CaseStatus.APPROVED
    if approved:
        counter = metrics.AMOUNT_APPROVED.labels(kind=case.kind, fund=case.fund or "unknown")
        yuan = outcome.approved_amount_fen / 100
        # Counted once the decision has committed (not on a rollback or a re-run).
        uow.after_commit(lambda: counter.inc(yuan))
    stage_changed(uow, case.claim_id, case.status, outcome.status)
    uow.emit(
        ReviewDecidedV1(
            decision="approved" if approved else "rejected",
            approved_amount_fen=outcome.approved_amount_fen,
            reason=outcome.reason,
            claim_kind=case.kind,
            program_id=case.program_id,
            payee=BankAccount.model_validate_json(case.payee_json),
            claim_received_at=case.claim_received_at,
            documents_pending=approved and bool(case.pending_documents),
        ),
        claim_id=case.claim_id,
    )
