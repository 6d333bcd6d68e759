"""The HTTP API's bodies: requests finance staff send, answers every route documents.
Amounts are yuan as strings ("1234.50"; None for an uncapped fund's budget)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

from services.payout.domain.statements import ReconciliationReport
from shared.money import PositiveYuan, fen_to_yuan, optional_fen_to_yuan
from shared.validation import BankAccountInput, VisibleText

# --- requests -------------------------------------------------------------------------


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: PositiveYuan
    reason: VisibleText = Field(min_length=1, max_length=500)


class AccountCorrection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payee: BankAccountInput
    reason: VisibleText = Field(min_length=1, max_length=500)


class HoldRelease(BaseModel):
    """Release (pay) or cancel a withheld payout (issue 12 item 5), under dual control.
    A release may name the account to pay (verified by finance; else intake's)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["release", "cancel"]
    reason: VisibleText = Field(min_length=1, max_length=500)
    payee: BankAccountInput | None = None


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: VisibleText | None = Field(default=None, min_length=1, max_length=500)


class Closing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: VisibleText = Field(min_length=1, max_length=500)


# --- answers --------------------------------------------------------------------------


def yuan(fen: int | None) -> str | None:
    amount = optional_fen_to_yuan(fen)
    return None if amount is None else str(amount)


class Amounts(BaseModel):
    claims: int
    amount: str | None


class FundOut(BaseModel):
    fund_id: str
    claim_kind: str
    name: str
    budget: str | None = Field(description="None: an uncapped fund")
    reserved: str | None
    committed: str | None
    paid: str | None
    remaining: str | None
    waiting_claims: int
    waiting_amount: str | None
    waiting: dict[str, Amounts] = Field(description="by what the payouts wait for")
    payouts: dict[str, Amounts] = Field(description="by status")

    @classmethod
    def of(cls, v: dict[str, Any]) -> FundOut:
        def amounts(by: dict[str, dict[str, int]]) -> dict[str, Amounts]:
            return {
                k: Amounts(claims=w["claims"], amount=yuan(w["amount_fen"])) for k, w in by.items()
            }

        return cls(
            fund_id=v["fund_id"],
            claim_kind=v["claim_kind"],
            name=v["name"],
            budget=yuan(v["budget_fen"]),
            reserved=yuan(v["reserved_fen"]),
            committed=yuan(v["committed_fen"]),
            paid=yuan(v["paid_fen"]),
            remaining=yuan(v["remaining_fen"]),
            waiting_claims=v["waiting_claims"],
            waiting_amount=yuan(v["waiting_fen"]),
            waiting=amounts(v["waiting"]),
            payouts=amounts(v["payouts"]),
        )


class QueueEntry(BaseModel):
    position: int
    payout_id: str
    claim_id: str
    amount: str | None
    queued_at: str

    @classmethod
    def of(cls, position: int, r: asyncpg.Record) -> QueueEntry:
        return cls(
            position=position,
            payout_id=str(r["payout_id"]),
            claim_id=str(r["claim_id"]),
            amount=yuan(r["amount_fen"]),
            queued_at=r["queued_at"].isoformat(),
        )


class PayoutOut(BaseModel):
    """A payout row (docs/payout.md), amounts in yuan."""

    payout_id: uuid.UUID
    claim_id: uuid.UUID
    claim_kind: str
    fund_id: str | None
    program_id: str | None
    amount: Decimal
    approved_amount: Decimal
    paid_amount: Decimal
    payee: dict[str, Any]
    status: str
    status_at: datetime
    voucher_kind: str | None
    documents_pending: bool
    issue_no: int
    attempts: int
    gateway_reference: str | None
    failure_reason: str | None
    release_reason: str | None
    late_cancellation: str | None
    withheld_reason: str | None = Field(
        default=None,
        description="Why payout refused to pay the approval as it stood (issue 12 item 5): "
        "awaiting_intake, claim_mismatch, payee_mismatch, above_eligible, above_cap",
    )
    withheld_detail: str | None = None
    withheld_at: datetime | None = None
    queue_seq: int | None
    claim_received_at: datetime
    requested_at: datetime
    queued_at: datetime | None
    held_at: datetime | None
    reserved_at: datetime | None
    issued_at: datetime | None
    next_attempt_at: datetime | None
    accepted_at: datetime | None
    sent_at: datetime | None
    paid_at: datetime | None
    failed_at: datetime | None
    returned_at: datetime | None
    released_at: datetime | None
    time_to_payment_seconds: float | None = Field(description="paid_at − claim_received_at")

    @classmethod
    def of(cls, row: asyncpg.Record) -> PayoutOut:
        out = dict(row)
        out["amount"] = fen_to_yuan(out.pop("amount_fen"))
        out["approved_amount"] = fen_to_yuan(out.pop("approved_amount_fen"))
        out["paid_amount"] = fen_to_yuan(out.pop("paid_amount_fen"))
        out["payee"] = json.loads(out["payee"])
        end = out.get("paid_at")
        out["time_to_payment_seconds"] = (
            (end - out["claim_received_at"]).total_seconds() if end is not None else None
        )
        return cls.model_validate(out)


class VoucherOut(BaseModel):
    payout_id: uuid.UUID
    issue_no: int
    voucher_no: str
    voucher_kind: str
    amount: str | None
    bank_name: str
    account_name: str
    account_number: str
    issued_at: datetime
    accepted_at: datetime | None
    sent_at: datetime | None
    arrived_at: datetime | None
    failed_at: datetime | None
    returned_at: datetime | None
    outcome: str | None
    reason: str | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> VoucherOut:
        out = dict(row)
        out["amount"] = yuan(out.pop("amount_fen"))
        return cls.model_validate(out)


class HopOut(BaseModel):
    issue_no: int
    attempt: int
    hop: str
    at: datetime
    detail: str | None


class PayoutDetailOut(PayoutOut):
    vouchers: list[VoucherOut]
    hops: list[HopOut]


class ClosedOut(BaseModel):
    payout_id: str
    status: str
    release_reason: str | None


class Summary(BaseModel):
    matched: int
    missing_statement_line: int
    unknown_statement_line: int
    amount_mismatch: int


class ReportOut(BaseModel):
    date: str
    summary: Summary
    matched: list[dict[str, Any]]
    missing_statement_line: list[dict[str, Any]]
    unknown_statement_line: list[dict[str, Any]]
    amount_mismatch: list[dict[str, Any]]

    @classmethod
    def of(cls, report: ReconciliationReport) -> ReportOut:
        return cls(
            date=report.day.isoformat(),
            summary=Summary(matched=len(report.matched), **report.mismatch_counts()),
            matched=report.matched,
            missing_statement_line=report.missing_statement_line,
            unknown_statement_line=report.unknown_statement_line,
            amount_mismatch=report.amount_mismatch,
        )


class StatementImported(BaseModel):
    statement_id: str
    lines_imported: int
    duplicates_skipped: int
    reports: list[ReportOut]


class FinanceRequestOut(BaseModel):
    """A top-up or account-correction request under dual control; ``applied``: what the
    approval changed (top-up: fund_id, released_from_queue; correction: payout_id,
    issue_no, status)."""

    request_id: str
    kind: str
    fund_id: str | None
    payout_id: str | None
    amount: str | None
    payee: dict[str, Any] | None
    reason: str
    requested_by: str
    requested_at: datetime
    status: str
    decided_by: str | None
    decided_at: datetime | None
    comment: str | None
    applied: dict[str, Any] | None = None

    @classmethod
    def of(cls, r: asyncpg.Record, applied: dict[str, Any] | None = None) -> FinanceRequestOut:
        return cls(
            request_id=str(r["request_id"]),
            kind=r["kind"],
            fund_id=r["fund_id"],
            payout_id=None if r["payout_id"] is None else str(r["payout_id"]),
            amount=yuan(r["amount_fen"]),
            payee=None if r["payee"] is None else json.loads(r["payee"]),
            reason=r["reason"],
            requested_by=r["requested_by"],
            requested_at=r["requested_at"],
            status=r["status"],
            decided_by=r["decided_by"],
            decided_at=r["decided_at"],
            comment=r["comment"],
            applied=applied,
        )
