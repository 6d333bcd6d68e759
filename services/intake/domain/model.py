"""Intake's domain: a registered claim and the VAT credit refund computation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum


class ClaimStatus(StrEnum):
    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    PAYOUT_REQUESTED = "payout_requested"
    PAYOUT_SENT = "payout_sent"
    PAYOUT_FAILED = "payout_failed"
    PAID = "paid"

    @property
    def is_final(self) -> bool:
        return self in (ClaimStatus.REJECTED, ClaimStatus.PAID)


# Who holds a claim in each status: what the window tells the enterprise.
HOLDER: dict[ClaimStatus, str] = {
    ClaimStatus.SUBMITTED: "review",
    ClaimStatus.IN_REVIEW: "review",
    ClaimStatus.APPROVED: "payout",
    ClaimStatus.PAYOUT_REQUESTED: "payout",
    ClaimStatus.PAYOUT_SENT: "treasury/bank",
    ClaimStatus.PAYOUT_FAILED: "payout",
    ClaimStatus.REJECTED: "none (final)",
    ClaimStatus.PAID: "none (final)",
}

TAX_RATINGS_ELIGIBLE = frozenset({"A", "B"})


@dataclass(frozen=True)
class RefundComputation:
    eligible_fen: int
    incremental_credit_fen: int
    stock_credit_fen: int
    note: str | None


def compute_vat_refund(
    *,
    end_credit_fen: int,
    base_credit_fen: int,
    input_ratio: Decimal,
    rating: str,
    policy_year: int,
) -> RefundComputation:
    """Eligible VAT credit refund, rounded down to the fen.

    Incremental credit is the growth of the credit balance over the base period; stock
    credit is the base-period balance still standing (never more than the end balance).
    2022 rule (公告2022年第14号): 100 % of incremental and stock credit × input ratio.
    2019 rule (公告2019年第39号): 60 % of incremental credit × input ratio.
    """
    incremental = max(0, end_credit_fen - base_credit_fen)
    stock = max(0, min(base_credit_fen, end_credit_fen))
    if rating not in TAX_RATINGS_ELIGIBLE:
        return RefundComputation(0, incremental, stock, f"tax credit rating {rating} is not A or B")
    if policy_year >= 2022:
        base_amount = Decimal(incremental + stock) * input_ratio
    elif policy_year >= 2019:
        base_amount = Decimal(incremental) * input_ratio * Decimal("0.6")
    else:
        raise ValueError(f"no refund rule for policy year {policy_year}")
    eligible = int(base_amount.to_integral_value(rounding=ROUND_DOWN))
    return RefundComputation(eligible, incremental, stock, None)


@dataclass(frozen=True)
class Claim:
    claim_id: uuid.UUID
    kind: str
    uscc: str
    enterprise_name: str
    tax_period: str
    requested_amount_fen: int
    eligible_amount_fen: int
    amount_note: str | None
    status: ClaimStatus
    received_at: datetime
    registered_by: str
