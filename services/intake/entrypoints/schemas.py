"""The HTTP contract for window staff. Every rule is a validator with a clear message."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from stdnum.cn import uscc as stdnum_uscc
from stdnum.exceptions import ValidationError as StdnumError

from shared.contracts import BankAccount
from shared.money import PositiveYuan, Yuan


def _valid_uscc(value: str) -> str:
    try:
        return str(stdnum_uscc.validate(value))
    except StdnumError as exc:
        raise ValueError(f"not a valid unified social credit code (GB 32100-2015): {exc}") from None


def _past_tax_period(value: str) -> str:
    if not re.fullmatch(r"[0-9]{4}-(0[1-9]|1[0-2])", value):
        raise ValueError("tax period must be YYYY-MM")
    now = datetime.now(UTC)
    if value > f"{now.year:04d}-{now.month:02d}":
        raise ValueError("tax period must not be in the future")
    return value


Uscc = Annotated[str, AfterValidator(_valid_uscc)]
TaxPeriod = Annotated[str, AfterValidator(_past_tax_period)]


class VatRefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uscc: Uscc = Field(description="统一社会信用代码, 18 characters with check character")
    enterprise_name: str = Field(min_length=1, max_length=200)
    tax_period: TaxPeriod = Field(description="YYYY-MM, not in the future")
    end_credit_balance: PositiveYuan = Field(description="期末留抵税额, yuan")
    base_credit_balance: Yuan = Field(ge=0, description="基期留抵税额, yuan")
    input_composition_ratio: Decimal = Field(ge=0, le=1, max_digits=5, decimal_places=4)
    tax_credit_rating: Literal["A", "B", "M", "C", "D"]
    requested_amount: PositiveYuan
    bank_account: BankAccount


class ClaimCreated(BaseModel):
    claim_id: uuid.UUID
    status: str
    eligible_amount: Decimal
    requested_amount: Decimal
    amount_note: str | None


class TimelineEntry(BaseModel):
    event_id: uuid.UUID
    event_type: str
    producer: str
    occurred_at: datetime
    payload: dict[str, Any]


class ClaimView(BaseModel):
    claim_id: uuid.UUID
    kind: str
    uscc: str
    enterprise_name: str
    tax_period: str
    status: str
    holder: str
    requested_amount: Decimal
    eligible_amount: Decimal
    amount_note: str | None
    received_at: datetime
    status_changed_at: datetime
    timeline: list[TimelineEntry]


class Problem(BaseModel):
    detail: str
    errors: list[dict[str, str]] = []
    existing_claim_id: uuid.UUID | None = None


Kind = Literal["vat_refund"]
