"""The tracker's old one-event transition table, expressed on the event fold: a
status is reached by a canonical history, the event is appended, and the fold decides.
Keeps the original transition tests' table and assertions."""

from __future__ import annotations

from typing import Any

from services.intake.domain.model import ClaimStatus, TrackedEvent, derive_status


def _e(producer: str, event_type: str, **payload: Any) -> TrackedEvent:
    return TrackedEvent(producer, event_type, payload)


_SUBMITTED = [_e("intake", "claim.submitted", pending_documents=[])]
_APPROVED = [*_SUBMITTED, _e("review", "review.decided", decision="approved")]
_SENT = [*_APPROVED, _e("payout", "payout.requested"), _e("payout", "payout.sent")]
HISTORIES: dict[ClaimStatus, list[TrackedEvent]] = {
    ClaimStatus.SUBMITTED: _SUBMITTED,
    ClaimStatus.ACCEPTED_DOCUMENTS_PENDING: [
        _e("intake", "claim.submitted", pending_documents=["audit_report"])
    ],
    ClaimStatus.IN_REVIEW: [*_SUBMITTED, _e("review", "review.task_decided", decision="approve")],
    ClaimStatus.RETURNED_FOR_DOCUMENTS: [
        *_SUBMITTED,
        _e("review", "review.returned_for_documents", documents=[]),
    ],
    ClaimStatus.APPROVED: _APPROVED,
    ClaimStatus.REJECTED: [*_SUBMITTED, _e("review", "review.decided", decision="rejected")],
    ClaimStatus.PAYOUT_QUEUED: [*_APPROVED, _e("payout", "payout.queued")],
    ClaimStatus.PAYOUT_SENT: _SENT,
    ClaimStatus.PAID: [*_SENT, _e("payout", "payout.confirmed")],
    ClaimStatus.PAYOUT_RETURNED: [*_SENT, _e("payout", "payout.returned")],
    ClaimStatus.LAPSED: [*_SUBMITTED, _e("intake", "claim.lapsed")],
    ClaimStatus.WITHDRAWN: [*_SUBMITTED, _e("intake", "claim.withdrawn")],
}


def status_after(
    current: ClaimStatus, event_type: str, payload: dict[str, Any], *, documents_pending: bool
) -> ClaimStatus | None:
    """The status ``event_type`` moves a claim in ``current`` to (None: no move)."""
    history = HISTORIES[current]
    assert derive_status(history, documents_pending=documents_pending) is current
    producer = event_type.split(".")[0]
    producer = {"claim": "intake"}.get(producer, producer)
    after = derive_status(
        [*history, TrackedEvent(producer, event_type, payload)],
        documents_pending=documents_pending,
    )
    return None if after is current else after
