"""Events published by intake on the intake topic."""

from __future__ import annotations

from datetime import date
from typing import ClassVar

from pydantic import AwareDatetime, Field

from shared.contracts.common import BankAccount, ClaimKind, Fen
from shared.contracts.envelope import EventPayload


class ClaimSubmittedV1(EventPayload):
    event_type: ClassVar[str] = "claim.submitted"
    version: ClassVar[int] = 1

    claim_kind: ClaimKind
    uscc: str = Field(min_length=18, max_length=18)
    enterprise_name: str
    tax_period: str = Field(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")
    """Tax period (YYYY-MM) for refunds; the application period for subsidies."""
    program_id: str | None = None
    """The subsidy program; None for VAT credit refunds."""
    requested_amount_fen: Fen = Field(gt=0)
    eligible_amount_fen: Fen = Field(ge=0)
    payee: BankAccount
    registered_by: str
    received_at: AwareDatetime
    pending_documents: list[str] = Field(default_factory=list)
    """Non-critical documents promised for later (容缺受理); empty when complete."""
    documents_due_by: date | None = None
    """Last day to supply the pending documents; the claim lapses after it."""


class ClaimDocumentSuppliedV1(EventPayload):
    event_type: ClassVar[str] = "claim.document_supplied"
    version: ClassVar[int] = 1

    document: str
    still_pending: list[str]
    recorded_by: str


class ClaimDocumentsCompletedV1(EventPayload):
    """No document is pending any more: payout may release money for the claim."""

    event_type: ClassVar[str] = "claim.documents_completed"
    version: ClassVar[int] = 1

    completed_at: AwareDatetime


class ClaimLapsedV1(EventPayload):
    """Documents were not supplied in time; the claim ends and is never paid."""

    event_type: ClassVar[str] = "claim.lapsed"
    version: ClassVar[int] = 1

    missing_documents: list[str]
    due_by: date


class ClaimWithdrawnV1(EventPayload):
    event_type: ClassVar[str] = "claim.withdrawn"
    version: ClassVar[int] = 1

    reason: str
    withdrawn_by: str
