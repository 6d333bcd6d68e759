"""Routes for tax window staff. Thin: parse, build a command, call the use case (in a
unit of work, under the request's Idempotency-Key), or read a view."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.intake import views
from services.intake.domain.commands import (
    RegisterClaim,
    RegisterSubsidy,
    RegisterVatRefund,
    SupplyDocument,
    WithdrawClaim,
)
from services.intake.domain.model import ClaimStatus
from services.intake.domain.rules import Violation
from services.intake.entrypoints.examples import CLAIM_EXAMPLES, set_claim_examples
from services.intake.entrypoints.schemas import (
    REQUEST_MODELS,
    ClaimCreated,
    ClaimPage,
    ClaimView,
    ClaimWithdrawn,
    DocumentRecorded,
    DocumentSupplied,
    EnterpriseView,
    Problem,
    PublicStatus,
    StatusQuery,
    SubsidyRequest,
    VatRefundRequest,
    WithdrawalRequest,
    claim_request_schema,
)
from services.intake.service_layer import documents, registration, withdrawal
from services.intake.service_layer.policy import IntakePolicy
from services.intake.service_layer.refusals import invalid
from shared import idempotency
from shared.audit.history import ClaimAudit
from shared.auth.scope import ClaimsReadDesks
from shared.http_deps import ConnectionDep, RuntimeDep, UnitOfWorkFactoryDep
from shared.identity import Caller, CallerDep
from shared.money import fen_to_yuan, yuan_to_fen
from shared.problems import NotFound, cap_errors
from shared.programs import Catalogue
from shared.unit_of_work import UnitOfWork
from shared.validation import Offset

__all__ = ["router", "set_claim_examples"]

router = APIRouter(tags=["claims"])


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
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


async def _policy(runtime: RuntimeDep) -> IntakePolicy:
    policy: IntakePolicy = runtime.extras["policy"]
    return policy


PolicyDep = Annotated[IntakePolicy, Depends(_policy)]


Idempotent = Callable[[Any, idempotency.UnitOfWorkWork], Awaitable[JSONResponse]]
"""Runs a POST's work (given the request body it fingerprints) in a unit of work under
its Idempotency-Key (shared/idempotency.py): a repeat gets the first answer."""


async def _idempotent(
    request: Request,
    runtime: RuntimeDep,
    uows: UnitOfWorkFactoryDep,
    idempotency_key: IdempotencyKey = None,
) -> Idempotent:
    async def run(raw: Any, work: idempotency.UnitOfWorkWork) -> JSONResponse:
        answer = await idempotency.respond_in_unit_of_work(
            uows,
            runtime.db,
            work,
            idempotency_key=idempotency_key,
            fingerprint=idempotency.request_hash(request.method, request.url.path, raw),
        )
        return JSONResponse(answer.body, status_code=answer.status_code)

    return run


IdempotentDep = Annotated[Idempotent, Depends(_idempotent)]


def _parse_claim(raw: Any) -> VatRefundRequest | SubsidyRequest:
    """Choose the contract by ``kind`` and validate; every broken rule is listed."""
    if not isinstance(raw, dict):
        raise invalid(Violation("", "object", "the body must be a JSON object"))
    model = REQUEST_MODELS.get(str(raw.get("kind")))
    if model is None:
        kinds = ", ".join(REQUEST_MODELS)
        raise invalid(Violation("kind", "claim_kind", f"kind must be one of {kinds}"))
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "rule": e["type"], "message": e["msg"]}
            for e in exc.errors()
        ]
        raise invalid(*(Violation(**e) for e in cap_errors(errors))) from None


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
                    "examples": CLAIM_EXAMPLES,
                }
            },
        }
    },
)
async def register_claim(
    request: Request, caller: CallerDep, policy: PolicyDep, idempotent: IdempotentDep
) -> JSONResponse:
    try:
        raw = await request.json()
    except (ValueError, UnicodeDecodeError):
        raw = None

    async def work(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
        done = await registration.register_claim(uow, _command(_parse_claim(raw), caller), policy)
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

    return await idempotent(raw, work)


@router.post("/claims/{claim_id}/documents", response_model=DocumentRecorded, responses=ERRORS)
async def supply_document(
    claim_id: uuid.UUID,
    body: DocumentSupplied,
    caller: CallerDep,
    policy: PolicyDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    """Record a promised (容缺) document the enterprise has now supplied."""
    cmd = SupplyDocument(
        claim_id=claim_id, document_id=body.document_id, recorded_by=caller.user_id
    )

    async def work(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
        return 200, await documents.supply_document(uow, cmd, policy)

    return await idempotent(body.model_dump(), work)


@router.post("/claims/{claim_id}/withdraw", response_model=ClaimWithdrawn, responses=ERRORS)
async def withdraw_claim(
    claim_id: uuid.UUID,
    body: WithdrawalRequest,
    caller: CallerDep,
    policy: PolicyDep,
    idempotent: IdempotentDep,
) -> JSONResponse:
    """Withdraw at the enterprise's request, before payout starts."""
    cmd = WithdrawClaim(claim_id=claim_id, reason=body.reason, withdrawn_by=caller.user_id)

    async def work(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
        return 200, await withdrawal.withdraw_claim(uow, cmd, policy)

    return await idempotent(body.model_dump(), work)


# --- the tracker: what the window answers questions from -------------------------------


@router.get("/claims/{claim_id}", response_model=ClaimView, responses={404: {"model": Problem}})
async def get_claim(
    claim_id: uuid.UUID, conn: ConnectionDep, uows: UnitOfWorkFactoryDep, desks: ClaimsReadDesks
) -> ClaimView:
    """The claim's tracker: status, holders, documents, timeline. A department reviewer
    reads it only when review put it before their department (403 department_scope, the
    same answer as for a claim that does not exist)."""
    found = await views.claim(conn, claim_id, now=uows.now(), desks=desks)
    if found is None:
        raise NotFound(f"no claim {claim_id}")
    return found


@router.post(
    "/public/status",
    response_model=PublicStatus,
    responses={404: {"model": Problem}},
    tags=["public"],
)
async def public_status(
    query: StatusQuery, conn: ConnectionDep, uows: UnitOfWorkFactoryDep
) -> PublicStatus:
    """The enterprise's own status lookup (进度查询), open without a token: it needs the
    claim number of the receipt (a random UUID) *and* the enterprise's USCC. One answer
    for "no such claim" and "not this enterprise's claim", so the endpoint does not tell
    whether a claim number exists; the console in front of it limits the rate."""
    # No department scope: the enterprise proves it is asking about its own claim.
    found = await views.claim(conn, query.claim_id, now=uows.now(), desks=None)
    if found is None or found.uscc != query.uscc.upper():
        raise NotFound("no claim with this number for this enterprise", field="claim_id")
    return PublicStatus(
        status=found.status,
        holders=found.holders,
        pending_documents=found.pending_documents,
        documents_due_by=found.documents_due_by,
        step_due_at=found.step_due_at,
        paid=found.status == ClaimStatus.PAID,
    )


@router.get("/claims", response_model=ClaimPage)
async def list_claims(
    conn: ConnectionDep,
    uows: UnitOfWorkFactoryDep,
    desks: ClaimsReadDesks,
    uscc: Annotated[str | None, Query(min_length=18, max_length=18)] = None,
    status: Annotated[ClaimStatus | None, Query(description="any status the tracker shows")] = None,
    kind: Literal["vat_refund", "subsidy"] | None = None,
    program_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> ClaimPage:
    """Claims, newest first; a department reviewer's list holds the claims on their
    department's desk only."""
    return await views.claims(
        conn,
        uscc=uscc,
        status=status,
        kind=kind,
        program_id=program_id,
        desks=desks,
        limit=limit,
        offset=offset,
        now=uows.now(),
    )


@router.get("/enterprises/{uscc}/claims", response_model=EnterpriseView)
async def enterprise_view(
    uscc: str, conn: ConnectionDep, uows: UnitOfWorkFactoryDep, desks: ClaimsReadDesks
) -> EnterpriseView:
    """Every claim of one enterprise, newest first, with counts per status (a department
    reviewer: those on their department's desk)."""
    return await views.enterprise(conn, uscc, now=uows.now(), desks=desks)


@router.get("/programs", tags=["reference"], response_model=Catalogue)
async def programs(policy: PolicyDep) -> JSONResponse:
    """Claim kinds and subsidy programs: checklists, caps, windows, departments."""
    return JSONResponse(policy.catalogue.model_dump(mode="json"))


@router.get("/claims/{claim_id}/audit", response_model=ClaimAudit, tags=["audit"])
async def claim_audit(claim_id: uuid.UUID, conn: ConnectionDep, runtime: RuntimeDep) -> ClaimAudit:
    """Auditors: the claim's hash-chained history in this service, every entry verified
    on the server now (hash, link, head, signed seals, state rows against the chain),
    with each break named (docs/audit.md). 404 when the service never saw the claim."""
    return await views.claim_audit(conn, runtime.settings, claim_id)
