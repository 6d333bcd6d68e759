"""Types shared by the integration events of all producers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ClaimKind = Literal["vat_refund", "subsidy"]
Fen = int
"""Money in integer fen (1 yuan = 100 fen)."""


class BankAccount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    bank_name: str = Field(min_length=1, max_length=100)
    account_name: str = Field(min_length=1, max_length=200)
    account_number: str = Field(pattern=r"^[0-9]{8,30}$")


FINANCE_ROLES = frozenset({"finance_clerk", "finance_supervisor"})
"""The roles that see full bank account numbers (everyone else sees ``****1234``)."""


def mask_account_number(number: str | None) -> str:
    """``****1234``: enough to tell accounts apart, not enough to pay into one."""
    if not number:
        return ""
    return "****" + number[-4:] if len(number) > 4 else "****"
