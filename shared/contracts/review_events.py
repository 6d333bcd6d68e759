"""Events published by review on the review topic."""

from __future__ import annotations

import uuid
from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

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
    stage: Literal["department_review", "sign_off"] = "department_review"
    documents: list[str] = Field(default_factory=list)
    """For a return: the documents asked for."""


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


ReviewStage = Literal[
    "cross_check",
    "department_review",
    "returned",
    "sign_off",
    "approved",
    "rejected",
    "withdrawn",
    "lapsed",
]


class CrossCheckFinding(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")  # tolerant reader

    check: str
    """credit_rating / blacklist / duplicate / amount."""
    result: Literal["pass", "warn", "fail"]
    reason: str


class ReviewCrossCheckedV1(EventPayload):
    """Stage 1 (联核): the automatic cross-checks ran on arrival."""

    event_type: ClassVar[str] = "review.cross_checked"
    version: ClassVar[int] = 1

    result: Literal["pass", "warn", "fail"]
    findings: list[CrossCheckFinding]
    recommended_amount_fen: Fen = Field(ge=0)
    """min(requested, eligible, what is left of the program's per-enterprise cap)."""


class ReviewStageChangedV1(EventPayload):
    """The claim moved from one review stage to another."""

    event_type: ClassVar[str] = "review.stage_changed"
    version: ClassVar[int] = 1

    from_stage: ReviewStage | None
    to_stage: ReviewStage
    departments: list[str] = Field(default_factory=list)
    """Departments holding the claim in the new stage (or the approver role)."""
    due_at: AwareDatetime | None = None
    """The stage's deadline (限时办结), when it has one."""


class ReviewDeadlineWarningV1(EventPayload):
    """A deadline is near: sent once, before it passes."""

    event_type: ClassVar[str] = "review.deadline_warning"
    version: ClassVar[int] = 1

    scope: Literal["task", "stage"]
    stage: str
    department: str | None = None
    task_id: uuid.UUID | None = None
    due_at: AwareDatetime


class ReviewEscalatedV1(EventPayload):
    """A deadline passed with the work undone: sent once, at the deadline."""

    event_type: ClassVar[str] = "review.escalated"
    version: ClassVar[int] = 1

    scope: Literal["task", "stage"]
    stage: str
    department: str | None = None
    task_id: uuid.UUID | None = None
    due_at: AwareDatetime
    escalated_to: str


class ReviewSignedOffV1(EventPayload):
    """Stage 3 (联批): an approver signed off (or refused) an amount above the threshold."""

    event_type: ClassVar[str] = "review.signed_off"
    version: ClassVar[int] = 1

    task_id: uuid.UUID
    decision: Literal["approve", "reject"]
    amount_fen: Fen = Field(ge=0)
    decided_by: str
    comment: str | None = None
