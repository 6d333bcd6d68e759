"""Vouchers: one per issue of a payout (税收收入退还书 / 财政直接支付凭证), with the time of
each hop and how the issue ended."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import asyncpg

from shared.contracts import BankAccount
from shared.db import DbConnection


async def insert(
    conn: DbConnection,
    payout_id: uuid.UUID,
    issue_no: int,
    number: str,
    kind: str,
    amount_fen: int,
    payee: BankAccount,
    issued_at: datetime,
) -> None:
    """The voucher of an issue, once (a retry of the same issue keeps its voucher)."""
    await conn.execute(
        """INSERT INTO vouchers (payout_id, issue_no, voucher_no, voucher_kind,
               amount_fen, bank_name, account_name, account_number, issued_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (payout_id, issue_no) DO NOTHING""",
        payout_id,
        issue_no,
        number,
        kind,
        amount_fen,
        payee.bank_name,
        payee.account_name,
        payee.account_number,
        issued_at,
    )


async def get(conn: DbConnection, payout_id: uuid.UUID, issue_no: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM vouchers WHERE payout_id = $1 AND issue_no = $2", payout_id, issue_no
    )


Stamp = Literal["accepted_at", "sent_at", "arrived_at"]


async def stamp(
    conn: DbConnection, payout_id: uuid.UUID, issue_no: int, column: Stamp, at: datetime
) -> None:
    """A hop's time; arrival also settles the outcome (``column`` is a literal, never
    input)."""
    outcome = ", outcome = 'arrived'" if column == "arrived_at" else ""
    await conn.execute(
        f"UPDATE vouchers SET {column} = $3{outcome} WHERE payout_id = $1 AND issue_no = $2",
        payout_id,
        issue_no,
        at,
    )


async def end(
    conn: DbConnection,
    payout_id: uuid.UUID,
    issue_no: int,
    outcome: Literal["failed", "returned"],
    at: datetime,
    reason: str,
) -> None:
    """The issue failed or came back (``outcome`` names the status and the column)."""
    await conn.execute(
        f"""UPDATE vouchers SET {outcome}_at = $3, outcome = '{outcome}', reason = $4
           WHERE payout_id = $1 AND issue_no = $2""",
        payout_id,
        issue_no,
        at,
        reason,
    )
