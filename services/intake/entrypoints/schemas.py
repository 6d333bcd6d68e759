"""The HTTP contract for window staff. Every rule is a validator with a clear message;
rules that need reference data (the checklist, the program's window and cap) live in the
domain (``services/intake/domain/rules.py``) and answer in the same error shape.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic_core import PydanticCustomError
from stdnum.cn import uscc as stdnum_uscc
from stdnum.exceptions import InvalidChecksum
from stdnum.exceptions import ValidationError as StdnumError

from shared.money import PlainDecimal, PositiveYuan, Yuan
from shared.validation import BankAccountInput, VisibleText
from shared.workdays import CHINA


def _valid_uscc(value: str) -> str:
    try:
        return str(stdnum_uscc.validate(value))
    except InvalidChecksum:
        raise PydanticCustomError(
            "uscc_check_character",
            "the check character does not match (GB 32100-2015): a typing error?",
        ) from None
    except StdnumError as exc:
        raise PydanticCustomError(
            "uscc_format",
            "not a unified social credit code (18 characters, GB 32100-2015): {reason}",
            {"reason": str(exc)},
        ) from None


def _past_tax_period(value: str) -> str:
    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", value):
        raise PydanticCustomError("tax_period_format", "tax period must be YYYY-MM")
    now = datetime.now(UTC).astimezone(CHINA)
    if value > f"{now.year:04d}-{now.month:02d}":
        raise PydanticCustomError(
            "tax_period_not_future", "tax period must not be in the future (Beijing time)"
        )
    return value


Uscc = Annotated[str, AfterValidator(_valid_uscc)]
TaxPeriod = Annotated[str, AfterValidator(_past_tax_period)]
DocumentId = Annotated[str, Field(pattern=r"^[a-z0-9_\-]{1,64}$")]
MAX_DOCUMENTS = 50


class _ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uscc: Uscc = Field(description="统一社会信用代码, 18 characters with check character")
    enterprise_name: VisibleText = Field(min_length=1, max_length=200)
    requested_amount: PositiveYuan = Field(description="yuan, at most 2 decimal places")
    bank_account: BankAccountInput
    # A checklist has a handful of documents; the cap keeps a bad body's errors short.
    documents_supplied: list[DocumentId] = Field(
        max_length=MAX_DOCUMENTS,
        description="checklist documents handed in at the window (ids from the checklist)",
    )
    documents_promised: list[DocumentId] = Field(
        default_factory=list,
        max_length=MAX_DOCUMENTS,
        description="non-critical documents the enterprise promises to supply later (容缺)",
    )


class VatRefundRequest(_ClaimRequest):
    kind: Literal["vat_refund"]
    tax_period: TaxPeriod = Field(description="YYYY-MM, not in the future")
    end_credit_balance: PositiveYuan = Field(description="期末留抵税额, yuan")
    base_credit_balance: Yuan = Field(ge=0, description="基期留抵税额, yuan")
    input_composition_ratio: PlainDecimal = Field(ge=0, le=1, max_digits=5, decimal_places=4)
    tax_credit_rating: Literal["A", "B", "M", "C", "D"]


class SubsidyRequest(_ClaimRequest):
    kind: Literal["subsidy"]
    program_id: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=2000)


REQUEST_MODELS: dict[str, type[VatRefundRequest] | type[SubsidyRequest]] = {
    "vat_refund": VatRefundRequest,
    "subsidy": SubsidyRequest,
}
ClaimRequest = Annotated[VatRefundRequest | SubsidyRequest, Field(discriminator="kind")]


def claim_request_schema() -> dict[str, Any]:
    """The JSON schema of POST /claims's body, refs pointing into the OpenAPI components
    (shared/openapi.py moves the ``$defs`` there)."""
    schema: dict[str, Any] = TypeAdapter(ClaimRequest).json_schema(
        ref_template="#/components/schemas/{model}"
    )
    return schema


class DocumentSupplied(BaseModel):
    model_config = ConfigDict(extra="forbid")

    document_id: DocumentId


class WithdrawalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: VisibleText = Field(
        min_length=1, max_length=500, description="the enterprise's request"
    )


class ClaimCreated(BaseModel):
    claim_id: uuid.UUID
    kind: str
    program_id: str | None
    status: str
    eligible_amount: Decimal
    requested_amount: Decimal
    amount_note: str | None
    pending_documents: list[str]
    documents_due_by: date | None


class DocumentRecorded(BaseModel):
    claim_id: uuid.UUID
    document_id: str
    pending_documents: list[str]
    documents_completed: bool
    """The last outstanding document is in: the claim is complete."""


class ClaimWithdrawn(BaseModel):
    claim_id: uuid.UUID
    status: Literal["withdrawn"]


class TimelineEntry(BaseModel):
    event_id: uuid.UUID
    event_type: str
    producer: str
    occurred_at: datetime
    payload: dict[str, Any]


class DocumentView(BaseModel):
    document_id: str
    critical: bool
    state: Literal["supplied", "promised", "requested"]
    """promised: 容缺 at the window; requested: asked for (again) by a department."""
    requested_by: str
    supplied_at: datetime | None
    title: str | None = None
    """The title of an "other" document a department asked for (or the checklist name)."""
    requested_at: datetime | None = None


class ClaimSummary(BaseModel):
    claim_id: uuid.UUID
    kind: str
    program_id: str | None
    uscc: str
    enterprise_name: str
    tax_period: str
    status: str
    holder: str
    holders: list[str]
    """The departments (``review:tax``) or party holding the claim now."""
    requested_amount: Decimal
    eligible_amount: Decimal
    amount_note: str | None
    received_at: datetime
    status_changed_at: datetime
    pending_documents: list[str]
    documents_due_by: date | None
    step_due_at: datetime | None
    """When the current step must move: documents deadline, or the review time limit."""
    time_left_seconds: int | None
    """Negative when overdue."""


class ClaimView(ClaimSummary):
    documents: list[DocumentView]
    timeline: list[TimelineEntry]


class StatusQuery(BaseModel):
    """What an enterprise knows of its claim: the number on its receipt and its USCC."""

    model_config = ConfigDict(extra="forbid")

    claim_id: uuid.UUID
    uscc: str = Field(min_length=18, max_length=18)


class PublicStatus(BaseModel):
    """Only what the enterprise may see of its own claim: no amounts, no bank data, no
    people's names."""

    status: str
    holders: list[str]
    pending_documents: list[str]
    documents_due_by: date | None
    step_due_at: datetime | None
    paid: bool


class ClaimPage(BaseModel):
    items: list[ClaimSummary]
    total: int
    limit: int
    offset: int


class EnterpriseView(BaseModel):
    uscc: str
    enterprise_name: str | None
    live: int
    by_status: dict[str, int]
    claims: list[ClaimSummary]


class Problem(BaseModel):
    detail: str
    errors: list[dict[str, str]] = []
    existing_claim_id: uuid.UUID | None = None
