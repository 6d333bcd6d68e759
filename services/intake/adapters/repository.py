"""SQL of intake's write paths (the window's use cases, the tracker, the lapse loop and
the deadline recomputation); the HTTP API's reads are in ``services/intake/views.py``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from shared.contracts import EventEnvelope
from shared.db import DbConnection

CLOSED_STATUSES = ("rejected", "withdrawn", "lapsed", "closed")

# Columns the tracker and the window's use cases may change after registration.
_UPDATABLE = frozenset(
    {
        "status",
        "status_changed_at",
        "pending_documents",
        "documents_due_by",
        "documents_due_at",
        "documents_due_from",
        "documents_due_days",
        "holders",
        "decided_departments",
        "review_desks",
        "closed_reason",
        "action_due_at",
    }
)


class ClaimRepository:
    def __init__(self, conn: DbConnection) -> None:
        self.conn = conn

    async def add(self, row: dict[str, Any]) -> None:
        await self.conn.execute(
            """INSERT INTO claims (claim_id, kind, program_id, uscc, enterprise_name,
                   tax_period, requested_amount_fen, eligible_amount_fen, amount_note,
                   details, payee, registered_by, received_at, status, status_changed_at,
                   pending_documents, documents_due_by, documents_due_at, holders,
                   review_due_at, documents_due_from, documents_due_days)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10::jsonb,$11::jsonb,$12,$13,$14,$13,
                       $15,$16,$17,$18,$19,$20,$21)""",
            row["claim_id"],
            row["kind"],
            row["program_id"],
            row["uscc"],
            row["enterprise_name"],
            row["tax_period"],
            row["requested_amount_fen"],
            row["eligible_amount_fen"],
            row["amount_note"],
            json.dumps(row["details"]),
            json.dumps(row["payee"]),
            row["registered_by"],
            row["received_at"],
            row["status"],
            row["pending_documents"],
            row["documents_due_by"],
            row["documents_due_at"],
            row["holders"],
            row["review_due_at"],
            row["received_at"] if row["documents_due_at"] else None,
            row["documents_due_days"] if row["documents_due_at"] else None,
        )

    async def add_documents(
        self,
        claim_id: uuid.UUID,
        documents: Sequence[tuple[str, bool, str]],
        *,
        recorded_by: str,
        at: datetime,
        requested_by: str = "checklist",
    ) -> None:
        """(document id, critical, 'supplied' | 'promised') rows of the window's checklist
        at registration (documents asked for later: ``request_documents``)."""
        await self.conn.executemany(
            """INSERT INTO claim_documents (claim_id, document_id, critical, state,
                   requested_by, recorded_at, recorded_by, supplied_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7,
                       CASE WHEN $4 = 'supplied' THEN $6::timestamptz END)
               ON CONFLICT (claim_id, document_id) DO UPDATE
                   SET state = EXCLUDED.state, requested_by = EXCLUDED.requested_by,
                       recorded_at = EXCLUDED.recorded_at, recorded_by = EXCLUDED.recorded_by,
                       supplied_at = EXCLUDED.supplied_at""",
            [
                (claim_id, doc, critical, state, requested_by, at, recorded_by)
                for doc, critical, state in documents
            ],
        )

    async def request_documents(
        self,
        claim_id: uuid.UUID,
        documents: Sequence[tuple[str, bool, str | None]],
        *,
        requested_by: str,
        at: datetime,
    ) -> None:
        """(document id, critical, title) rows a department asks for: each is
        'requested' again, whatever its state was (a critical document supplied at the
        window included); the supply recorded before stays on the timeline."""
        await self.conn.executemany(
            """INSERT INTO claim_documents (claim_id, document_id, critical, state,
                   requested_by, recorded_at, recorded_by, title, requested_at)
               VALUES ($1, $2, $3, 'requested', $4, $5, 'review:' || $4, $6, $5)
               ON CONFLICT (claim_id, document_id) DO UPDATE
                   SET state = 'requested', requested_by = EXCLUDED.requested_by,
                       recorded_at = EXCLUDED.recorded_at, recorded_by = EXCLUDED.recorded_by,
                       supplied_at = NULL, requested_at = EXCLUDED.requested_at,
                       title = coalesce(EXCLUDED.title, claim_documents.title)""",
            [
                (claim_id, doc, critical, requested_by, at, title)
                for doc, critical, title in documents
            ],
        )

    async def mark_supplied(
        self, claim_id: uuid.UUID, document_id: str, *, recorded_by: str, at: datetime
    ) -> None:
        await self.conn.execute(
            """UPDATE claim_documents SET state = 'supplied', supplied_at = $3,
                   recorded_at = $3, recorded_by = $4
               WHERE claim_id = $1 AND document_id = $2""",
            claim_id,
            document_id,
            at,
            recorded_by,
        )

    async def supplied_documents(self, claim_id: uuid.UUID) -> set[str]:
        rows = await self.conn.fetch(
            """SELECT document_id FROM claim_documents
               WHERE claim_id = $1 AND state = 'supplied'""",
            claim_id,
        )
        return {r["document_id"] for r in rows}

    async def find_live(self, uscc: str, kind: str, period_or_program: str) -> uuid.UUID | None:
        found: uuid.UUID | None = await self.conn.fetchval(
            """SELECT claim_id FROM claims
               WHERE uscc = $1 AND kind = $2 AND coalesce(program_id, tax_period) = $3
                 AND status <> ALL($4::text[])""",
            uscc,
            kind,
            period_or_program,
            list(CLOSED_STATUSES),
        )
        return found

    async def get(self, claim_id: uuid.UUID, *, for_update: bool = False) -> asyncpg.Record | None:
        sql = "SELECT * FROM claims WHERE claim_id = $1"
        return await self.conn.fetchrow(sql + (" FOR UPDATE" if for_update else ""), claim_id)

    async def update(self, claim_id: uuid.UUID, **fields: Any) -> None:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        names = list(fields)
        assignments = ", ".join(f"{n} = ${i + 2}" for i, n in enumerate(names))
        await self.conn.execute(
            f"UPDATE claims SET {assignments} WHERE claim_id = $1",
            claim_id,
            *(fields[n] for n in names),
        )

    async def folded_events(self, claim_id: uuid.UUID) -> list[asyncpg.Record]:
        """The claim's events in arrival order: what the tracker's status is folded from."""
        return await self.conn.fetch(
            """SELECT producer, event_type, payload FROM claim_timeline
               WHERE claim_id = $1 ORDER BY seq""",
            claim_id,
        )

    async def record_event(self, envelope: EventEnvelope) -> bool:
        inserted = await self.conn.fetchval(
            """INSERT INTO claim_timeline (event_id, claim_id, event_type, producer,
                   occurred_at, payload)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb)
               ON CONFLICT (event_id) DO NOTHING RETURNING true""",
            envelope.event_id,
            envelope.claim_id,
            envelope.event_type,
            envelope.producer,
            envelope.occurred_at,
            json.dumps(envelope.payload),
        )
        return bool(inserted)

    async def lapse_overdue(
        self, *, as_of: datetime, at: datetime, lapsable: Sequence[str], limit: int
    ) -> list[asyncpg.Record]:
        """Lapse live claims whose documents deadline passed; each one exactly once (the
        conditional UPDATE decides, whatever number of intake processes run this)."""
        return await self.conn.fetch(
            """UPDATE claims c SET status = 'lapsed', status_changed_at = $2,
                   holders = ARRAY['none (final)'],
                   closed_reason = 'documents not supplied by ' || c.documents_due_by
               WHERE c.claim_id IN (
                   SELECT claim_id FROM claims
                   WHERE cardinality(pending_documents) > 0 AND documents_due_at < $1
                     AND status = ANY($3::text[])
                   ORDER BY documents_due_at LIMIT $4 FOR UPDATE SKIP LOCKED)
                 AND c.status = ANY($3::text[]) AND cardinality(c.pending_documents) > 0
               RETURNING c.claim_id, c.kind, c.program_id, c.pending_documents,
                         c.documents_due_by""",
            as_of,
            at,
            list(lapsable),
            limit,
        )

    async def documents_pending_by_kind(self, live: Sequence[str]) -> dict[str, int]:
        rows = await self.conn.fetch(
            """SELECT kind, count(*) AS n FROM claims
               WHERE cardinality(pending_documents) > 0 AND status = ANY($1::text[])
               GROUP BY kind""",
            list(live),
        )
        return {r["kind"]: r["n"] for r in rows}

    async def documents_deadlines(self, lapsable: Sequence[str]) -> list[asyncpg.Record]:
        """Live claims with documents outstanding and the start and length of their
        deadline, locked (the calendar recomputation moves them)."""
        return await self.conn.fetch(
            """SELECT claim_id, documents_due_from, documents_due_days, documents_due_at
               FROM claims
               WHERE cardinality(pending_documents) > 0 AND documents_due_from IS NOT NULL
                 AND status = ANY($1::text[])
               ORDER BY documents_due_at FOR UPDATE""",
            list(lapsable),
        )

    async def move_documents_deadline(self, claim_id: uuid.UUID, due_at: datetime) -> None:
        await self.update(claim_id, documents_due_at=due_at, documents_due_by=due_at.date())
