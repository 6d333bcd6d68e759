"""Intake's domain: claim statuses as the tracker sees them, who holds a claim, and the
status folded from the events seen (the window's own rules: ``rules.py``).

Everything here is pure (no I/O) and unit-tested.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ClaimStatus(StrEnum):
    SUBMITTED = "submitted"
    """Complete at the window; with review."""
    ACCEPTED_DOCUMENTS_PENDING = "accepted_documents_pending"
    """Accepted with documents promised (容缺受理); with review at once."""
    IN_REVIEW = "in_review"
    RETURNED_FOR_DOCUMENTS = "returned_for_documents"
    """A department paused the review until the enterprise supplies documents."""
    APPROVED = "approved"
    APPROVED_DOCUMENTS_PENDING = "approved_documents_pending"
    """Approved conditionally: payout holds the money until the documents arrive."""
    REJECTED = "rejected"
    PAYOUT_QUEUED = "payout_queued"
    """Approved, waiting for the program's budget to cover it (first come, first served)."""
    PAYOUT_REQUESTED = "payout_requested"
    PAYOUT_SENT = "payout_sent"
    PAYOUT_RETURNED = "payout_returned"
    """The bank returned the payment (account name mismatch): finance corrects the account."""
    PAYOUT_FAILED = "payout_failed"
    """The payment failed for good (closed account): finance corrects the account and
    re-issues, or closes the claim with a reason."""
    PAYOUT_WITHHELD = "payout_withheld"
    """Payout stopped the approval: it is not what intake received (amount above the
    eligible, another account, the program's cap); two finance people release it or
    cancel it (the claim is then closed)."""
    PAID = "paid"
    WITHDRAWN = "withdrawn"
    LAPSED = "lapsed"
    CLOSED = "closed"
    """Finance closed a claim that cannot be paid (payout released with a reason)."""

    @property
    def is_final(self) -> bool:
        return self in FINAL


FINAL = frozenset(
    {
        ClaimStatus.REJECTED,
        ClaimStatus.PAID,
        ClaimStatus.WITHDRAWN,
        ClaimStatus.LAPSED,
        ClaimStatus.CLOSED,
    }
)
# Statuses in which a claim no longer blocks a new one for the same period / program
# (the partial unique index claims_one_live of migration 0004 lists the same).
CLOSED = frozenset(
    {ClaimStatus.REJECTED, ClaimStatus.WITHDRAWN, ClaimStatus.LAPSED, ClaimStatus.CLOSED}
)
# Money has left (or tried to leave) the treasury: no withdrawal, no lapse any more.
PAYOUT_STARTED = frozenset(
    {
        ClaimStatus.PAYOUT_SENT,
        ClaimStatus.PAYOUT_RETURNED,
        ClaimStatus.PAYOUT_FAILED,
        ClaimStatus.PAID,
    }
)
WITHDRAWABLE = frozenset(
    {
        ClaimStatus.SUBMITTED,
        ClaimStatus.ACCEPTED_DOCUMENTS_PENDING,
        ClaimStatus.IN_REVIEW,
        ClaimStatus.RETURNED_FOR_DOCUMENTS,
        ClaimStatus.APPROVED,
        ClaimStatus.APPROVED_DOCUMENTS_PENDING,
        ClaimStatus.PAYOUT_QUEUED,
    }
)
LAPSABLE = WITHDRAWABLE | {ClaimStatus.PAYOUT_REQUESTED}
IN_REVIEW_STATUSES = frozenset(
    {ClaimStatus.SUBMITTED, ClaimStatus.ACCEPTED_DOCUMENTS_PENDING, ClaimStatus.IN_REVIEW}
)

# Who holds a claim in each status: what the window tells the enterprise. Review
# statuses are refined to the departments still to decide (see ``holders_for``).
HOLDER: dict[ClaimStatus, str] = {
    ClaimStatus.SUBMITTED: "review",
    ClaimStatus.ACCEPTED_DOCUMENTS_PENDING: "review",
    ClaimStatus.IN_REVIEW: "review",
    ClaimStatus.RETURNED_FOR_DOCUMENTS: "enterprise",
    ClaimStatus.APPROVED: "payout",
    ClaimStatus.APPROVED_DOCUMENTS_PENDING: "enterprise",
    ClaimStatus.PAYOUT_QUEUED: "finance (budget)",
    ClaimStatus.PAYOUT_REQUESTED: "payout",
    ClaimStatus.PAYOUT_SENT: "treasury/bank",
    ClaimStatus.PAYOUT_RETURNED: "finance (account correction)",
    ClaimStatus.PAYOUT_FAILED: "finance (account correction or closure)",
    ClaimStatus.PAYOUT_WITHHELD: "finance (payee check: release or cancel)",
    ClaimStatus.REJECTED: "none (final)",
    ClaimStatus.CLOSED: "none (final)",
    ClaimStatus.PAID: "none (final)",
    ClaimStatus.WITHDRAWN: "none (final)",
    ClaimStatus.LAPSED: "none (final)",
}

# Outcomes counted by claimflow_claims_outcome_total.
OUTCOMES = {
    ClaimStatus.APPROVED: "approved",
    ClaimStatus.APPROVED_DOCUMENTS_PENDING: "approved",
    ClaimStatus.REJECTED: "rejected",
    ClaimStatus.PAID: "paid",
    ClaimStatus.LAPSED: "lapsed",
    ClaimStatus.WITHDRAWN: "withdrawn",
    ClaimStatus.CLOSED: "closed",
}
# Statuses in which finance must act, by a deadline the tracker shows.
FINANCE_ACTS = frozenset(
    {ClaimStatus.PAYOUT_FAILED, ClaimStatus.PAYOUT_RETURNED, ClaimStatus.PAYOUT_WITHHELD}
)
# The prefix of payout.released's reason when finance closes an unpayable claim, and
# when two finance people cancel a withheld payout.
CLOSED_BY_FINANCE = "closed by finance:"
CANCELLED_BY_FINANCE = "withheld payout cancelled by finance:"


def holders_for(
    status: ClaimStatus, departments: Sequence[str], decided: Iterable[str]
) -> list[str]:
    """Who holds the claim: in review, the departments that have not decided yet."""
    if status in IN_REVIEW_STATUSES:
        done = set(decided)
        waiting = [d for d in departments if d not in done]
        return [f"review:{d}" for d in waiting] or ["review"]
    return [HOLDER[status]]


# --- the tracker: status as a function of the events seen -----------------------------


@dataclass(frozen=True)
class TrackedEvent:
    """One event on a claim's timeline, as the tracker folds it."""

    producer: str
    event_type: str
    payload: dict[str, Any]


@dataclass
class _IntakeFacts:
    withdrawn: bool = False
    lapsed: bool = False
    documents_completed: bool = False


@dataclass
class _ReviewFacts:
    active: bool = False
    """A department decided a task: the claim is being reviewed."""
    returned: bool = False
    """Paused for documents and not resumed yet."""
    asked_documents: bool = False
    decision: str | None = None


@dataclass
class _PayoutFacts:
    status: ClaimStatus | None = None
    paid: bool = False


def _fold_intake(facts: _IntakeFacts, event: TrackedEvent) -> None:
    match event.event_type:
        case "claim.withdrawn":
            facts.withdrawn = True
        case "claim.lapsed":
            facts.lapsed = True
        case "claim.documents_completed":
            facts.documents_completed = True


def _fold_review(facts: _ReviewFacts, event: TrackedEvent) -> None:
    payload = event.payload
    match event.event_type:
        case "review.task_decided":
            facts.active = True
            if payload.get("decision") == "return":
                facts.returned = True
        case "review.returned_for_documents":
            facts.active = True
            facts.returned = True
            facts.asked_documents |= bool(payload.get("documents"))
        case "review.resumed":
            facts.returned = False
        case "review.stage_changed":
            if facts.returned and payload.get("to_stage") == "department_review":
                facts.returned = False
        case "review.decided":
            # Review decides once; a second decision would be a contract breach and
            # must not overwrite the first.
            if facts.decision is None:
                facts.decision = str(payload.get("decision"))


_PAYOUT_MOVES = {
    "payout.queued": ClaimStatus.PAYOUT_QUEUED,
    "payout.requested": ClaimStatus.PAYOUT_REQUESTED,
    "payout.sent": ClaimStatus.PAYOUT_SENT,
    "payout.returned": ClaimStatus.PAYOUT_RETURNED,
    "payout.failed": ClaimStatus.PAYOUT_FAILED,
    "payout.withheld": ClaimStatus.PAYOUT_WITHHELD,
}


def _fold_payout(facts: _PayoutFacts, event: TrackedEvent) -> None:
    if facts.paid:
        return  # the money arrived: nothing later changes where it went
    kind = event.event_type
    if kind == "payout.confirmed":
        facts.paid = True
        facts.status = ClaimStatus.PAID
    elif kind == "payout.failed" and event.payload.get("permanent") is False:
        return  # a transient failure is retried by payout (payout.retry_scheduled)
    elif kind in _PAYOUT_MOVES:
        facts.status = _PAYOUT_MOVES[kind]
    elif kind == "payout.account_corrected" and facts.status in FINANCE_ACTS:
        facts.status = ClaimStatus.PAYOUT_REQUESTED  # back in payment: re-issued
    elif kind == "payout.released" and (
        (
            facts.status is ClaimStatus.PAYOUT_FAILED
            and str(event.payload.get("reason", "")).startswith(CLOSED_BY_FINANCE)
        )
        or (
            facts.status is ClaimStatus.PAYOUT_WITHHELD
            and str(event.payload.get("reason", "")).startswith(CANCELLED_BY_FINANCE)
        )
    ):
        facts.status = ClaimStatus.CLOSED


def derive_status(events: Iterable[TrackedEvent], *, documents_pending: bool) -> ClaimStatus:
    """The claim's status from the events seen so far.

    Each producer's events are folded in that producer's own order (one claim's events
    of one producer share a partition, so they arrive in the order they were made); the
    producers' facts are then combined by precedence, never by comparing timestamps of
    different services. The result is therefore the same for every interleaving of the
    producers' streams (tests/unit/test_intake_tracker.py):

    1. money facts (sent, paid) are never hidden;
    2. then intake's own ends: withdrawn, lapsed;
    3. then finance's closure, and review's rejection;
    4. then payout's state (queued, requested, returned, failed);
    5. then review's approval, its return for documents, its activity;
    6. then intake's documents: promised and outstanding, or complete.

    ``documents_pending`` is intake's own record: some asked-for document is not in.
    """
    intake, review, payout = _IntakeFacts(), _ReviewFacts(), _PayoutFacts()
    for event in events:
        if event.producer == "intake":
            _fold_intake(intake, event)
        elif event.producer == "review":
            _fold_review(review, event)
        elif event.producer == "payout":
            _fold_payout(payout, event)
    if payout.status in (ClaimStatus.PAID, ClaimStatus.PAYOUT_SENT):
        return payout.status
    if intake.withdrawn:
        return ClaimStatus.WITHDRAWN
    if intake.lapsed:
        return ClaimStatus.LAPSED
    if payout.status is ClaimStatus.CLOSED:
        return ClaimStatus.CLOSED
    if review.decision is not None and review.decision != "approved":
        return ClaimStatus.REJECTED
    if payout.status is not None:
        return payout.status
    if review.decision == "approved":
        return ClaimStatus.APPROVED_DOCUMENTS_PENDING if documents_pending else ClaimStatus.APPROVED
    if review.returned:
        # Once every asked document is in, the claim is back with review (which resumes
        # it when its own copy of the documents event arrives).
        back = review.asked_documents and not documents_pending
        return ClaimStatus.IN_REVIEW if back else ClaimStatus.RETURNED_FOR_DOCUMENTS
    if review.active:
        return ClaimStatus.IN_REVIEW
    if documents_pending:
        return ClaimStatus.ACCEPTED_DOCUMENTS_PENDING
    if intake.documents_completed:
        return ClaimStatus.IN_REVIEW
    return ClaimStatus.SUBMITTED


def review_departments(events: Iterable[TrackedEvent]) -> list[str] | None:
    """The departments review last put the claim before, as review said it: its
    ``review.stage_changed`` into ``department_review`` names them (at arrival, and
    again when a returned claim resumes: the department that asked and those still to
    decide). None until review has said (the window quotes its checklist until then).

    The tracker takes who holds the claim from review's events only, never from its
    own reading of programs.yaml: a department added to a program there is shown as
    soon as review puts the claim before it."""
    departments: list[str] | None = None
    for event in events:
        if (
            event.producer == "review"
            and event.event_type == "review.stage_changed"
            and event.payload.get("to_stage") == "department_review"
        ):
            departments = [str(d) for d in event.payload.get("departments", [])]
    return departments


def desks_of_review(events: Iterable[TrackedEvent]) -> list[str]:
    """Every department review has put the claim before (sorted): the desks the claim is
    or was on, which decide which department reviewers may read it (shared/auth/scope.py).
    Unlike ``review_departments`` (who holds it now) a department stays after deciding:
    it had a task on the claim. From review's events only, like the holders."""
    found: set[str] = set()
    for event in events:
        if (
            event.producer == "review"
            and event.event_type == "review.stage_changed"
            and event.payload.get("to_stage") == "department_review"
        ):
            found.update(str(d) for d in event.payload.get("departments", []))
    return sorted(found)
