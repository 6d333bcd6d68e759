"""Integration events, version 1. Amounts are integer fen (1 yuan = 100 fen)."""

from __future__ import annotations

import uuid
from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contracts.envelope import EventPayload

ClaimKind = Literal["vat_refund", "subsidy"]
Fen = int


class BankAccount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bank_name: str = Field(min_length=1, max_length=100)
    account_name: str = Field(min_length=1, max_length=200)
    account_number: str = Field(pattern=r"^[0-9]{8,30}$")


# --- intake --------------------------------------------------------------------------


class ClaimSubmittedV1(EventPayload):
    event_type: ClassVar[str] = "claim.submitted"
    version: ClassVar[int] = 1

    claim_kind: ClaimKind
    uscc: str = Field(min_length=18, max_length=18)
    enterprise_name: str
    tax_period: str = Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")
    requested_amount_fen: Fen = Field(gt=0)
    eligible_amount_fen: Fen = Field(ge=0)
    payee: BankAccount
    registered_by: str
    received_at: AwareDatetime


# --- review --------------------------------------------------------------------------


class ReviewTaskDecidedV1(EventPayload):
    """One department's decision; the claim's outcome is ``review.decided``."""

    event_type: ClassVar[str] = "review.task_decided"
    version: ClassVar[int] = 1

    task_id: uuid.UUID
    department: str
    decision: Literal["approve", "reject"]
    reason: str | None = None
    decided_by: str


class ReviewDecidedV1(EventPayload):
    """Final outcome of the joint review. Carries what payout needs to pay it."""

    event_type: ClassVar[str] = "review.decided"
    version: ClassVar[int] = 1

    decision: Literal["approved", "rejected"]
    approved_amount_fen: Fen = Field(ge=0)
    reason: str | None = None
    claim_kind: ClaimKind
    payee: BankAccount
    claim_received_at: AwareDatetime


# --- payout --------------------------------------------------------------------------


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
