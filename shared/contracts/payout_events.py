"""Events published by payout on the payout topic."""

from __future__ import annotations

import uuid
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from shared.contracts.common import BankAccount, Fen
from shared.contracts.envelope import EventPayload


class PayoutRequestedV1(EventPayload):
    event_type: ClassVar[str] = "payout.requested"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    amount_fen: Fen = Field(gt=0)
    payee: BankAccount


class PayoutSentV1(EventPayload):
    event_type: ClassVar[str] = "payout.sent"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    amount_fen: Fen = Field(gt=0)
    gateway_reference: str


class PayoutConfirmedV1(EventPayload):
    """Funds arrived in the enterprise's account (到账)."""

    event_type: ClassVar[str] = "payout.confirmed"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    amount_fen: Fen = Field(gt=0)
    arrived_at: AwareDatetime
    time_to_payment_seconds: float = Field(ge=0)


class PayoutFailedV1(EventPayload):
    event_type: ClassVar[str] = "payout.failed"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    reason: str
    permanent: bool


# --- Issue 5: the full payout state machine (docs/payout.md). The four events above keep
# their meaning for intake's tracker: requested (reserved, ready to issue), sent (the
# agency bank sent the money), confirmed (到账), failed (permanently; retries are
# ``payout.retry_scheduled``).

VoucherKind = Literal["tax_refund_voucher", "direct_payment_voucher"]
"""税收收入退还书 for VAT refunds, 财政直接支付凭证 for subsidies."""


class PayoutQueuedV1(EventPayload):
    """The fund cannot cover the claim now; it waits in the fund's queue (FIFO)."""

    event_type: ClassVar[str] = "payout.queued"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    fund_id: str
    amount_fen: Fen = Field(gt=0)
    position: int = Field(ge=1)


class PayoutHeldV1(EventPayload):
    """Reserved, but held until intake reports the pending documents complete (容缺)."""

    event_type: ClassVar[str] = "payout.held"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    fund_id: str
    amount_fen: Fen = Field(gt=0)


class PayoutIssuedV1(EventPayload):
    """The payment voucher was handed to the treasury gateway."""

    event_type: ClassVar[str] = "payout.issued"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    voucher_no: str
    voucher_kind: VoucherKind
    issue_no: int = Field(ge=1)
    attempt: int = Field(ge=1)
    amount_fen: Fen = Field(gt=0)


class PayoutAcceptedV1(EventPayload):
    """The treasury accepted the voucher."""

    event_type: ClassVar[str] = "payout.accepted"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    voucher_no: str
    accepted_at: AwareDatetime


class PayoutRetryScheduledV1(EventPayload):
    """A transient failure; the same voucher is resubmitted (same idempotency key)."""

    event_type: ClassVar[str] = "payout.retry_scheduled"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    reason: str
    attempt: int = Field(ge=1)
    next_attempt_at: AwareDatetime


class PayoutReturnedV1(EventPayload):
    """The bank returned the money (e.g. the account name does not match); nothing is
    released: finance corrects the account and the payout is re-issued."""

    event_type: ClassVar[str] = "payout.returned"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    voucher_no: str
    amount_fen: Fen = Field(gt=0)
    reason: str


class PayoutAccountCorrectedV1(EventPayload):
    event_type: ClassVar[str] = "payout.account_corrected"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    payee: BankAccount
    next_issue_no: int = Field(ge=2)
    corrected_by: str


class PayoutReleasedV1(EventPayload):
    """The reservation (or the queue place) is given up: the claim lapsed, was withdrawn,
    or cannot be paid. Nothing will be paid for this claim."""

    event_type: ClassVar[str] = "payout.released"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    fund_id: str
    amount_fen: Fen = Field(ge=0)
    reason: str


# --- Issue 12 item 5: payout checks what it pays (docs/payout.md).

WithheldReason = Literal[
    "awaiting_intake", "claim_mismatch", "payee_mismatch", "above_eligible", "above_cap"
]
"""Why payout refuses to pay an approval (machine-readable; ``detail`` says it in words)."""


class PayoutWithheldV1(EventPayload):
    """An approval payout will not pay as it stands: not seen submitted by intake, or not
    what intake received (kind, program, payee), above the eligible amount intake
    computed or above the program's per-enterprise cap. Nothing is reserved or sent; it
    waits for intake's event (``awaiting_intake``) or for two finance people."""

    event_type: ClassVar[str] = "payout.withheld"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    fund_id: str
    amount_fen: Fen = Field(gt=0)
    reason: WithheldReason
    detail: str
