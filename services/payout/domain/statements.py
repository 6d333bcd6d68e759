"""Bank statements and reconciliation (pure): the CSV format of docs/payout.md, and the
matching of a day's statement lines against the entries payout expects on it."""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field
from datetime import date
from decimal import InvalidOperation
from typing import Literal

from shared.money import parse_yuan, yuan_to_fen

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
        line = _parse_line(number, values, seen, errors)
        if line is not None:
            lines.append(line)
    if errors:
        raise StatementInvalid(errors)
    return lines


def _parse_line(
    number: int, values: dict[str, str], seen: set[str], errors: list[LineError]
) -> StatementLine | None:
    """One statement line, or None with its errors added to ``errors``."""
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
    if len(errors) > before:
        return None
    return StatementLine(
        value_date=value_date,
        bank_reference=values["bank_reference"],
        end_to_end_id=values["end_to_end_id"],
        amount_fen=amount_fen,
        account_number=values["account_number"],
        direction="debit" if direction == "debit" else "credit",
    )


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
