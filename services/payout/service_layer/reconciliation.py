"""Bank statement import and the reconciliation report for one value date.

What payout expects on the statement of day D (dates in Beijing time, the bank's):
a debit line per voucher the agency bank sent on D (money left the treasury account),
and a credit line per voucher returned on D (money came back). The end-to-end id of a
line is the voucher number.
"""

from __future__ import annotations

import uuid
from datetime import date

import asyncpg

from services.payout.domain.model import (
    ExpectedEntry,
    ReconciliationReport,
    StatementLine,
    parse_statement_csv,
    reconcile,
)
from services.payout.metrics import RECONCILIATION_MISMATCHES
from services.payout.service_layer.handlers import transaction
from shared.db import DbConnection
from shared.messaging.after_commit import after_commit

BANK_TIMEZONE = "Asia/Shanghai"


Imported = tuple[uuid.UUID, int, int, list[ReconciliationReport]]


async def import_statement(pool: asyncpg.Pool, text: str, actor: str) -> Imported:
    """import_statement_in in a transaction of its own."""
    async with transaction(pool) as conn:
        return await import_statement_in(conn, text, actor)


async def import_statement_in(conn: DbConnection, text: str, actor: str) -> Imported:
    """Store the statement's lines (a line already imported, same bank reference, is
    skipped) and return the reports of the dates it covers. Mismatches of those reports
    are counted in ``claimflow_reconciliation_mismatches_total`` once committed."""
    lines = parse_statement_csv(text)
    statement_id = uuid.uuid4()
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
    duplicates = len(lines) - inserted
    await conn.execute(
        "UPDATE statements SET lines = $2, duplicates = $3 WHERE statement_id = $1",
        statement_id,
        inserted,
        duplicates,
    )
    days = sorted({line.value_date for line in lines})
    reports = [await report_for(conn, day) for day in days]
    mismatches = [report.mismatch_counts() for report in reports]

    def count() -> None:
        for counts in mismatches:
            for kind, n in counts.items():
                if n:
                    RECONCILIATION_MISMATCHES.labels(kind).inc(n)

    after_commit(count)
    return statement_id, inserted, duplicates, reports


async def report_for(conn: DbConnection, day: date) -> ReconciliationReport:
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
    rows = await conn.fetch("SELECT * FROM statement_lines WHERE value_date = $1", day)
    lines = [
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
    return reconcile(day, expected, lines)
