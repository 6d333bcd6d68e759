"""Stage logic of the joint review (pure): all approve, one rejects mid-way, return for
documents and resume, sign-off above the threshold."""

from __future__ import annotations

import pytest

from services.review.domain.model import (
    CaseStatus,
    Decision,
    TaskStatus,
    outcome_after,
    outcome_of_sign_off,
    remaining_documents,
)

A, R, P, RET = TaskStatus.APPROVED, TaskStatus.REJECTED, TaskStatus.PENDING, TaskStatus.RETURNED
THRESHOLD = 1_000_000_00


def test_all_departments_approve_the_lesser_of_requested_eligible_and_recommended() -> None:
    out = outcome_after([A, A], requested_fen=500, eligible_fen=400, rejection_reason=None)
    assert (out.status, out.approved_amount_fen) == (CaseStatus.APPROVED, 400)
    capped = outcome_after(
        [A, A, A], requested_fen=500, eligible_fen=400, recommended_fen=300, rejection_reason=None
    )
    assert capped.approved_amount_fen == 300


def test_one_rejection_rejects_mid_way_while_others_are_pending() -> None:
    out = outcome_after(
        [A, R, P], requested_fen=500, eligible_fen=500, rejection_reason="tax: blacklisted"
    )
    assert (out.status, out.reason, out.approved_amount_fen) == (
        CaseStatus.REJECTED,
        "tax: blacklisted",
        0,
    )


def test_waits_while_any_department_is_pending() -> None:
    out = outcome_after([A, P, P], requested_fen=1, eligible_fen=1, rejection_reason=None)
    assert out.status is CaseStatus.DEPARTMENT_REVIEW


def test_a_return_pauses_the_claim_and_a_rejection_still_wins() -> None:
    assert (
        outcome_after([A, RET, P], requested_fen=1, eligible_fen=1, rejection_reason=None).status
        is CaseStatus.RETURNED
    )
    assert (
        outcome_after([RET, R], requested_fen=1, eligible_fen=1, rejection_reason="x").status
        is CaseStatus.REJECTED
    )


def test_resume_waits_for_every_document_asked_for() -> None:
    asked = ["audit_report", "tax_clearance"]
    left = remaining_documents(asked, "audit_report")
    assert left == ["tax_clearance"]
    assert remaining_documents(left, "tax_clearance") == []
    assert remaining_documents(asked, "something_else") == asked


def test_above_the_threshold_goes_to_sign_off_at_or_below_is_final() -> None:
    above = outcome_after(
        [A, A],
        requested_fen=THRESHOLD + 1,
        eligible_fen=THRESHOLD + 1,
        rejection_reason=None,
        sign_off_threshold_fen=THRESHOLD,
    )
    assert (above.status, above.approved_amount_fen) == (CaseStatus.SIGN_OFF, THRESHOLD + 1)
    at = outcome_after(
        [A, A],
        requested_fen=THRESHOLD,
        eligible_fen=THRESHOLD * 2,
        rejection_reason=None,
        sign_off_threshold_fen=THRESHOLD,
    )
    assert at.status is CaseStatus.APPROVED


def test_sign_off_approves_the_amount_or_rejects_and_never_returns() -> None:
    assert outcome_of_sign_off(Decision.APPROVE, 5, None).approved_amount_fen == 5
    refused = outcome_of_sign_off(Decision.REJECT, 5, "budget policy")
    assert (refused.status, refused.reason) == (CaseStatus.REJECTED, "budget policy")
    with pytest.raises(ValueError):
        outcome_of_sign_off(Decision.RETURN, 5, None)


def test_nothing_eligible_cannot_be_approved() -> None:
    out = outcome_after([A, A], requested_fen=500, eligible_fen=0, rejection_reason=None)
    assert out.status is CaseStatus.REJECTED
