"""Who may decide a task (segregation of duties, 职责分离) as pure rules.

* the caller acts for the task's department (a sign-off: has the approver role);
* the task is still pending and the case is in the stage that takes this decision;
* the registrant of a claim (the window clerk) decides none of its tasks;
* one person decides for at most one department of a claim;
* the approver who signs off was none of the claim's department reviewers.

The database enforces the last three too (migration 0002's trigger and checks): when
two requests race past these checks, the constraint it names is turned into the same
refusal here (``refusal_for_constraint``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.review.domain.model import SIGN_OFF, Case, CaseStatus, Decision, Task, TaskStatus
from shared.problems import Conflict, Forbidden, Invalid

APPROVER_ROLE = "approver"

CALLER_FIELD = "token.sub"

SEGREGATION_RULES = {
    "review_segregation_registrant": "the registrant of a claim cannot review it",
    "review_segregation_one_department": (
        "one person cannot decide for two departments on one claim"
    ),
    "review_segregation_approver": "the approver cannot be one of the claim's reviewers",
    "review_tasks_sign_off_by_approver": "only an approver signs off",
}
"""Database constraint (or trigger) name → what it means; the rule named in a refusal
is the constraint name without its ``review_`` prefix."""


@dataclass(frozen=True)
class Actor:
    """The caller of a decision, as the identity dependency names them."""

    user_id: str
    department: str | None
    role: str | None


def check_may_decide(
    case: Case, task: Task, actor: Actor, decision: Decision, asks_documents: bool
) -> None:
    """The caller's role or department fits the task, the task and the case are open
    for this decision, and documents come with a return and only with one."""
    if task.is_sign_off:
        if actor.role != APPROVER_ROLE:
            raise Forbidden(
                "only a person with the approver role signs off",
                field="token.roles",
                rule="approver_role",
            )
        if decision is Decision.RETURN:
            raise Invalid(
                "sign-off is approve or reject; documents are asked for by the departments",
                field="decision",
                rule="sign_off_decision",
            )
    elif actor.department != task.department:
        raise Forbidden(
            f"task belongs to department {task.department!r}",
            field="token.department",
            rule="task_department",
        )
    if task.status is not TaskStatus.PENDING:
        raise Conflict(f"task is already {task.status}", field="task_id", rule="task_pending")
    expected = CaseStatus.SIGN_OFF if task.is_sign_off else CaseStatus.DEPARTMENT_REVIEW
    if case.status is not expected:
        raise Conflict(
            f"the claim is {case.status}, not open for this decision",
            field="task_id",
            rule="claim_stage",
        )
    if decision is Decision.RETURN and not asks_documents:
        raise Invalid(
            "name the documents the enterprise must supply",
            field="documents",
            rule="required_for_return",
        )
    if decision is not Decision.RETURN and asks_documents:
        raise Invalid(
            "documents are asked for only with a return",
            field="documents",
            rule="only_for_return",
        )


def check_segregation(
    case: Case, task: Task, actor: Actor, other_departments: Sequence[str]
) -> None:
    """``other_departments``: the departments other than the task's that ``actor``
    already decided for on this claim (``sign_off`` among them for an approver)."""
    if case.registered_by == actor.user_id:
        raise _refusal("review_segregation_registrant")
    if other_departments:
        approver = task.is_sign_off or SIGN_OFF in other_departments
        raise _refusal(
            "review_segregation_approver" if approver else "review_segregation_one_department"
        )


def refusal_for_constraint(constraint: str | None) -> Forbidden | None:
    """The refusal a segregation constraint of the database stands for, else None."""
    if constraint is None or constraint not in SEGREGATION_RULES:
        return None
    return _refusal(constraint)


def _refusal(constraint: str) -> Forbidden:
    return Forbidden(
        SEGREGATION_RULES[constraint],
        field=CALLER_FIELD,
        rule=constraint.removeprefix("review_"),
    )
