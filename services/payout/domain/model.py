"""Payout's domain: one payout per approved claim and the rules it moves by (pure, no I/O).

State machine (docs/payout.md)::

    approval ─┬─> queued ──(budget topped up / released elsewhere)──┐
              ├─> held  ──(documents completed)──> requested        │
              └─> requested <───────────────────────────────────────┘ (or held)
    requested|retrying ─> issuing (claimed and committed; then the bank is called)
    issuing ─> issued (bank took it) | unknown (no answer: timeout, connection lost)
    unknown ─(bank asked: has it)─> issued   unknown ─(bank never got it)─> retrying
    issued ─> accepted ─> sent ─> paid (到账)   (notices also move issuing and unknown)
    issued ─(transient failure)─> retrying ─> issuing (same voucher, same key)
    issued|accepted|sent ─(permanent failure)─> failed   (commitment released)
    issued|accepted|sent ─(returned)─> returned ─(account corrected)─> retrying
    failed ─(account corrected by finance)─> requested (reserved again) | queued
    failed|returned ─(closed by finance, with a reason)─> released
    queued|held|requested|retrying|returned|withheld ─(lapsed / withdrawn)─> released
    approval ─(not what intake received, above eligible / cap, intake not seen yet)─> withheld
    withheld ─(intake's event agrees / two finance people release)─> queued|held|requested
    withheld ─(two finance people cancel)─> released
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from shared.programs import Catalogue


class PayoutStatus(StrEnum):
    QUEUED = "queued"
    """Waiting for budget (first come, first served); nothing reserved."""
    HELD = "held"
    """Reserved; waiting for intake to report the pending documents complete."""
    REQUESTED = "requested"
    """Reserved; ready to issue."""
    ISSUING = "issuing"
    """Committed and claimed by one payout instance, which is calling the bank now."""
    ISSUED = "issued"
    """The bank took the voucher; its notices move it on."""
    UNKNOWN = "unknown"
    """The bank call ended without an answer: the bank may or may not have the voucher.
    Resolved by asking the bank for the instruction's status; never released meanwhile."""
    ACCEPTED = "accepted"
    SENT = "sent"
    RETRYING = "retrying"
    """Committed; to be (re)issued at next_attempt_at."""
    PAID = "paid"
    """Funds arrived (到账)."""
    FAILED = "failed"
    """Failed for good (account closed, retries exhausted); the commitment is back in the
    fund. Finance corrects the account (re-issue) or closes the payout with a reason."""
    RETURNED = "returned"
    """The bank returned the money; waits for finance to correct the account."""
    RELEASED = "released"
    WITHHELD = "withheld"
    """Not paid as approved: not seen submitted by intake, or not what intake received
    (payee, kind, program), above the eligible amount or the per-enterprise cap
    (``withheld_reason``). Nothing reserved, never issued; admitted when intake's event
    arrives (``awaiting_intake``) or released / cancelled by two finance people."""


FINAL = frozenset({PayoutStatus.PAID, PayoutStatus.RELEASED})
WAITING = {
    PayoutStatus.QUEUED: "budget",
    PayoutStatus.HELD: "documents",
    PayoutStatus.RETURNED: "account_correction",
    PayoutStatus.FAILED: "finance_decision",
    PayoutStatus.WITHHELD: "payee_check",
}
"""Statuses that will not move without a person, and what they wait for."""
RESERVED = frozenset({PayoutStatus.HELD, PayoutStatus.REQUESTED})
"""Statuses whose amount is in the fund's ``reserved``."""
COMMITTED = frozenset(
    {
        PayoutStatus.ISSUING,
        PayoutStatus.ISSUED,
        PayoutStatus.UNKNOWN,
        PayoutStatus.ACCEPTED,
        PayoutStatus.SENT,
        PayoutStatus.RETRYING,
        PayoutStatus.RETURNED,
        PayoutStatus.PAID,
    }
)
"""Statuses whose amount is in the fund's ``committed`` (money has left or is leaving)."""
CANCELLABLE = frozenset(
    {
        PayoutStatus.QUEUED,
        PayoutStatus.HELD,
        PayoutStatus.REQUESTED,
        PayoutStatus.RETRYING,
        PayoutStatus.RETURNED,
        PayoutStatus.WITHHELD,
    }
)
"""A lapse or withdrawal releases these: no money is with the bank (a retrying voucher's
last attempt failed, a returned one came back). Issued, accepted, sent and paid ones are
recorded as late cancellations, never un-paid; so are issuing and unknown ones, whose
money may have left."""
IN_DOUBT = (PayoutStatus.ISSUING, PayoutStatus.UNKNOWN, PayoutStatus.ISSUED)
"""With the bank and no news yet: counted as stuck when they stay too long."""

# Allowed moves; anything else is a replay or a stale notice and changes nothing.
_BANK_OUTCOMES = frozenset(
    {
        PayoutStatus.ACCEPTED,
        PayoutStatus.SENT,
        PayoutStatus.PAID,
        PayoutStatus.RETRYING,
        PayoutStatus.FAILED,
        PayoutStatus.RETURNED,
    }
)
TRANSITIONS: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    PayoutStatus.QUEUED: frozenset(
        {PayoutStatus.HELD, PayoutStatus.REQUESTED, PayoutStatus.RELEASED}
    ),
    PayoutStatus.HELD: frozenset({PayoutStatus.REQUESTED, PayoutStatus.RELEASED}),
    PayoutStatus.REQUESTED: frozenset({PayoutStatus.ISSUING, PayoutStatus.RELEASED}),
    # The bank's notices may overtake the recording of the bank call's own outcome.
    PayoutStatus.ISSUING: _BANK_OUTCOMES | {PayoutStatus.ISSUED, PayoutStatus.UNKNOWN},
    PayoutStatus.UNKNOWN: _BANK_OUTCOMES | {PayoutStatus.ISSUED},
    PayoutStatus.ISSUED: _BANK_OUTCOMES,
    PayoutStatus.ACCEPTED: frozenset(
        {PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.RETURNED}
    ),
    PayoutStatus.SENT: frozenset({PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.RETURNED}),
    PayoutStatus.RETRYING: frozenset(
        {PayoutStatus.ISSUING, PayoutStatus.FAILED, PayoutStatus.RELEASED}
    ),
    PayoutStatus.RETURNED: frozenset({PayoutStatus.RETRYING, PayoutStatus.RELEASED}),
    PayoutStatus.PAID: frozenset(),
    PayoutStatus.FAILED: frozenset(
        {PayoutStatus.REQUESTED, PayoutStatus.QUEUED, PayoutStatus.RELEASED}
    ),
    PayoutStatus.RELEASED: frozenset(),
    # Admitted (intake's event arrived and agrees, or finance released it): reserved
    # (held / requested) or queued, like a new approval; or cancelled (released).
    PayoutStatus.WITHHELD: frozenset(
        {
            PayoutStatus.QUEUED,
            PayoutStatus.HELD,
            PayoutStatus.REQUESTED,
            PayoutStatus.RELEASED,
        }
    ),
}
CORRECTABLE = frozenset({PayoutStatus.RETURNED, PayoutStatus.FAILED})
"""Finance may correct the account of these (and re-issue) or close them with a reason."""

Hop = Literal["accepted", "sent", "arrived", "failed", "returned"]
HOP_TARGET: dict[str, PayoutStatus] = {
    "accepted": PayoutStatus.ACCEPTED,
    "sent": PayoutStatus.SENT,
    "arrived": PayoutStatus.PAID,
    "returned": PayoutStatus.RETURNED,
}


def can_move(current: PayoutStatus, target: PayoutStatus) -> bool:
    return target in TRANSITIONS[current]


def target_of_notice(
    current: PayoutStatus, hop: str, *, permanent: bool, attempts: int, max_attempts: int
) -> PayoutStatus | None:
    """Where a bank notice moves a payout, or None when it changes nothing."""
    if hop == "failed":
        target = (
            PayoutStatus.FAILED if permanent or attempts >= max_attempts else PayoutStatus.RETRYING
        )
    else:
        target = HOP_TARGET[hop]
    return target if can_move(current, target) else None


NoticePosition = Literal["behind", "current", "ahead"]


def notice_position(
    row_issue_no: int, row_attempts: int, notice_issue_no: int, notice_attempt: int
) -> NoticePosition:
    """Where a bank notice stands against the payout row's (issue, attempt).

    Behind: about an issue or attempt the row has left (a late copy): discarded. Ahead:
    the bank has an attempt the row has not recorded (its commit was lost, or another
    instance is still recording it): kept until the row catches up, never dropped.
    """
    row, notice = (row_issue_no, row_attempts), (notice_issue_no, notice_attempt)
    if notice < row:
        return "behind"
    return "current" if notice == row else "ahead"


def after_approval(*, reserved: bool, documents_pending: bool) -> PayoutStatus:
    if not reserved:
        return PayoutStatus.QUEUED
    return PayoutStatus.HELD if documents_pending else PayoutStatus.REQUESTED


def backoff_seconds(attempt: int, *, base_s: float, max_s: float) -> float:
    """Delay before retry number ``attempt`` (1-based): base, 2×base, 4×base, … capped."""
    return float(min(max_s, base_s * 2 ** max(0, attempt - 1)))


def voucher_kind(claim_kind: str) -> Literal["tax_refund_voucher", "direct_payment_voucher"]:
    """税收收入退还书 for refunds, 财政直接支付凭证 for subsidies."""
    return "tax_refund_voucher" if claim_kind == "vat_refund" else "direct_payment_voucher"


def voucher_no(kind: str, payout_id: uuid.UUID, issue_no: int) -> str:
    prefix = "TR" if kind == "tax_refund_voucher" else "DP"
    return f"{prefix}-{payout_id.hex[:16].upper()}-{issue_no}"


def fund_of(claim_kind: str, program_id: str | None, catalogue: Catalogue) -> str:
    """The fund a claim draws on (the catalogue's rules for its kind and program); raises
    LookupError (``UnknownProgram``) for an unknown program."""
    return catalogue.rules_for(claim_kind, program_id).fund


FINANCE_DEPARTMENTS = frozenset({"finance", "treasury"})
"""Departments whose staff may move money: top up, correct an account, close, import."""


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 0.5
    max_s: float = 60.0
    max_attempts: int = 8
    claim_lease_s: float = 60.0
    """A payout left ``issuing`` this long (its instance died mid-call) is resolved by
    asking the bank, like an ``unknown`` one."""

    def backoff(self, attempt: int) -> float:
        return backoff_seconds(attempt, base_s=self.base_s, max_s=self.max_s)
