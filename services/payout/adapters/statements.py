"""Imported bank statements, and what payout expects on the statement of a day."""

from __future__ import annotations

import uuid
from datetime import date

from services.payout.domain.statements import (
    ExpectedEntry,
    ReconciliationReport,
    StatementLine,
    reconcile,
)
from shared.db import DbConnection

BANK_TIMEZONE = "Asia/Shanghai"
"""Value dates are the bank's (Beijing time)."""


async def store(
    conn: DbConnection, statement_id: uuid.UUID, actor: str, lines: list[StatementLine]
) -> int:
    """Store a statement and its lines; a line imported before (same bank reference) is
    skipped. Returns how many lines were new."""
    await conn.execute(
        """INSERT INTO statements (statement_id, imported_by, lines, duplicates)
           VALUES ($1, $2, 0, 0)""",
        statement_id,
        actor,
    )
    inserted = 0
    for line in lines:
        inserted += bool(
            await conn.fetchval(
                """INSERT INTO statement_lines (statement_id, value_date, bank_reference,
                       end_to_end_id, amount_fen, account_number, direction)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (bank_reference) DO NOTHING RETURNING true""",
                statement_id,
                line.value_date,
                line.bank_reference,
                line.end_to_end_id,
                line.amount_fen,
                line.account_number,
                line.direction,
            )
        )
    await conn.execute(
        "UPDATE statements SET lines = $2, duplicates = $3 WHERE statement_id = $1",
        statement_id,
        inserted,
        len(lines) - inserted,
    )
    return inserted


async def expected_on(conn: DbConnection, day: date) -> list[ExpectedEntry]:
    """A debit per voucher the agency bank sent on ``day``, a credit per one returned."""
    vouchers = await conn.fetch(
        f"""SELECT voucher_no, payout_id, amount_fen, account_number,
                   (sent_at AT TIME ZONE '{BANK_TIMEZONE}')::date AS sent_day,
                   (returned_at AT TIME ZONE '{BANK_TIMEZONE}')::date AS returned_day
            FROM vouchers
            WHERE (sent_at AT TIME ZONE '{BANK_TIMEZONE}')::date = $1
               OR (returned_at AT TIME ZONE '{BANK_TIMEZONE}')::date = $1""",
        day,
    )
    expected: list[ExpectedEntry] = []
    for v in vouchers:
        for direction, on in (("debit", v["sent_day"]), ("credit", v["returned_day"])):
            if on == day:
                expected.append(
                    ExpectedEntry(
                        voucher_no=v["voucher_no"],
                        payout_id=v["payout_id"],
                        direction="debit" if direction == "debit" else "credit",
                        amount_fen=v["amount_fen"],
                        account_number=v["account_number"],
                    )
                )
    return expected


async def lines_on(conn: DbConnection, day: date) -> list[StatementLine]:
    rows = await conn.fetch("SELECT * FROM statement_lines WHERE value_date = $1", day)
    return [
        StatementLine(
            value_date=r["value_date"],
            bank_reference=r["bank_reference"],
            end_to_end_id=r["end_to_end_id"],
            amount_fen=r["amount_fen"],
            account_number=r["account_number"],
            direction=r["direction"],
        )
        for r in rows
    ]


async def report_for(conn: DbConnection, day: date) -> ReconciliationReport:
    """The reconciliation report of one value date, from what is stored now."""
    return reconcile(day, await expected_on(conn, day), await lines_on(conn, day))
