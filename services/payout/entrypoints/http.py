"""Routes for finance staff."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from shared.money import fen_to_yuan
from shared.service_app import runtime_of

router = APIRouter(tags=["payouts"])


def _view(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["amount"] = fen_to_yuan(out.pop("amount_fen"))
    out["approved_amount"] = fen_to_yuan(out.pop("approved_amount_fen"))
    out["payee"] = json.loads(out["payee"])
    return out


@router.get("/payouts")
async def list_payouts(
    request: Request,
    claim_id: uuid.UUID | None = None,
    status: Annotated[str | None, Query(pattern="^(requested|sent|paid|failed)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    async with runtime_of(request).db.acquire() as conn:
        rows = await conn.fetch(
            """SELECT * FROM payouts
               WHERE ($1::uuid IS NULL OR claim_id = $1) AND ($2::text IS NULL OR status = $2)
               ORDER BY requested_at DESC LIMIT $3""",
            claim_id,
            status,
            limit,
        )
    return [_view(r) for r in rows]
