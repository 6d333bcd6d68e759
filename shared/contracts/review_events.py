"""Events published by review on the review topic."""

from __future__ import annotations

import uuid
from typing import ClassVar, Literal

from pydantic import AwareDatetime, Field

from shared.contracts.common import BankAccount, ClaimKind, Fen
from shared.contracts.envelope import EventPayload


class ReviewTaskDecidedV1(EventPayload):
    """One department's decision; the claim's outcome is ``review.decided``."""

    event_type: ClassVar[str] = "review.task_decided"
    version: ClassVar[int] = 1

    task_id: uuid.UUID
    department: str
    decision: Literal["approve", "reject", "return"]
    reason: str | None = None
    decided_by: str


class ReviewReturnedForDocumentsV1(EventPayload):
    """A department paused the claim until the enterprise supplies documents."""

    event_type: ClassVar[str] = "review.returned_for_documents"
    version: ClassVar[int] = 1

    department: str
    documents: list[str]
    comment: str | None = None


class ReviewDecidedV1(EventPayload):
    """Final outcome of the joint review. Carries what payout needs to pay it."""

    event_type: ClassVar[str] = "review.decided"
    version: ClassVar[int] = 1

    decision: Literal["approved", "rejected"]
    approved_amount_fen: Fen = Field(ge=0)
    reason: str | None = None
    claim_kind: ClaimKind
    program_id: str | None = None
    payee: BankAccount
    claim_received_at: AwareDatetime
    documents_pending: bool = False
    """Approved while documents are still pending (容缺): payout reserves but holds."""
