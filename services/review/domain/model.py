"""Joint review (联核联审联批) as pure rules: the stages of a case, what a set of task
decisions means for it, and the deadlines (限时办结) of its stages and tasks.

    arrival ─▶ cross_check ──fail──▶ rejected
                   │ pass / warn
                   ▼
           department_review ──any reject──▶ rejected (open tasks cancelled)
              │   ▲      │ any return
              │   │      ▼
              │   └── returned  (documents arrive → a new task for that department)
              │ all approve
              ├── amount ≤ threshold ──▶ approved
              └── amount > threshold ──▶ sign_off ──approve──▶ approved
                                                  └─reject───▶ rejected
    any stage before a decision ──claim.withdrawn / claim.lapsed──▶ withdrawn / lapsed
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shared.workdays import deadline_after

SIGN_OFF = "sign_off"
"""The pseudo-department of stage-3 tasks."""


class TaskStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETURNED = "returned"
    CANCELLED = "cancelled"


class CaseStatus(StrEnum):
    CROSS_CHECK = "cross_check"
    DEPARTMENT_REVIEW = "department_review"
    RETURNED = "returned"
    SIGN_OFF = "sign_off"
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"
    LAPSED = "lapsed"

    @property
    def is_final(self) -> bool:
        return self in FINAL

    @property
    def takes_decisions(self) -> bool:
        return self in (CaseStatus.DEPARTMENT_REVIEW, CaseStatus.SIGN_OFF)


FINAL = frozenset(
    {CaseStatus.APPROVED, CaseStatus.REJECTED, CaseStatus.WITHDRAWN, CaseStatus.LAPSED}
)


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    RETURN = "return"

    @property
    def task_status(self) -> TaskStatus:
        return {
            Decision.APPROVE: TaskStatus.APPROVED,
            Decision.REJECT: TaskStatus.REJECTED,
            Decision.RETURN: TaskStatus.RETURNED,
        }[self]


@dataclass(frozen=True)
class Case:
    """A claim under review, as the use cases need it (``adapters.cases`` loads it)."""

    claim_id: uuid.UUID
    kind: str
    program_id: str | None
    fund: str | None
    status: CaseStatus
    stage_started_at: datetime
    registered_by: str
    requested_amount_fen: int
    eligible_amount_fen: int
    recommended_amount_fen: int | None
    payee_json: str
    claim_received_at: datetime
    pending_documents: tuple[str, ...]
    returned_documents: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    """One department's (or the approver's) task on a case."""

    task_id: uuid.UUID
    claim_id: uuid.UUID
    department: str
    stage: str
    status: TaskStatus
    created_at: datetime

    @property
    def is_sign_off(self) -> bool:
        return self.stage == SIGN_OFF


@dataclass(frozen=True)
class Outcome:
    status: CaseStatus
    approved_amount_fen: int
    reason: str | None


def outcome_after(
    task_statuses: list[TaskStatus],
    *,
    requested_fen: int,
    eligible_fen: int,
    rejection_reason: str | None,
    recommended_fen: int | None = None,
    sign_off_threshold_fen: int | None = None,
) -> Outcome:
    """The case's stage once the given department task statuses stand (stage 2).

    One rejection rejects the claim at once; a return pauses it; all approvals approve
    the recommended amount (the lesser of requested, eligible and what the program's
    cap leaves), going to sign-off first when that is above the threshold. A claim with
    nothing to approve cannot be approved.
    """
    if TaskStatus.REJECTED in task_statuses:
        return Outcome(CaseStatus.REJECTED, 0, rejection_reason or "rejected by a department")
    if TaskStatus.RETURNED in task_statuses:
        return Outcome(CaseStatus.RETURNED, 0, None)
    if task_statuses and all(s is TaskStatus.APPROVED for s in task_statuses):
        amount = min(requested_fen, eligible_fen)
        if recommended_fen is not None:
            amount = min(amount, recommended_fen)
        if amount <= 0:
            return Outcome(CaseStatus.REJECTED, 0, "nothing eligible to approve")
        if sign_off_threshold_fen is not None and amount > sign_off_threshold_fen:
            return Outcome(CaseStatus.SIGN_OFF, amount, None)
        return Outcome(CaseStatus.APPROVED, amount, None)
    return Outcome(CaseStatus.DEPARTMENT_REVIEW, 0, None)


def outcome_of_sign_off(decision: Decision, amount_fen: int, comment: str | None) -> Outcome:
    if decision is Decision.APPROVE:
        return Outcome(CaseStatus.APPROVED, amount_fen, None)
    if decision is Decision.REJECT:
        return Outcome(CaseStatus.REJECTED, 0, comment or "refused at sign-off")
    raise ValueError("sign-off is approve or reject; documents are asked for at stage 2")


def remaining_documents(asked: list[str], supplied: str) -> list[str]:
    """What a returned claim still waits for after one document arrived."""
    return [d for d in asked if d != supplied]


@dataclass(frozen=True)
class DeadlinePlan:
    started_at: datetime
    warn_at: datetime
    due_at: datetime
    working_days: int


def plan_deadline(
    start: datetime, working_days: int, warn_working_days_before: int
) -> DeadlinePlan:
    """Deadline at the end of the ``working_days``-th working day after ``start``
    (Beijing calendar, holidays and make-up workdays); the warning at the end of the
    working day ``warn_working_days_before`` earlier, or half-way for short limits."""
    if working_days < 1:
        raise ValueError("a time limit is at least one working day")
    due = deadline_after(start, working_days)
    if 0 < warn_working_days_before < working_days:
        # The due time reports a fallback calendar; its warning does not count again.
        warn = deadline_after(start, working_days - warn_working_days_before, report=False)
    else:
        warn = start + (due - start) / 2
    return DeadlinePlan(
        started_at=start, warn_at=max(start, warn), due_at=due, working_days=working_days
    )


def escalated_to(scope: str, stage: str, department: str | None) -> str:
    """Who an overdue deadline goes to: the approver's superior for a sign-off, the
    department head for a task, the joint review office for the stage as a whole."""
    if stage == SIGN_OFF:
        return "deputy director (分管领导)"
    if scope == "task":
        return f"head of the {department} department"
    return "joint review office (联审办)"
