"""The rules a claim must pass at the window: the VAT credit refund computation, the
checklist and amounts, and 容缺受理 deadlines. Pure (no I/O) and unit-tested."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_DOWN, Decimal

from shared.programs import ClaimRules, Program
from shared.workdays import CHINA, deadline_after

# --- the VAT credit refund -------------------------------------------------------------

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


def amount_note(requested_fen: int, refund: RefundComputation, policy_year: int) -> str | None:
    """Why the requested and eligible amounts differ (None when they agree)."""
    if refund.note is not None:
        return refund.note
    if refund.eligible_fen != requested_fen:
        return (
            f"requested {requested_fen} fen differs from eligible "
            f"{refund.eligible_fen} fen under the {policy_year} rule"
        )
    return None


# --- the rules a claim must pass at the window ----------------------------------------


@dataclass(frozen=True)
class Violation:
    field: str
    rule: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "message": self.message}


def check_documents(
    rules: ClaimRules, supplied: Sequence[str], promised: Sequence[str]
) -> list[Violation]:
    """Every checklist document is supplied or promised; critical ones are supplied."""
    known = {d.id for d in rules.documents}
    out: list[Violation] = []
    for field, ids in (("documents_supplied", supplied), ("documents_promised", promised)):
        for doc in ids:
            if doc not in known:
                out.append(
                    Violation(
                        field,
                        "unknown_document",
                        f"{doc!r} is not on the checklist ({', '.join(sorted(known))})",
                    )
                )
        if len(set(ids)) != len(ids):
            out.append(Violation(field, "listed_twice", "a document is listed twice"))
    for doc in sorted(set(supplied) & set(promised)):
        out.append(
            Violation("documents_promised", "supplied_and_promised", f"{doc!r} is in both lists")
        )
    for d in rules.documents:
        if d.critical and d.id in promised:
            out.append(
                Violation(
                    "documents_promised",
                    "critical_document",
                    f"{d.id!r} ({d.name}) is critical and cannot be promised (no 容缺)",
                )
            )
        elif d.id not in supplied and d.id not in promised:
            rule = "critical_document_missing" if d.critical else "document_unaccounted"
            out.append(
                Violation(
                    "documents_supplied",
                    rule,
                    f"{d.id!r} ({d.name}) must be supplied"
                    + ("" if d.critical else " or promised"),
                )
            )
    return out


def check_vat_amounts(*, requested_fen: int, end_credit_fen: int) -> list[Violation]:
    if requested_fen > end_credit_fen:
        return [
            Violation(
                "requested_amount",
                "within_credit_balance",
                "the requested refund exceeds the end-of-period credit balance",
            )
        ]
    return []


def check_subsidy(program: Program, *, requested_fen: int, today: date) -> list[Violation]:
    out: list[Violation] = []
    if not program.is_open(today):
        out.append(
            Violation(
                "program_id",
                "application_window",
                f"{program.id} accepts applications from {program.opens} to {program.closes}",
            )
        )
    if requested_fen > program.cap_fen:
        out.append(
            Violation(
                "requested_amount",
                "per_enterprise_cap",
                f"the cap of {program.id} is {program.per_enterprise_cap} yuan per enterprise",
            )
        )
    return out


# --- 容缺受理 deadlines --------------------------------------------------------------


@dataclass(frozen=True)
class DocumentsDeadline:
    due_by: date
    """Last working day to supply the documents (Beijing calendar)."""
    due_at: datetime
    """The end of that day (23:59:59 Beijing): the lapse loop compares against this."""


def documents_deadline(received_at: datetime, working_days: int) -> DocumentsDeadline:
    due_at = deadline_after(received_at, working_days)
    return DocumentsDeadline(due_by=due_at.date(), due_at=due_at)


def beijing_today(now: datetime) -> date:
    return now.astimezone(CHINA).date()


def local_period(now: datetime) -> str:
    today = beijing_today(now)
    return f"{today.year:04d}-{today.month:02d}"
