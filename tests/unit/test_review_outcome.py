from __future__ import annotations

from services.review.domain.model import CaseStatus, TaskStatus, outcome_after

A, R, P = TaskStatus.APPROVED, TaskStatus.REJECTED, TaskStatus.PENDING


def test_all_departments_approve_the_lesser_of_requested_and_eligible() -> None:
    out = outcome_after([A, A], requested_fen=500, eligible_fen=400, rejection_reason=None)
    assert (out.status, out.approved_amount_fen) == (CaseStatus.APPROVED, 400)


def test_one_rejection_rejects_even_while_others_are_pending() -> None:
    out = outcome_after(
        [A, R, P], requested_fen=500, eligible_fen=500, rejection_reason="blacklisted"
    )
    assert (out.status, out.reason) == (CaseStatus.REJECTED, "blacklisted")


def test_waits_while_any_department_is_pending() -> None:
    assert outcome_after([A, P], requested_fen=1, eligible_fen=1, rejection_reason=None).status is (
        CaseStatus.IN_REVIEW
    )


def test_nothing_eligible_cannot_be_approved() -> None:
    out = outcome_after([A, A], requested_fen=500, eligible_fen=0, rejection_reason=None)
    assert out.status is CaseStatus.REJECTED
