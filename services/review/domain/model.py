"""Joint review: parallel department tasks decide one claim."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TaskStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


class CaseStatus(StrEnum):
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    REJECTED = "rejected"


class Decision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


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
) -> Outcome:
    """The case's state once the given task statuses stand.

    One rejection rejects the claim; all approvals approve the lesser of the requested
    and the eligible amount; a claim with nothing eligible cannot be approved.
    """
    if TaskStatus.REJECTED in task_statuses:
        return Outcome(CaseStatus.REJECTED, 0, rejection_reason or "rejected by a department")
    if task_statuses and all(s is TaskStatus.APPROVED for s in task_statuses):
        amount = min(requested_fen, eligible_fen)
        if amount <= 0:
            return Outcome(CaseStatus.REJECTED, 0, "nothing eligible to refund")
        return Outcome(CaseStatus.APPROVED, amount, None)
    return Outcome(CaseStatus.IN_REVIEW, 0, None)
