"""Routes for tax window staff. Thin: parse, build a command, call the handler."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.intake.adapters.repository import ClaimRepository
from services.intake.config import IntakeSettings
from services.intake.domain.commands import (
    RegisterClaim,
    RegisterSubsidy,
    RegisterVatRefund,
    SupplyDocument,
    WithdrawClaim,
)
from services.intake.domain.model import (
    FINAL,
    FINANCE_ACTS,
    HOLDER,
    IN_REVIEW_STATUSES,
    ClaimStatus,
    Violation,
    beijing_today,
    local_period,
)
from services.intake.entrypoints.schemas import (
    REQUEST_MODELS,
    ClaimCreated,
    ClaimPage,
    ClaimSummary,
    ClaimView,
    DocumentSupplied,
    DocumentView,
    EnterpriseView,
    Problem,
    SubsidyRequest,
    TimelineEntry,
    VatRefundRequest,
    WithdrawalRequest,
    claim_request_schema,
)
from services.intake.metrics import AMOUNT_REQUESTED, CLAIMS_OUTCOME, CLAIMS_RECEIVED, program_label
from services.intake.service_layer import handlers
from services.intake.service_layer.handlers import IntakePolicy, Invalid, Response
from shared.db import DbConnection
from shared.identity import Caller, current_caller
from shared.money import fen_to_yuan, yuan_to_fen
from shared.problems import cap_errors
from shared.programs import load_catalogue
from shared.service_app import runtime_of
from shared.validation import Offset

router = APIRouter(tags=["claims"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Repeat a POST safely: the same key and body return the first response",
    ),
]
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem},
    409: {"model": Problem},
    422: {"model": Problem},
}


def policy_of(request: Request) -> IntakePolicy:
    settings = runtime_of(request).settings
    assert isinstance(settings, IntakeSettings)
    return IntakePolicy(
        policy_year=settings.refund_policy_year,
        review_due_working_days=settings.review_due_working_days,
        documents_due_working_days=settings.documents_due_working_days,
        catalogue=load_catalogue(),
        finance_due_working_days=settings.finance_due_working_days,
    )


def _parse_claim(raw: Any) -> VatRefundRequest | SubsidyRequest:
    """Choose the contract by ``kind`` and validate; every broken rule is listed."""
    if not isinstance(raw, dict):
        raise Invalid(
            "validation failed",
            [Violation("", "object", "the body must be a JSON object")],
        )
    model = REQUEST_MODELS.get(str(raw.get("kind")))
    if model is None:
        raise Invalid(
            "validation failed",
            [Violation("kind", "claim_kind", f"kind must be one of {', '.join(REQUEST_MODELS)}")],
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise Invalid(
            "validation failed",
            [
                Violation(e["field"], e["rule"], e["message"])
                for e in cap_errors(
                    [
                        {
                            "field": ".".join(str(p) for p in err["loc"]),
                            "rule": err["type"],
                            "message": err["msg"],
                        }
                        for err in exc.errors()
                    ]
                )
            ],
        ) from None


def _command(body: VatRefundRequest | SubsidyRequest, caller: Caller) -> RegisterClaim:
    common: dict[str, Any] = {
        "uscc": body.uscc,
        "enterprise_name": body.enterprise_name,
        "requested_amount_fen": yuan_to_fen(body.requested_amount),
        "payee": body.bank_account,
        "registered_by": caller.user_id,
        "documents_supplied": tuple(body.documents_supplied),
        "documents_promised": tuple(body.documents_promised),
    }
    if isinstance(body, VatRefundRequest):
        return RegisterVatRefund(
            **common,
            tax_period=body.tax_period,
            end_credit_fen=yuan_to_fen(body.end_credit_balance),
            base_credit_fen=yuan_to_fen(body.base_credit_balance),
            input_ratio=body.input_composition_ratio,
            tax_credit_rating=body.tax_credit_rating,
        )
    return RegisterSubsidy(**common, program_id=body.program_id, description=body.description)


def _answer(response: Response) -> JSONResponse:
    return JSONResponse(response.body, status_code=response.status_code)


async def _respond(request: Request, raw: Any, key: str | None, work: handlers.Work) -> Response:
    fingerprint = handlers.request_hash(request.method, request.url.path, raw)
    async with runtime_of(request).db.acquire() as conn:
        try:
            return await handlers.respond(conn, work, idempotency_key=key, fingerprint=fingerprint)
        except handlers.Refusal as refusal:
            return Response(refusal.status_code, refusal.body())


def _claim_examples() -> dict[str, dict[str, Any]]:
    """Claims that pass every rule when the service starts (a tax period of last month,
    programs open today), so that a client or a fuzzer can build a valid claim from the
    OpenAPI alone. The USCCs are valid codes of no real enterprise."""
    catalogue = load_catalogue()
    now = datetime.now(UTC)
    year, month = map(int, local_period(now).split("-"))
    last_month = f"{year - (month == 1):04d}-{(month - 2) % 12 + 1:02d}"
    account = {"bank_name": "中国工商银行自贡分行", "account_number": "6222020000123456789"}
    examples: dict[str, dict[str, Any]] = {
        "vat_refund": {
            "summary": "A VAT credit refund, every checklist document handed in",
            "value": {
                "kind": "vat_refund",
                "uscc": "915103023AGYGLUY4X",
                "enterprise_name": "自贡长盈精密科技有限公司",
                "tax_period": last_month,
                "end_credit_balance": "800000.00",
                "base_credit_balance": "0.00",
                "input_composition_ratio": "0.9000",
                "tax_credit_rating": "A",
                "requested_amount": "720000.00",
                "bank_account": {**account, "account_name": "自贡长盈精密科技有限公司"},
                "documents_supplied": [d.id for d in catalogue.vat_refund.documents],
                "documents_promised": [],
            },
        }
    }
    today = beijing_today(now)
    for program in catalogue.programs:
        if program.opens <= today <= program.closes:
            examples[f"subsidy_{program.id}"] = {
                "summary": f"A subsidy claim under {program.id}",
                "value": {
                    "kind": "subsidy",
                    "program_id": program.id,
                    "uscc": "91510311W7WKKHDR5J",
                    "enterprise_name": "川南兴储新能源股份有限公司",
                    "requested_amount": str(fen_to_yuan(program.cap_fen // 2)),
                    "description": "申请补贴",
                    "bank_account": {**account, "account_name": "川南兴储新能源股份有限公司"},
                    "documents_supplied": [d.id for d in program.documents],
                    "documents_promised": [],
                },
            }
    return examples


@router.post(
    "/claims",
    status_code=201,
    response_model=ClaimCreated,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "A VAT credit refund (kind=vat_refund: VatRefundRequest) or a "
            "subsidy claim under a program (kind=subsidy: SubsidyRequest)",
            "content": {
                "application/json": {
                    "schema": claim_request_schema(),
                    "examples": _claim_examples(),
                }
            },
        }
    },
)
async def register_claim(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    try:
        raw = await request.json()
    except (ValueError, UnicodeDecodeError):
        raw = None
    policy = policy_of(request)

    async def work(conn: DbConnection) -> tuple[int, dict[str, Any]]:
        body = _parse_claim(raw)
        done = await handlers.register_claim(conn, _command(body, caller), policy)
        created = ClaimCreated(
            claim_id=done.claim_id,
            kind=done.kind,
            program_id=done.program_id,
            status=done.status.value,
            eligible_amount=fen_to_yuan(done.eligible_amount_fen),
            requested_amount=fen_to_yuan(done.requested_amount_fen),
            amount_note=done.amount_note,
            pending_documents=done.pending_documents,
            documents_due_by=done.documents_due_by,
        )
        return 201, created.model_dump(mode="json")

    response = await _respond(request, raw, idempotency_key, work)
    if response.status_code == 201 and not response.replayed:
        kind, program = response.body["kind"], program_label(response.body["program_id"])
        CLAIMS_RECEIVED.labels(kind, program).inc()
        AMOUNT_REQUESTED.labels(kind, program).inc(float(response.body["requested_amount"]))
    return _answer(response)


@router.post("/claims/{claim_id}/documents", responses=ERRORS)
async def supply_document(
    claim_id: uuid.UUID,
    body: DocumentSupplied,
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Record a promised (容缺) document the enterprise has now supplied."""
    cmd = SupplyDocument(
        claim_id=claim_id, document_id=body.document_id, recorded_by=caller.user_id
    )

    async def work(conn: DbConnection) -> tuple[int, dict[str, Any]]:
        return 200, await handlers.supply_document(conn, cmd)

    return _answer(await _respond(request, body.model_dump(), idempotency_key, work))


@router.post("/claims/{claim_id}/withdraw", responses=ERRORS)
async def withdraw_claim(
    claim_id: uuid.UUID,
    body: WithdrawalRequest,
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Withdraw at the enterprise's request, before payout starts."""
    cmd = WithdrawClaim(claim_id=claim_id, reason=body.reason, withdrawn_by=caller.user_id)

    async def work(conn: DbConnection) -> tuple[int, dict[str, Any]]:
        return 200, await handlers.withdraw_claim(conn, cmd)

    response = await _respond(request, body.model_dump(), idempotency_key, work)
    if response.status_code == 200 and not response.replayed:
        async with runtime_of(request).db.acquire() as conn:
            row = await ClaimRepository(conn).get(claim_id)
        if row is not None:
            CLAIMS_OUTCOME.labels(row["kind"], program_label(row["program_id"]), "withdrawn").inc()
    return _answer(response)


# --- the tracker: what the window answers questions from -------------------------------


def _summary(row: asyncpg.Record, now: datetime) -> dict[str, Any]:
    status = ClaimStatus(row["status"])
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


@router.get("/claims/{claim_id}", response_model=ClaimView, responses={404: {"model": Problem}})
async def get_claim(claim_id: uuid.UUID, request: Request) -> ClaimView:
    async with runtime_of(request).db.acquire() as conn:
        repo = ClaimRepository(conn)
        row = await repo.get(claim_id)
        if row is None:
            raise HTTPException(404, detail=f"no claim {claim_id}")
        timeline = await repo.timeline(claim_id)
        documents = await repo.documents(claim_id)
    return ClaimView(
        **_summary(row, datetime.now(UTC)),
        documents=[DocumentView(**dict(d)) for d in documents],
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


@router.get("/claims", response_model=ClaimPage)
async def list_claims(
    request: Request,
    uscc: Annotated[str | None, Query(min_length=18, max_length=18)] = None,
    status: Annotated[ClaimStatus | None, Query(description="any status the tracker shows")] = None,
    kind: Literal["vat_refund", "subsidy"] | None = None,
    program_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> ClaimPage:
    async with runtime_of(request).db.acquire() as conn:
        rows, total = await ClaimRepository(conn).search(
            uscc=uscc,
            status=status.value if status else None,
            kind=kind,
            program_id=program_id,
            limit=limit,
            offset=offset,
        )
    now = datetime.now(UTC)
    return ClaimPage(
        items=[ClaimSummary(**_summary(r, now)) for r in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/enterprises/{uscc}/claims", response_model=EnterpriseView)
async def enterprise_view(uscc: str, request: Request) -> EnterpriseView:
    """Every claim of one enterprise, newest first, with counts per status."""
    async with runtime_of(request).db.acquire() as conn:
        rows, _ = await ClaimRepository(conn).search(
            uscc=uscc, status=None, kind=None, program_id=None, limit=500, offset=0
        )
    now = datetime.now(UTC)
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


@router.get("/programs", tags=["reference"])
async def programs() -> dict[str, Any]:
    """Claim kinds and subsidy programs: checklists, caps, windows, departments."""
    return load_catalogue().model_dump(mode="json")
