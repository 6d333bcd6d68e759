"""Routes for tax window staff. Thin: parse, build a command, call the handler."""

from __future__ import annotations

import json
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from services.intake.adapters.repository import ClaimRepository
from services.intake.config import IntakeSettings
from services.intake.domain.commands import RegisterVatRefund
from services.intake.domain.model import HOLDER, ClaimStatus
from services.intake.entrypoints.schemas import (
    ClaimCreated,
    ClaimView,
    Problem,
    TimelineEntry,
    VatRefundRequest,
)
from services.intake.service_layer import handlers
from shared.identity import Caller, current_caller
from shared.money import fen_to_yuan, yuan_to_fen
from shared.service_app import runtime_of

router = APIRouter(tags=["claims"])


@router.post(
    "/claims",
    status_code=201,
    response_model=ClaimCreated,
    responses={409: {"model": Problem}, 422: {"model": Problem}},
)
async def register_claim(
    body: VatRefundRequest,
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
) -> ClaimCreated | JSONResponse:
    runtime = runtime_of(request)
    settings = runtime.settings
    assert isinstance(settings, IntakeSettings)
    cmd = RegisterVatRefund(
        uscc=body.uscc,
        enterprise_name=body.enterprise_name,
        tax_period=body.tax_period,
        end_credit_fen=yuan_to_fen(body.end_credit_balance),
        base_credit_fen=yuan_to_fen(body.base_credit_balance),
        input_ratio=body.input_composition_ratio,
        tax_credit_rating=body.tax_credit_rating,
        requested_amount_fen=yuan_to_fen(body.requested_amount),
        payee=body.bank_account,
        registered_by=caller.user_id,
    )
    async with runtime.db.acquire() as conn:
        try:
            claim_id = await handlers.register_vat_refund(
                conn, cmd, policy_year=settings.refund_policy_year
            )
        except handlers.DuplicateClaim as dup:
            return JSONResponse(
                status_code=409,
                content={
                    "detail": "the enterprise already has a live claim of this kind and period",
                    "errors": [
                        {
                            "field": "tax_period",
                            "rule": "one_live_claim_per_period",
                            "message": str(dup),
                        }
                    ],
                    "existing_claim_id": str(dup.existing),
                },
            )
        row = await ClaimRepository(conn).get(claim_id)
    assert row is not None
    return ClaimCreated(
        claim_id=claim_id,
        status=row["status"],
        eligible_amount=fen_to_yuan(row["eligible_amount_fen"]),
        requested_amount=fen_to_yuan(row["requested_amount_fen"]),
        amount_note=row["amount_note"],
    )


@router.get("/claims/{claim_id}", response_model=ClaimView, responses={404: {"model": Problem}})
async def get_claim(claim_id: uuid.UUID, request: Request) -> ClaimView:
    async with runtime_of(request).db.acquire() as conn:
        repo = ClaimRepository(conn)
        row = await repo.get(claim_id)
        if row is None:
            raise HTTPException(404, detail=f"no claim {claim_id}")
        timeline = await repo.timeline(claim_id)
    status = ClaimStatus(row["status"])
    return ClaimView(
        claim_id=row["claim_id"],
        kind=row["kind"],
        uscc=row["uscc"],
        enterprise_name=row["enterprise_name"],
        tax_period=row["tax_period"],
        status=status.value,
        holder=HOLDER[status],
        requested_amount=fen_to_yuan(row["requested_amount_fen"]),
        eligible_amount=fen_to_yuan(row["eligible_amount_fen"]),
        amount_note=row["amount_note"],
        received_at=row["received_at"],
        status_changed_at=row["status_changed_at"],
        timeline=[
            TimelineEntry(
                event_id=t["event_id"],
                event_type=t["event_type"],
                producer=t["producer"],
                occurred_at=t["occurred_at"],
                payload=json.loads(t["payload"]),
            )
            for t in timeline
        ],
    )
