"""The payouts table: locks in the one lock order, and every write of a payout row.

A payout's status is written here only, and only from a ``Move`` (``domain.transitions``,
checked against the state machine when it is made), by ``_write``: the row must still be
in the move's source status (it is locked, so it is; a mismatch is a bug and raises).

Lock order, everywhere: the fund row first (``FOR NO KEY UPDATE``), then payout rows
(``FOR UPDATE``); several funds or payouts in the order of their ids. A path that starts
from a claim or payout id reads the payout's fund id unlocked (it never changes), locks
the fund, then the payout.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.payout.domain.admission import Withhold
from services.payout.domain.model import PayoutStatus
from services.payout.domain.transitions import Move
from shared.db import DbConnection


class StaleStatus(RuntimeError):
    """The row was not in the move's source status (a lock was skipped: a bug)."""


async def _write(conn: DbConnection, sql: str, payout_id: uuid.UUID, m: Move, *args: Any) -> None:
    """Run a status write: ``$1`` payout id, ``$2`` the target, ``$3`` the source."""
    assert m.source is not None
    done = await conn.execute(sql, payout_id, m.target.value, m.source.value, *args)
    if done != "UPDATE 1":
        raise StaleStatus(f"payout {payout_id} is not {m.source} (wanted {m.target})")


# --- reads and locks --------------------------------------------------------------------


async def lock(
    conn: DbConnection, *, payout_id: uuid.UUID | None = None, claim_id: uuid.UUID | None = None
) -> asyncpg.Record | None:
    """The payout row, locked in the one lock order: its fund first, then the payout."""
    column, key = ("payout_id", payout_id) if payout_id is not None else ("claim_id", claim_id)
    fund_id = await conn.fetchval(f"SELECT fund_id FROM payouts WHERE {column} = $1", key)
    if fund_id is not None:
        await conn.execute("SELECT 1 FROM funds WHERE fund_id = $1 FOR NO KEY UPDATE", fund_id)
    return await conn.fetchrow(f"SELECT * FROM payouts WHERE {column} = $1 FOR UPDATE", key)


async def lock_many(conn: DbConnection, payout_ids: list[uuid.UUID]) -> None:
    """Several payouts in the one lock order: their funds, then them, each by id."""
    await conn.execute(
        """SELECT 1 FROM funds WHERE fund_id IN
               (SELECT fund_id FROM payouts WHERE payout_id = ANY($1::uuid[]))
           ORDER BY fund_id FOR NO KEY UPDATE""",
        payout_ids,
    )
    await conn.execute(
        "SELECT 1 FROM payouts WHERE payout_id = ANY($1::uuid[]) ORDER BY payout_id FOR UPDATE",
        payout_ids,
    )


async def locked(conn: DbConnection, payout_id: uuid.UUID) -> asyncpg.Record | None:
    """The row of a payout this transaction locked already (``lock_many``)."""
    return await conn.fetchrow("SELECT * FROM payouts WHERE payout_id = $1 FOR UPDATE", payout_id)


async def get(conn: DbConnection, payout_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM payouts WHERE payout_id = $1", payout_id)


# Due by the unit of work's clock ($2), the clock next_attempt_at was written with.
_DUE = "(status = 'requested' OR (status = 'retrying' AND next_attempt_at <= $2))"


async def lock_due_for_issue(conn: DbConnection, limit: int, now: datetime) -> list[asyncpg.Record]:
    """Payouts due to be issued (requested, or retrying whose wait is over), oldest
    approval first, locked in the lock order; another instance's claims are skipped."""
    candidates = await conn.fetch(
        f"SELECT payout_id FROM payouts WHERE {_DUE} ORDER BY requested_at LIMIT $1",
        limit,
        now,
    )
    if not candidates:
        return []
    ids = [r["payout_id"] for r in candidates]
    await conn.execute(
        """SELECT 1 FROM funds WHERE fund_id IN
               (SELECT fund_id FROM payouts WHERE payout_id = ANY($1::uuid[]))
           ORDER BY fund_id FOR NO KEY UPDATE""",
        ids,
    )
    rows = await conn.fetch(
        f"""SELECT * FROM payouts WHERE payout_id = ANY($1::uuid[]) AND {_DUE}
            ORDER BY payout_id FOR UPDATE SKIP LOCKED""",
        ids,
        now,
    )
    return sorted(rows, key=lambda r: r["requested_at"])


async def in_doubt_due(
    conn: DbConnection, limit: int, lease_s: float, now: datetime
) -> list[asyncpg.Record]:
    """``unknown`` payouts whose wait is over (by the unit of work's clock, which wrote
    next_attempt_at) and ``issuing`` ones older than the lease (status_at is the
    database's: a trigger sets it)."""
    return list(
        await conn.fetch(
            """SELECT payout_id, issue_no, attempts FROM payouts
               WHERE (status = 'unknown' AND next_attempt_at <= $3)
                  OR (status = 'issuing' AND status_at < now() - make_interval(secs => $2))
               ORDER BY status_at LIMIT $1""",
            limit,
            lease_s,
            now,
        )
    )


# --- writes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NewPayout:
    payout_id: uuid.UUID
    claim_id: uuid.UUID
    claim_kind: str
    amount_fen: int
    payee_json: str
    claim_received_at: datetime
    requested_at: datetime
    fund_id: str
    program_id: str | None
    voucher_kind: str
    documents_pending: bool
    uscc: str | None = None
    """The enterprise, as intake reported it (None until intake's event is seen)."""
    cap_charged_fen: int = 0
    withheld: Withhold | None = None


async def insert(conn: DbConnection, p: NewPayout, m: Move) -> asyncpg.Record | None:
    """The claim's payout, or None when the claim has one already (one per claim).
    Written queued, or withheld with its reason (``p.withheld``)."""
    assert m.source is None
    assert (m.target is PayoutStatus.WITHHELD) == (p.withheld is not None)
    reason = p.withheld.reason if p.withheld else None
    detail = p.withheld.detail if p.withheld else None
    return await conn.fetchrow(
        """INSERT INTO payouts (payout_id, claim_id, claim_kind, amount_fen,
               approved_amount_fen, payee, status, claim_received_at, requested_at, fund_id,
               program_id, voucher_kind, documents_pending, uscc, cap_charged_fen,
               withheld_reason, withheld_detail, withheld_at)
           VALUES ($1, $2, $3, $4, $4, $5::jsonb, $6, $7, $8, $9, $10, $11, $12, $13, $14,
                   $15, $16, $17)
           ON CONFLICT (claim_id) DO NOTHING RETURNING *""",
        p.payout_id,
        p.claim_id,
        p.claim_kind,
        p.amount_fen,
        p.payee_json,
        m.target.value,
        p.claim_received_at,
        p.requested_at,
        p.fund_id,
        p.program_id,
        p.voucher_kind,
        p.documents_pending,
        p.uscc,
        p.cap_charged_fen,
        reason,
        detail,
        None if p.withheld is None else p.requested_at,
    )


async def withhold_again(
    conn: DbConnection, payout_id: uuid.UUID, w: Withhold, uscc: str | None, now: datetime
) -> None:
    """A withheld payout stays withheld for another reason (intake's event arrived and
    does not agree): no status write, only the reason."""
    await conn.execute(
        """UPDATE payouts SET withheld_reason = $2, withheld_detail = $3, withheld_at = $4,
               uscc = coalesce($5, uscc)
           WHERE payout_id = $1 AND status = 'withheld'""",
        payout_id,
        w.reason,
        w.detail,
        now,
        uscc,
    )


async def admitted(
    conn: DbConnection, payout_id: uuid.UUID, uscc: str, cap_charged_fen: int
) -> None:
    """A withheld payout admitted for payment (after its status moved on): the
    enterprise and what it took of the cap (its withheld reason stays, as history)."""
    await conn.execute(
        "UPDATE payouts SET uscc = $2, cap_charged_fen = $3 WHERE payout_id = $1",
        payout_id,
        uscc,
        cap_charged_fen,
    )


async def set_payee(conn: DbConnection, payout_id: uuid.UUID, payee_json: str) -> None:
    """The account two finance people chose when releasing a withheld payout."""
    await conn.execute(
        "UPDATE payouts SET payee = $2::jsonb WHERE payout_id = $1 AND status = 'withheld'",
        payout_id,
        payee_json,
    )


async def admit_to_queue(conn: DbConnection, payout_id: uuid.UUID, m: Move, now: datetime) -> int:
    """A withheld payout admitted joins its fund's queue (keeping its documents flag);
    returns its place."""
    await _write(
        conn,
        """UPDATE payouts SET status = $2, queue_seq = nextval('payout_queue_seq'),
               queued_at = $4
           WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        now,
    )
    seq: int = await conn.fetchval("SELECT queue_seq FROM payouts WHERE payout_id = $1", payout_id)
    return seq


async def reserve(
    conn: DbConnection, payout_id: uuid.UUID, m: Move, now: datetime, documents_pending: bool
) -> None:
    """Reserved: held (documents pending) or requested."""
    await _write(
        conn,
        """UPDATE payouts SET status = $2::text, reserved_at = $4::timestamptz,
               held_at = CASE WHEN $2::text = 'held' THEN $4::timestamptz END,
               documents_pending = $5
           WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        now,
        documents_pending,
    )


async def reserve_again(conn: DbConnection, payout_id: uuid.UUID, m: Move, now: datetime) -> None:
    """A failed payout with a corrected account, reserved again (requested)."""
    await _write(
        conn,
        """UPDATE payouts SET status = $2, reserved_at = $4, documents_pending = false
           WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        now,
    )


async def requeue(conn: DbConnection, payout_id: uuid.UUID, m: Move, now: datetime) -> int:
    """A failed payout with a corrected account joins the queue's end; returns its place."""
    await _write(
        conn,
        """UPDATE payouts SET status = $2, documents_pending = false,
               queue_seq = nextval('payout_queue_seq'), queued_at = $4
           WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        now,
    )
    seq: int = await conn.fetchval("SELECT queue_seq FROM payouts WHERE payout_id = $1", payout_id)
    return seq


async def documents_complete(conn: DbConnection, payout_id: uuid.UUID, m: Move | None) -> None:
    """Intake reports the documents complete: a held payout is requested (``m``); a
    queued one only remembers it."""
    if m is None:
        await conn.execute(
            "UPDATE payouts SET documents_pending = false WHERE payout_id = $1", payout_id
        )
        return
    await _write(
        conn,
        """UPDATE payouts SET status = $2, documents_pending = false
           WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
    )


async def release(
    conn: DbConnection, payout_id: uuid.UUID, m: Move, now: datetime, reason: str
) -> None:
    await _write(
        conn,
        """UPDATE payouts SET status = $2, released_at = $4, release_reason = $5,
               queue_seq = NULL
           WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        now,
        reason,
    )


async def claim_for_issue(
    conn: DbConnection, payout_id: uuid.UUID, m: Move, attempt: int, now: datetime
) -> None:
    await _write(
        conn,
        """UPDATE payouts SET status = $2, attempts = $4, issued_at = $5, next_attempt_at = NULL
           WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        attempt,
        now,
    )


async def record_reference(
    conn: DbConnection, payout_id: uuid.UUID, m: Move | None, reference: str, attempt: int
) -> None:
    """The bank took the attempt: its reference (and the attempt it holds) are kept; an
    ``issuing`` payout is issued (``m``), one the notices moved on keeps its status."""
    if m is None:
        await conn.execute(
            "UPDATE payouts SET gateway_reference = $2, attempts = $3 WHERE payout_id = $1",
            payout_id,
            reference,
            attempt,
        )
        return
    await _write(
        conn,
        """UPDATE payouts SET status = $2, gateway_reference = $4, attempts = $5
           WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        reference,
        attempt,
    )


async def adopt_bank_attempt(
    conn: DbConnection, payout_id: uuid.UUID, m: Move, attempt: int, reference: str | None
) -> None:
    """The bank, asked, holds ``attempt`` of the key: the payout follows it (issued)."""
    await _write(
        conn,
        """UPDATE payouts SET status = $2, attempts = $4, next_attempt_at = NULL,
               gateway_reference = coalesce($5, gateway_reference)
           WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        attempt,
        reference,
    )


async def wait_until(conn: DbConnection, payout_id: uuid.UUID, m: Move, at: datetime) -> None:
    """Retrying or unknown, until ``at`` (the next attempt, or asking the bank)."""
    await _write(
        conn,
        "UPDATE payouts SET status = $2, next_attempt_at = $4 WHERE payout_id = $1 AND status = $3",
        payout_id,
        m,
        at,
    )


async def stamp_hop(
    conn: DbConnection, payout_id: uuid.UUID, m: Move, column: str, at: datetime, reference: str
) -> None:
    """Accepted or sent by the bank (``column``: ``accepted_at`` / ``sent_at``, from the
    domain's notice table, never input)."""
    await _write(
        conn,
        f"""UPDATE payouts SET status = $2, {column} = $4,
                gateway_reference = coalesce(gateway_reference, $5)
            WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        at,
        reference,
    )


async def pay(conn: DbConnection, payout_id: uuid.UUID, m: Move, at: datetime) -> None:
    """Funds arrived (到账): the approved amount counts as paid, once."""
    await _write(
        conn,
        """UPDATE payouts SET status = $2, paid_at = $4,
               paid_amount_fen = paid_amount_fen + amount_fen
           WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        at,
    )


async def end_issue(
    conn: DbConnection, payout_id: uuid.UUID, m: Move, at: datetime, reason: str
) -> None:
    """The current issue failed or came back: ``failed_at`` / ``returned_at``, reason."""
    column = {"failed": "failed_at", "returned": "returned_at"}[m.target.value]
    await _write(
        conn,
        f"""UPDATE payouts SET status = $2, {column} = $4, failure_reason = $5
            WHERE payout_id = $1 AND status = $3""",
        payout_id,
        m,
        at,
        reason,
    )


async def start_new_issue(
    conn: DbConnection, payout_id: uuid.UUID, payee_json: str, issue_no: int
) -> None:
    """A corrected account: the next issue, no attempt yet, the failure forgotten."""
    await conn.execute(
        """UPDATE payouts SET payee = $2::jsonb, issue_no = $3, attempts = 0,
               failure_reason = NULL, failed_at = NULL
           WHERE payout_id = $1""",
        payout_id,
        payee_json,
        issue_no,
    )


async def note_late_cancellation(conn: DbConnection, payout_id: uuid.UUID, note: str) -> None:
    await conn.execute(
        """UPDATE payouts SET late_cancellation = coalesce(late_cancellation, $2)
           WHERE payout_id = $1""",
        payout_id,
        note,
    )
