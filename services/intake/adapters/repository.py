"""SQL for intake's own schema."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from shared.contracts import EventEnvelope
from shared.db import DbConnection


class ClaimRepository:
    def __init__(self, conn: DbConnection) -> None:
        self.conn = conn

    async def add(self, row: dict[str, Any]) -> None:
        await self.conn.execute(
            """INSERT INTO claims (claim_id, kind, uscc, enterprise_name, tax_period,
                   requested_amount_fen, eligible_amount_fen, amount_note, details, payee,
                   registered_by, received_at, status, status_changed_at)
               VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9::jsonb,$10::jsonb,$11,$12,$13,$12)""",
            row["claim_id"],
            row["kind"],
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
        )

    async def find_live(self, uscc: str, kind: str, tax_period: str) -> uuid.UUID | None:
        found: uuid.UUID | None = await self.conn.fetchval(
            """SELECT claim_id FROM claims WHERE uscc = $1 AND kind = $2 AND tax_period = $3
                 AND status NOT IN ('rejected', 'withdrawn', 'lapsed')""",
            uscc,
            kind,
            tax_period,
        )
        return found

    async def get(self, claim_id: uuid.UUID) -> asyncpg.Record | None:
        return await self.conn.fetchrow("SELECT * FROM claims WHERE claim_id = $1", claim_id)

    async def timeline(self, claim_id: uuid.UUID) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            """SELECT event_id, event_type, producer, occurred_at, payload
               FROM claim_timeline WHERE claim_id = $1 ORDER BY occurred_at, recorded_at""",
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

    async def advance_status(self, claim_id: uuid.UUID, status: str, occurred_at: datetime) -> bool:
        """Move to ``status`` unless the claim is final or already moved by a later event.

        Events from different services arrive on different topics in no fixed order;
        the time they occurred decides, and a final status is never left.
        """
        result = await self.conn.execute(
            """UPDATE claims SET status = $2, status_changed_at = $3
               WHERE claim_id = $1 AND status NOT IN ('rejected', 'paid', 'withdrawn', 'lapsed')
                 AND status_changed_at <= $3""",
            claim_id,
            status,
            occurred_at,
        )
        return result.endswith(" 1")
