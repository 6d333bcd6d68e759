"""Reads of the HTTP API: the tracker as the window sees it (read SQL lives here, as in
cosmicpython's ``views``; write paths use ``adapters/repository.py``)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from services.intake.domain.model import (
    FINAL,
    FINANCE_ACTS,
    HOLDER,
    IN_REVIEW_STATUSES,
    ClaimStatus,
)
from services.intake.entrypoints.schemas import (
    ClaimPage,
    ClaimSummary,
    ClaimView,
    DocumentView,
    EnterpriseView,
    TimelineEntry,
)
from shared.audit.history import ClaimAudit, service_claim_audit
from shared.auth.scope import Desks, off_desk
from shared.config import ServiceSettings
from shared.db import DbConnection
from shared.money import fen_to_yuan


def _step_due(row: asyncpg.Record, status: ClaimStatus) -> datetime | None:
    """When the current step must move: the documents deadline, finance's deadline or
    the review time limit (whichever comes first while documents are outstanding)."""
    step_due: datetime | None
    if status in (ClaimStatus.RETURNED_FOR_DOCUMENTS, ClaimStatus.APPROVED_DOCUMENTS_PENDING):
        step_due = row["documents_due_at"]
    elif status in FINANCE_ACTS:
        step_due = row["action_due_at"]
    elif status in IN_REVIEW_STATUSES:
        step_due = row["review_due_at"]
    else:
        step_due = None
    if status not in FINAL and row["documents_due_at"] is not None:
        step_due = min(d for d in (step_due, row["documents_due_at"]) if d is not None)
    return step_due


def _summary(row: asyncpg.Record, now: datetime) -> dict[str, Any]:
    status = ClaimStatus(row["status"])
    step_due = _step_due(row, status)
    return {
        "claim_id": row["claim_id"],
        "kind": row["kind"],
        "program_id": row["program_id"],
        "uscc": row["uscc"],
        "enterprise_name": row["enterprise_name"],
        "tax_period": row["tax_period"],
        "status": status.value,
        "holder": HOLDER[status],
        "holders": list(row["holders"]) or [HOLDER[status]],
        "requested_amount": fen_to_yuan(row["requested_amount_fen"]),
        "eligible_amount": fen_to_yuan(row["eligible_amount_fen"]),
        "amount_note": row["amount_note"],
        "received_at": row["received_at"],
        "status_changed_at": row["status_changed_at"],
        "pending_documents": list(row["pending_documents"]),
        "documents_due_by": row["documents_due_by"],
        "step_due_at": step_due,
        "time_left_seconds": int((step_due - now).total_seconds()) if step_due else None,
    }


# A department reviewer's reads (shared/auth/scope.py): only claims review put before one
# of their departments. In the WHERE clause, so another desk's claim is never fetched.
_ON_DESKS = "({0}::text[] IS NULL OR review_desks && {0}::text[])"


async def claim(
    conn: DbConnection, claim_id: uuid.UUID, *, now: datetime, desks: Desks
) -> ClaimView | None:
    """The claim with its documents and timeline; None when there is no such claim.
    ``desks``: a department reviewer's departments (None: no department scope); a claim
    off those desks is refused exactly as one that does not exist would be."""
    row = await conn.fetchrow(
        f"SELECT * FROM claims WHERE claim_id = $1 AND {_ON_DESKS.format('$2')}",
        claim_id,
        desks,
    )
    if row is None:
        if desks is not None:
            raise off_desk(desks)
        return None
    documents = await conn.fetch(
        """SELECT document_id, critical, state, requested_by, supplied_at, title,
                  requested_at
           FROM claim_documents WHERE claim_id = $1 ORDER BY recorded_at, document_id""",
        claim_id,
    )
    timeline = await conn.fetch(
        """SELECT event_id, event_type, producer, occurred_at, payload
           FROM claim_timeline WHERE claim_id = $1 ORDER BY occurred_at, recorded_at""",
        claim_id,
    )
    return ClaimView(
        **_summary(row, now),
        documents=[DocumentView(**dict(d)) for d in documents],
        timeline=[
            TimelineEntry(**{**dict(t), "payload": json.loads(t["payload"])}) for t in timeline
        ],
    )


async def _search(
    conn: DbConnection,
    *,
    uscc: str | None,
    status: str | None = None,
    kind: str | None = None,
    program_id: str | None = None,
    desks: Desks,
    limit: int,
    offset: int,
) -> tuple[list[asyncpg.Record], int]:
    where = f"""($1::text IS NULL OR uscc = $1) AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR program_id = $4)
               AND {_ON_DESKS.format("$5")}"""
    args = (uscc, status, kind, program_id, desks)
    total: int = await conn.fetchval(f"SELECT count(*) FROM claims WHERE {where}", *args)
    rows = await conn.fetch(
        f"""SELECT * FROM claims WHERE {where}
            ORDER BY received_at DESC, claim_id LIMIT $6 OFFSET $7""",
        *args,
        limit,
        offset,
    )
    return rows, total


async def claims(
    conn: DbConnection,
    *,
    uscc: str | None,
    status: ClaimStatus | None,
    kind: str | None,
    program_id: str | None,
    desks: Desks,
    limit: int,
    offset: int,
    now: datetime,
) -> ClaimPage:
    rows, total = await _search(
        conn,
        uscc=uscc,
        status=status.value if status else None,
        kind=kind,
        program_id=program_id,
        desks=desks,
        limit=limit,
        offset=offset,
    )
    return ClaimPage(
        items=[ClaimSummary(**_summary(r, now)) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


async def enterprise(
    conn: DbConnection, uscc: str, *, now: datetime, desks: Desks
) -> EnterpriseView:
    """Every claim of one enterprise (on ``desks``), newest first, with counts per status."""
    rows, _ = await _search(conn, uscc=uscc, desks=desks, limit=500, offset=0)
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    return EnterpriseView(
        uscc=uscc,
        enterprise_name=rows[0]["enterprise_name"] if rows else None,
        live=sum(ClaimStatus(r["status"]) not in FINAL for r in rows),
        by_status=by_status,
        claims=[ClaimSummary(**_summary(r, now)) for r in rows],
    )


async def claim_audit(
    conn: DbConnection, settings: ServiceSettings, claim_id: uuid.UUID
) -> ClaimAudit:
    """The claim's audit chain(s) in intake, each entry verified now (shared.audit.history):
    hashes, links, head, seals, and intake's state rows against the chain."""
    return await service_claim_audit(conn, "intake", settings, claim_id)
