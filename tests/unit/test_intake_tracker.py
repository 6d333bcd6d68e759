"""The tracker's status is a function of the events it has seen: each producer's events
in that producer's order, whatever the interleaving between services (issue 9, item 6),
and the payout dead ends finance resolves (item 7, tracker side)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from services.intake.domain.model import (
    CLOSED,
    FINAL,
    FINANCE_ACTS,
    HOLDER,
    ClaimStatus,
    TrackedEvent,
    derive_status,
)


def e(producer: str, event_type: str, **payload: Any) -> TrackedEvent:
    return TrackedEvent(producer, event_type, payload)


def interleavings(*streams: Sequence[TrackedEvent]) -> Iterator[list[TrackedEvent]]:
    """Every merge of the streams that keeps each stream's own order."""
    tagged = [i for i, s in enumerate(streams) for _ in s]
    for order in set(itertools.permutations(tagged)):
        positions = [0] * len(streams)
        merged = []
        for i in order:
            merged.append(streams[i][positions[i]])
            positions[i] += 1
        yield merged


def all_statuses(*streams: Sequence[TrackedEvent], pending: bool = False) -> set[ClaimStatus]:
    return {derive_status(m, documents_pending=pending) for m in interleavings(*streams)}


SUBMITTED_WITH_PROMISE = e("intake", "claim.submitted", pending_documents=["audit_report"])


def test_a_rejection_is_never_lost_to_a_document_supplied_a_moment_later() -> None:
    """The window race of item 6: the claim is registered with a promised document,
    review rejects it at once (cross-check failure), the window records the document
    0-100 ms later. Whatever arrives first, the claim is rejected."""
    intake = [
        SUBMITTED_WITH_PROMISE,
        e("intake", "claim.document_supplied", document="audit_report", still_pending=[]),
        e("intake", "claim.documents_completed"),
    ]
    review = [
        e("review", "review.cross_checked", result="fail"),
        e("review", "review.stage_changed", from_stage="cross_check", to_stage="rejected"),
        e("review", "review.decided", decision="rejected"),
    ]
    assert all_statuses(intake, review) == {ClaimStatus.REJECTED}


def test_every_interleaving_of_a_paid_claim_gives_paid() -> None:
    intake = [SUBMITTED_WITH_PROMISE, e("intake", "claim.documents_completed")]
    review = [
        e("review", "review.task_decided", decision="approve", department="finance"),
        e("review", "review.task_decided", decision="approve", department="industry"),
        e("review", "review.decided", decision="approved"),
    ]
    payout = [
        e("payout", "payout.held"),
        e("payout", "payout.requested"),
        e("payout", "payout.sent"),
        e("payout", "payout.confirmed"),
    ]
    assert all_statuses(intake, review, payout) == {ClaimStatus.PAID}


def test_withdrawal_racing_a_decision_and_a_release() -> None:
    intake = [e("intake", "claim.submitted", pending_documents=[]), e("intake", "claim.withdrawn")]
    review = [e("review", "review.decided", decision="approved")]
    payout = [e("payout", "payout.queued"), e("payout", "payout.released", reason="withdrawn")]
    assert all_statuses(intake, review, payout) == {ClaimStatus.WITHDRAWN}
    # Money that left anyway is never hidden behind the withdrawal.
    sent = [e("payout", "payout.requested"), e("payout", "payout.sent")]
    assert all_statuses(intake, review, sent) == {ClaimStatus.PAYOUT_SENT}


def test_return_for_documents_and_resume_in_any_interleaving() -> None:
    intake = [e("intake", "claim.submitted", pending_documents=[])]
    review = [
        e("review", "review.task_decided", decision="return", department="tax"),
        e("review", "review.returned_for_documents", department="tax", documents=["vat_returns"]),
    ]
    assert all_statuses(intake, review, pending=True) == {ClaimStatus.RETURNED_FOR_DOCUMENTS}
    supplied = [
        *intake,
        e("intake", "claim.document_supplied", document="vat_returns", still_pending=[]),
        e("intake", "claim.documents_completed"),
    ]
    # Supplied, review not yet resumed: back with review.
    assert all_statuses(supplied, review) == {ClaimStatus.IN_REVIEW}
    resumed = [
        *review,
        e("review", "review.stage_changed", from_stage="returned", to_stage="department_review"),
        e("review", "review.decided", decision="approved"),
    ]
    assert all_statuses(supplied, resumed) == {ClaimStatus.APPROVED}


def test_permanent_failure_account_correction_and_payment() -> None:
    intake = [e("intake", "claim.submitted", pending_documents=[])]
    review = [e("review", "review.decided", decision="approved")]
    failed = [
        e("payout", "payout.requested"),
        e("payout", "payout.sent"),
        e("payout", "payout.failed", permanent=True, reason="account closed"),
    ]
    assert all_statuses(intake, review, failed) == {ClaimStatus.PAYOUT_FAILED}
    corrected = [*failed, e("payout", "payout.account_corrected", corrected_by="fin-01")]
    assert all_statuses(intake, review, corrected) == {ClaimStatus.PAYOUT_REQUESTED}
    paid = [*corrected, e("payout", "payout.sent"), e("payout", "payout.confirmed")]
    assert all_statuses(intake, review, paid) == {ClaimStatus.PAID}
    returned = [
        e("payout", "payout.requested"),
        e("payout", "payout.sent"),
        e("payout", "payout.returned", reason="name mismatch"),
        e("payout", "payout.account_corrected", corrected_by="fin-01"),
    ]
    assert all_statuses(intake, review, returned) == {ClaimStatus.PAYOUT_REQUESTED}


def test_a_withheld_payout_is_held_by_finance_until_released_or_cancelled() -> None:
    """Payout withholds an approval that is not what intake received (issue 12 item 5):
    the window shows finance holding it, not "approved" for good."""
    intake = [e("intake", "claim.submitted", pending_documents=[])]
    review = [e("review", "review.decided", decision="approved")]
    withheld = [e("payout", "payout.withheld", reason="payee_mismatch")]
    assert all_statuses(intake, review, withheld) == {ClaimStatus.PAYOUT_WITHHELD}
    assert HOLDER[ClaimStatus.PAYOUT_WITHHELD].startswith("finance")
    assert ClaimStatus.PAYOUT_WITHHELD in FINANCE_ACTS  # with finance's deadline
    released = [*withheld, e("payout", "payout.requested")]
    assert all_statuses(intake, review, released) == {ClaimStatus.PAYOUT_REQUESTED}
    cancelled = [
        *withheld,
        e("payout", "payout.released", reason="withheld payout cancelled by finance: x"),
    ]
    assert all_statuses(intake, review, cancelled) == {ClaimStatus.CLOSED}


def test_finance_closes_a_failed_payout_and_frees_the_slot() -> None:
    intake = [e("intake", "claim.submitted", pending_documents=[])]
    review = [e("review", "review.decided", decision="approved")]
    closed = [
        e("payout", "payout.requested"),
        e("payout", "payout.failed", permanent=True, reason="account closed"),
        e("payout", "payout.released", reason="closed by finance: enterprise deregistered"),
    ]
    assert all_statuses(intake, review, closed) == {ClaimStatus.CLOSED}
    assert ClaimStatus.CLOSED in FINAL and ClaimStatus.CLOSED in CLOSED
    assert HOLDER[ClaimStatus.CLOSED] == "none (final)"
    assert HOLDER[ClaimStatus.PAYOUT_FAILED].startswith("finance")
    # A release for any other reason (the claim lapsed) is not a closure by finance.
    other = [e("payout", "payout.queued"), e("payout", "payout.released", reason="lapsed")]
    assert all_statuses(intake, review, other) == {ClaimStatus.PAYOUT_QUEUED}


@pytest.mark.parametrize("status", list(ClaimStatus))
def test_every_status_is_reachable_by_some_history(status: ClaimStatus) -> None:
    """Every status the tracker can show comes out of the fold (and so must be
    filterable in GET /claims, see test_intake_requests)."""
    from tests.unit.tracker_histories import HISTORIES

    histories = {
        **HISTORIES,
        ClaimStatus.APPROVED_DOCUMENTS_PENDING: HISTORIES[ClaimStatus.APPROVED],
        ClaimStatus.PAYOUT_REQUESTED: [
            *HISTORIES[ClaimStatus.APPROVED],
            e("payout", "payout.requested"),
        ],
        ClaimStatus.PAYOUT_FAILED: [
            *HISTORIES[ClaimStatus.PAYOUT_SENT],
            e("payout", "payout.failed", permanent=True),
        ],
        ClaimStatus.PAYOUT_WITHHELD: [
            *HISTORIES[ClaimStatus.APPROVED],
            e("payout", "payout.withheld", reason="above_eligible"),
        ],
        ClaimStatus.CLOSED: [
            *HISTORIES[ClaimStatus.PAYOUT_SENT],
            e("payout", "payout.failed", permanent=True),
            e("payout", "payout.released", reason="closed by finance: x"),
        ],
    }
    pending = status in (
        ClaimStatus.APPROVED_DOCUMENTS_PENDING,
        ClaimStatus.ACCEPTED_DOCUMENTS_PENDING,
    )
    assert derive_status(histories[status], documents_pending=pending) is status


def test_only_a_permanent_failure_puts_the_payout_in_finance_hands() -> None:
    intake = [e("intake", "claim.submitted", pending_documents=[])]
    review = [e("review", "review.decided", decision="approved")]
    transient = [
        e("payout", "payout.requested"),
        e("payout", "payout.failed", permanent=False, reason="timeout"),
    ]
    assert all_statuses(intake, review, transient) == {ClaimStatus.PAYOUT_REQUESTED}
