"""Stage 3 (联批): a claim whose approved amount is above its threshold waits for an
approver, who approves or rejects it."""

from __future__ import annotations

from services.review.adapters import cases, deadlines
from services.review.domain.model import (
    SIGN_OFF,
    Case,
    CaseStatus,
    Decision,
    Outcome,
    Task,
    outcome_of_sign_off,
)
from services.review.domain.segregation import APPROVER_ROLE, Actor
from services.review.service_layer.policy import ReviewPolicy
from services.review.service_layer.stages import finish, open_task, set_stage, stage_changed
from shared.contracts import ReviewSignedOffV1
from shared.unit_of_work import UnitOfWork


async def await_sign_off(
    uow: UnitOfWork, policy: ReviewPolicy, case: Case, outcome: Outcome
) -> None:
    """Every department approved an amount above the threshold: the sign-off task."""
    await set_stage(uow, case, CaseStatus.SIGN_OFF)
    await cases.set_recommended(uow.conn, case.claim_id, outcome.approved_amount_fen)
    await deadlines.close_all(uow.conn, case.claim_id, uow.now)
    due = await open_task(uow, policy, case.claim_id, SIGN_OFF, SIGN_OFF)
    stage_changed(
        uow, case.claim_id, CaseStatus.DEPARTMENT_REVIEW, CaseStatus.SIGN_OFF, [APPROVER_ROLE], due
    )


async def signed_off(
    uow: UnitOfWork, case: Case, task: Task, actor: Actor, decision: Decision, comment: str | None
) -> Outcome:
    """The approver's decision (already recorded on the task) decides the claim."""
    amount = case.recommended_amount_fen or 0  # set when the case entered sign-off
    outcome = outcome_of_sign_off(decision, amount, comment)
    uow.emit(
        ReviewSignedOffV1(
            task_id=task.task_id,
            decision="approve" if decision is Decision.APPROVE else "reject",
            amount_fen=amount,
            decided_by=actor.user_id,
            comment=comment,
        ),
        claim_id=case.claim_id,
    )
    await finish(uow, case, outcome)
    return outcome
