"""Payout's domain: one payout per approved claim and the rules it moves by (pure, no I/O).

State machine (docs/payout.md)::

    approval ─┬─> queued ──(budget topped up / released elsewhere)──┐
              ├─> held  ──(documents completed)──> requested        │
              └─> requested <───────────────────────────────────────┘ (or held)
    requested|retrying ─> issuing (claimed and committed; then the bank is called)
    issuing ─> issued (bank took it) | unknown (no answer: timeout, connection lost)
    unknown ─(bank asked: has it)─> issued   unknown ─(bank never got it)─> retrying
    issued ─> accepted ─> sent ─> paid (到账)   (notices also move issuing and unknown)
    issued ─(transient failure)─> retrying ─> issuing (same voucher, same key)
    issued|accepted|sent ─(permanent failure)─> failed   (commitment released)
    issued|accepted|sent ─(returned)─> returned ─(account corrected)─> retrying
    failed ─(account corrected by finance)─> requested (reserved again) | queued
    failed|returned ─(closed by finance, with a reason)─> released
    queued|held|requested|retrying|returned ─(lapsed / withdrawn)─> released
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import InvalidOperation
from enum import StrEnum
from typing import Literal

from shared.money import parse_yuan, yuan_to_fen


class PayoutStatus(StrEnum):
    QUEUED = "queued"
    """Waiting for budget (first come, first served); nothing reserved."""
    HELD = "held"
    """Reserved; waiting for intake to report the pending documents complete."""
    REQUESTED = "requested"
    """Reserved; ready to issue."""
    ISSUING = "issuing"
    """Committed and claimed by one payout instance, which is calling the bank now."""
    ISSUED = "issued"
    """The bank took the voucher; its notices move it on."""
    UNKNOWN = "unknown"
    """The bank call ended without an answer: the bank may or may not have the voucher.
    Resolved by asking the bank for the instruction's status; never released meanwhile."""
    ACCEPTED = "accepted"
    SENT = "sent"
    RETRYING = "retrying"
    """Committed; to be (re)issued at next_attempt_at."""
    PAID = "paid"
    """Funds arrived (到账)."""
    FAILED = "failed"
    """Failed for good (account closed, retries exhausted); the commitment is back in the
    fund. Finance corrects the account (re-issue) or closes the payout with a reason."""
    RETURNED = "returned"
    """The bank returned the money; waits for finance to correct the account."""
    RELEASED = "released"


FINAL = frozenset({PayoutStatus.PAID, PayoutStatus.RELEASED})
WAITING = {
    PayoutStatus.QUEUED: "budget",
    PayoutStatus.HELD: "documents",
    PayoutStatus.RETURNED: "account_correction",
    PayoutStatus.FAILED: "finance_decision",
}
"""Statuses that will not move without a person, and what they wait for."""
RESERVED = frozenset({PayoutStatus.HELD, PayoutStatus.REQUESTED})
"""Statuses whose amount is in the fund's ``reserved``."""
COMMITTED = frozenset(
    {
        PayoutStatus.ISSUING,
        PayoutStatus.ISSUED,
        PayoutStatus.UNKNOWN,
        PayoutStatus.ACCEPTED,
        PayoutStatus.SENT,
        PayoutStatus.RETRYING,
        PayoutStatus.RETURNED,
        PayoutStatus.PAID,
    }
)
"""Statuses whose amount is in the fund's ``committed`` (money has left or is leaving)."""
CANCELLABLE = frozenset(
    {
        PayoutStatus.QUEUED,
        PayoutStatus.HELD,
        PayoutStatus.REQUESTED,
        PayoutStatus.RETRYING,
        PayoutStatus.RETURNED,
    }
)
"""A lapse or withdrawal releases these: no money is with the bank (a retrying voucher's
last attempt failed, a returned one came back). Issued, accepted, sent and paid ones are
recorded as late cancellations, never un-paid; so are issuing and unknown ones, whose
money may have left."""
IN_DOUBT = (PayoutStatus.ISSUING, PayoutStatus.UNKNOWN, PayoutStatus.ISSUED)
"""With the bank and no news yet: counted as stuck when they stay too long."""

# Allowed moves; anything else is a replay or a stale notice and changes nothing.
_BANK_OUTCOMES = frozenset(
    {
        PayoutStatus.ACCEPTED,
        PayoutStatus.SENT,
        PayoutStatus.PAID,
        PayoutStatus.RETRYING,
        PayoutStatus.FAILED,
        PayoutStatus.RETURNED,
    }
)
TRANSITIONS: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    PayoutStatus.QUEUED: frozenset(
        {PayoutStatus.HELD, PayoutStatus.REQUESTED, PayoutStatus.RELEASED}
    ),
    PayoutStatus.HELD: frozenset({PayoutStatus.REQUESTED, PayoutStatus.RELEASED}),
    PayoutStatus.REQUESTED: frozenset({PayoutStatus.ISSUING, PayoutStatus.RELEASED}),
    # The bank's notices may overtake the recording of the bank call's own outcome.
    PayoutStatus.ISSUING: _BANK_OUTCOMES | {PayoutStatus.ISSUED, PayoutStatus.UNKNOWN},
    PayoutStatus.UNKNOWN: _BANK_OUTCOMES | {PayoutStatus.ISSUED},
    PayoutStatus.ISSUED: _BANK_OUTCOMES,
    PayoutStatus.ACCEPTED: frozenset(
        {PayoutStatus.SENT, PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.RETURNED}
    ),
    PayoutStatus.SENT: frozenset({PayoutStatus.PAID, PayoutStatus.FAILED, PayoutStatus.RETURNED}),
    PayoutStatus.RETRYING: frozenset(
        {PayoutStatus.ISSUING, PayoutStatus.FAILED, PayoutStatus.RELEASED}
    ),
    PayoutStatus.RETURNED: frozenset({PayoutStatus.RETRYING, PayoutStatus.RELEASED}),
    PayoutStatus.PAID: frozenset(),
    PayoutStatus.FAILED: frozenset(
        {PayoutStatus.REQUESTED, PayoutStatus.QUEUED, PayoutStatus.RELEASED}
    ),
    PayoutStatus.RELEASED: frozenset(),
}
CORRECTABLE = frozenset({PayoutStatus.RETURNED, PayoutStatus.FAILED})
"""Finance may correct the account of these (and re-issue) or close them with a reason."""

Hop = Literal["accepted", "sent", "arrived", "failed", "returned"]
HOP_TARGET: dict[str, PayoutStatus] = {
    "accepted": PayoutStatus.ACCEPTED,
    "sent": PayoutStatus.SENT,
    "arrived": PayoutStatus.PAID,
    "returned": PayoutStatus.RETURNED,
}


def can_move(current: PayoutStatus, target: PayoutStatus) -> bool:
    return target in TRANSITIONS[current]


def target_of_notice(
    current: PayoutStatus, hop: str, *, permanent: bool, attempts: int, max_attempts: int
) -> PayoutStatus | None:
    """Where a bank notice moves a payout, or None when it changes nothing."""
    if hop == "failed":
        target = (
            PayoutStatus.FAILED if permanent or attempts >= max_attempts else PayoutStatus.RETRYING
        )
    else:
        target = HOP_TARGET[hop]
    return target if can_move(current, target) else None


NoticePosition = Literal["behind", "current", "ahead"]


def notice_position(
    row_issue_no: int, row_attempts: int, notice_issue_no: int, notice_attempt: int
) -> NoticePosition:
    """Where a bank notice stands against the payout row's (issue, attempt).

    Behind: about an issue or attempt the row has left (a late copy): discarded. Ahead:
    the bank has an attempt the row has not recorded (its commit was lost, or another
    instance is still recording it): kept until the row catches up, never dropped.
    """
    row, notice = (row_issue_no, row_attempts), (notice_issue_no, notice_attempt)
    if notice < row:
        return "behind"
    return "current" if notice == row else "ahead"


def after_approval(*, reserved: bool, documents_pending: bool) -> PayoutStatus:
    if not reserved:
        return PayoutStatus.QUEUED
    return PayoutStatus.HELD if documents_pending else PayoutStatus.REQUESTED


def backoff_seconds(attempt: int, *, base_s: float, max_s: float) -> float:
    """Delay before retry number ``attempt`` (1-based): base, 2×base, 4×base, … capped."""
    return float(min(max_s, base_s * 2 ** max(0, attempt - 1)))


def voucher_kind(claim_kind: str) -> Literal["tax_refund_voucher", "direct_payment_voucher"]:
    """税收收入退还书 for refunds, 财政直接支付凭证 for subsidies."""
    return "tax_refund_voucher" if claim_kind == "vat_refund" else "direct_payment_voucher"


def voucher_no(kind: str, payout_id: uuid.UUID, issue_no: int) -> str:
    prefix = "TR" if kind == "tax_refund_voucher" else "DP"
    return f"{prefix}-{payout_id.hex[:16].upper()}-{issue_no}"


def fund_of(claim_kind: str, program_id: str | None, funds_by_program: dict[str, str]) -> str:
    """The fund a claim draws on; raises LookupError for an unknown program."""
    key = "vat_refund" if claim_kind == "vat_refund" else (program_id or "")
    try:
        return funds_by_program[key]
    except KeyError:
        raise LookupError(f"no fund for claim kind {claim_kind!r} program {program_id!r}") from None


# --- reconciliation -------------------------------------------------------------------

STATEMENT_COLUMNS = (
    "value_date",
    "bank_reference",
    "end_to_end_id",
    "amount",
    "account_number",
    "direction",
)
Direction = Literal["debit", "credit"]


@dataclass(frozen=True)
class StatementLine:
    value_date: date
    bank_reference: str
    end_to_end_id: str
    amount_fen: int
    account_number: str
    direction: Direction


@dataclass(frozen=True)
class LineError:
    line: int
    field: str
    message: str


class StatementInvalid(ValueError):
    def __init__(self, errors: list[LineError]) -> None:
        super().__init__(f"{len(errors)} errors in the statement")
        self.errors = errors


def parse_statement_csv(text: str) -> list[StatementLine]:
    """Parse the CSV statement (docs/payout.md); all lines valid or StatementInvalid."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = tuple(h.strip() for h in (reader.fieldnames or ()))
    if header != STATEMENT_COLUMNS:
        raise StatementInvalid(
            [LineError(1, "header", f"expected columns {','.join(STATEMENT_COLUMNS)}")]
        )
    lines: list[StatementLine] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    try:
        rows = list(reader)
    except csv.Error as exc:
        # A bare CR inside a line, a field over the csv module's size limit, ...
        raise StatementInvalid([LineError(reader.line_num + 1, "csv", f"not CSV: {exc}")]) from None
    for number, row in enumerate(rows, start=2):
        values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        before = len(errors)
        try:
            value_date = date.fromisoformat(values["value_date"])
        except ValueError:
            errors.append(LineError(number, "value_date", "not an ISO date (YYYY-MM-DD)"))
        amount_fen = 0
        try:
            amount = parse_yuan(values["amount"])
            if amount <= 0:
                raise ValueError("amount must be positive")
            amount_fen = yuan_to_fen(amount)
        except (InvalidOperation, ValueError):
            errors.append(
                LineError(
                    number,
                    "amount",
                    "a positive amount in yuan: plain ASCII decimal, 2 decimals, "
                    "at most 9999999999999.99",
                )
            )
        for name in ("bank_reference", "end_to_end_id", "account_number"):
            if not values[name]:
                errors.append(LineError(number, name, "required"))
        if values["bank_reference"] in seen:
            errors.append(LineError(number, "bank_reference", "appears twice in the statement"))
        seen.add(values["bank_reference"])
        direction = values["direction"].lower()
        if direction not in ("debit", "credit"):
            errors.append(LineError(number, "direction", "debit or credit"))
        if len(errors) == before:
            lines.append(
                StatementLine(
                    value_date=value_date,
                    bank_reference=values["bank_reference"],
                    end_to_end_id=values["end_to_end_id"],
                    amount_fen=amount_fen,
                    account_number=values["account_number"],
                    direction="debit" if direction == "debit" else "credit",
                )
            )
    if errors:
        raise StatementInvalid(errors)
    return lines


@dataclass(frozen=True)
class ExpectedEntry:
    """A statement line payout expects: a voucher's debit (sent) or its credit (returned)."""

    voucher_no: str
    payout_id: uuid.UUID
    direction: Direction
    amount_fen: int
    account_number: str


MismatchKind = Literal["missing_statement_line", "unknown_statement_line", "amount_mismatch"]


@dataclass
class ReconciliationReport:
    day: date
    matched: list[dict[str, object]] = field(default_factory=list)
    missing_statement_line: list[dict[str, object]] = field(default_factory=list)
    unknown_statement_line: list[dict[str, object]] = field(default_factory=list)
    amount_mismatch: list[dict[str, object]] = field(default_factory=list)

    def mismatch_counts(self) -> dict[MismatchKind, int]:
        return {
            "missing_statement_line": len(self.missing_statement_line),
            "unknown_statement_line": len(self.unknown_statement_line),
            "amount_mismatch": len(self.amount_mismatch),
        }


def reconcile(
    day: date, expected: list[ExpectedEntry], lines: list[StatementLine]
) -> ReconciliationReport:
    """Match on (end-to-end id = voucher number, direction); compare the amounts."""
    report = ReconciliationReport(day=day)
    by_key = {(e.voucher_no, e.direction): e for e in expected}
    used: set[tuple[str, str]] = set()
    for line in sorted(lines, key=lambda x: x.bank_reference):
        key = (line.end_to_end_id, line.direction)
        entry = by_key.get(key)
        view: dict[str, object] = {
            "bank_reference": line.bank_reference,
            "end_to_end_id": line.end_to_end_id,
            "direction": line.direction,
            "statement_amount_fen": line.amount_fen,
        }
        if entry is None or key in used:
            report.unknown_statement_line.append(view)
            continue
        used.add(key)
        view |= {"payout_id": str(entry.payout_id), "expected_amount_fen": entry.amount_fen}
        if entry.amount_fen != line.amount_fen:
            report.amount_mismatch.append(view)
        else:
            report.matched.append(view)
    for e in sorted(expected, key=lambda x: (x.voucher_no, x.direction)):
        if (e.voucher_no, e.direction) not in used:
            report.missing_statement_line.append(
                {
                    "end_to_end_id": e.voucher_no,
                    "direction": e.direction,
                    "payout_id": str(e.payout_id),
                    "expected_amount_fen": e.amount_fen,
                }
            )
    return report
