"""Routes for finance staff: funds, payouts with their hops, top-ups, account corrections,
reconciliation. Reads are open; actions need a caller of the finance or treasury
department and (money-moving ones) an Idempotency-Key. Use cases refuse with
``shared.problems`` refusals; the app turns them into the one error body."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.payout import views
from services.payout.config import PayoutSettings
from services.payout.domain.model import FINANCE_DEPARTMENTS
from services.payout.domain.statements import StatementInvalid
from services.payout.entrypoints.schemas import (
    AccountCorrection,
    ClosedOut,
    Closing,
    Decision,
    FinanceRequestOut,
    FundOut,
    HoldRelease,
    HopOut,
    PayoutDetailOut,
    PayoutOut,
    QueueEntry,
    ReportOut,
    StatementImported,
    TopUp,
    VoucherOut,
)
from services.payout.service_layer import finance, requests
from services.payout.service_layer.retry import retried_on_conflict
from shared import idempotency
from shared.audit.history import ClaimAudit
from shared.contracts.common import FINANCE_ROLES, mask_account_number
from shared.http_deps import ConnectionDep, RuntimeDep, UnitOfWorkFactoryDep
from shared.identity import Caller, CallerDep
from shared.money import yuan_to_fen
from shared.problems import Forbidden, Invalid, NotFound, Refusal, cap_errors
from shared.unit_of_work import UnitOfWork
from shared.validation import Instant, Offset

router = APIRouter(tags=["payouts"])


STATUSES = (
    "^(queued|held|requested|issuing|issued|unknown|accepted|sent|retrying|paid|failed"
    "|returned|released|withheld)$"
)

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=idempotency.HEADER,
        min_length=1,
        max_length=200,
        description="Required on POSTs that move money or close a payout: a repeat with "
        "the same key and body gets the first response and changes nothing more",
    ),
]
NEEDS_KEY: dict[int | str, dict[str, Any]] = {
    428: {"description": "Idempotency-Key header missing (field header.Idempotency-Key)"}
}

Work = Callable[[UnitOfWork], Awaitable[BaseModel]]


class KeyRequired(Refusal):
    status_code = 428


def finance_only(caller: Caller) -> None:
    if caller.department not in FINANCE_DEPARTMENTS:
        raise Forbidden(
            "finance staff only (a token whose department is finance or treasury)",
            field="token.department",
            rule="finance_only",
        )


async def idempotent(
    request: Request,
    runtime: RuntimeDep,
    uows: UnitOfWorkFactoryDep,
    key: str | None,
    body: Any,
    work: Work,
    *,
    status_code: int = 200,
    required: bool = True,
) -> Response:
    """Run ``work`` in one unit of work with the Idempotency-Key's stored answer
    (shared/idempotency.py), again after a deadlock; counters move after the commit.
    Nothing touches the database after the commit, so a failure there cannot turn a
    committed change into an error answer."""
    if key is None and required:
        raise KeyRequired(
            "Idempotency-Key header required: a repeat of this request must be recognised",
            field=f"header.{idempotency.HEADER}",
            rule="required",
        )
    fingerprint = idempotency.request_hash(request.method, request.url.path, body)

    async def stored(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
        answer = await work(uow)
        return status_code, answer.model_dump(mode="json")

    async def once() -> Response:
        answer = await idempotency.respond_in_unit_of_work(
            uows, runtime.db, stored, idempotency_key=key, fingerprint=fingerprint
        )
        return JSONResponse(answer.body, status_code=answer.status_code)

    return await retried_on_conflict(once)


@router.get("/funds", response_model=list[FundOut])
async def list_funds(conn: ConnectionDep) -> list[FundOut]:
    """Budget, reserved, committed (sent), paid (arrived), remaining, waiting claims."""
    return [FundOut.of(v) for v in await views.fund_views(conn)]


@router.get("/funds/{fund_id}/queue", response_model=list[QueueEntry])
async def fund_queue(conn: ConnectionDep, fund_id: str) -> list[QueueEntry]:
    """Claims waiting for this fund's budget, in the order they will be paid."""
    if not await views.fund_exists(conn, fund_id):
        raise NotFound(f"no fund {fund_id!r}", field="path.fund_id")
    rows = await views.fund_queue(conn, fund_id)
    return [QueueEntry.of(i, r) for i, r in enumerate(rows, start=1)]


@router.post(
    "/funds/{fund_id}/top-ups",
    response_model=FinanceRequestOut,
    status_code=202,
    responses=NEEDS_KEY,
)
async def top_up_fund(
    request: Request,
    runtime: RuntimeDep,
    uows: UnitOfWorkFactoryDep,
    fund_id: str,
    body: TopUp,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Request a top-up of a fund (dual control): 202 with the pending request; the
    budget changes only when another person approves it (``POST /finance/requests/
    {request_id}/approve``). At most ``CLAIMFLOW_TOP_UP_MAX_YUAN`` per request (422
    ``max_top_up``). Needs an Idempotency-Key: a clerk's retry never requests twice."""
    finance_only(caller)
    limits = _limits(runtime)

    async def work(uow: UnitOfWork) -> FinanceRequestOut:
        amount = yuan_to_fen(body.amount)
        row = await requests.request_top_up(
            uow, fund_id, amount, caller.user_id, body.reason, limits
        )
        return FinanceRequestOut.of(row)

    payload = body.model_dump(mode="json")
    return await idempotent(request, runtime, uows, idempotency_key, payload, work, status_code=202)


def _limits(runtime: RuntimeDep) -> requests.Limits:
    settings = runtime.settings
    assert isinstance(settings, PayoutSettings)
    return requests.Limits.of(settings.top_up_max_yuan, settings.top_up_supervisor_from_yuan)


@router.get("/finance/requests", response_model=list[FinanceRequestOut])
async def list_finance_requests(
    conn: ConnectionDep,
    status: Annotated[str | None, Query(pattern="^(pending|approved|rejected)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[FinanceRequestOut]:
    """Top-up and correction requests, oldest first (``status=pending``: the worklist)."""
    return [FinanceRequestOut.of(r) for r in await requests.listing(conn, status, limit)]


async def _decide(
    request: Request,
    runtime: RuntimeDep,
    uows: UnitOfWorkFactoryDep,
    request_id: uuid.UUID,
    body: Decision | None,
    caller: Caller,
    idempotency_key: str | None,
    *,
    approve: bool,
) -> Response:
    finance_only(caller)
    limits = _limits(runtime)
    permissions = caller.verified.permissions if caller.verified else frozenset()
    decider = requests.Decider(caller.user_id, permissions)
    comment = body.comment if body else None

    async def work(uow: UnitOfWork) -> FinanceRequestOut:
        decided = await requests.decide(
            uow, request_id, decider, approve=approve, comment=comment, limits=limits
        )
        return FinanceRequestOut.of(decided.request, decided.applied)

    payload = body.model_dump(mode="json") if body else {}
    return await idempotent(request, runtime, uows, idempotency_key, payload, work)


@router.post(
    "/finance/requests/{request_id}/approve",
    response_model=FinanceRequestOut,
    responses=NEEDS_KEY,
)
async def approve_finance_request(
    request: Request,
    runtime: RuntimeDep,
    uows: UnitOfWorkFactoryDep,
    request_id: uuid.UUID,
    caller: CallerDep,
    body: Decision | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Approve another person's pending request and apply it in the same transaction
    (403 ``four_eyes`` for the requester; 403 ``supervisor_required`` for a top-up above
    ``CLAIMFLOW_TOP_UP_SUPERVISOR_FROM_YUAN`` without ``funds.top_up``). Needs an
    Idempotency-Key."""
    return await _decide(
        request, runtime, uows, request_id, body, caller, idempotency_key, approve=True
    )


@router.post(
    "/finance/requests/{request_id}/reject",
    response_model=FinanceRequestOut,
    responses=NEEDS_KEY,
)
async def reject_finance_request(
    request: Request,
    runtime: RuntimeDep,
    uows: UnitOfWorkFactoryDep,
    request_id: uuid.UUID,
    caller: CallerDep,
    body: Decision | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Reject another person's pending request: nothing changes but the request
    (audited). Needs an Idempotency-Key."""
    return await _decide(
        request, runtime, uows, request_id, body, caller, idempotency_key, approve=False
    )


@router.get("/payouts", response_model=list[PayoutOut])
async def list_payouts(
    conn: ConnectionDep,
    caller: CallerDep,
    response: Response,
    claim_id: uuid.UUID | None = None,
    status: Annotated[str | None, Query(pattern=STATUSES)] = None,
    fund: str | None = None,
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Instant | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[PayoutOut]:
    """Payouts, newest approval first; ``from``/``to`` bound the approval time. The total
    is in the X-Total-Count header."""
    where = views.PayoutFilter(claim_id, status, fund, from_, to)
    total, rows = await views.payouts(conn, where, limit, offset)
    response.headers["X-Total-Count"] = str(total)
    return [_masked_for(caller, PayoutOut.of(r)) for r in rows]


@router.get("/payouts/{payout_id}", response_model=PayoutDetailOut)
async def get_payout(
    conn: ConnectionDep, caller: CallerDep, payout_id: uuid.UUID
) -> PayoutDetailOut:
    """A payout with its vouchers (one per issue) and every hop with its time. Bank
    account numbers in full for finance roles only (``****1234`` for the auditor)."""
    detail = await views.payout_detail(conn, payout_id)
    if detail is None:
        raise NotFound(f"no payout {payout_id}", field="path.payout_id")
    vouchers = [VoucherOut.of(v) for v in detail.vouchers]
    if not _sees_accounts(caller):
        vouchers = [
            v.model_copy(update={"account_number": mask_account_number(v.account_number)})
            for v in vouchers
        ]
    return PayoutDetailOut(
        **_masked_for(caller, PayoutOut.of(detail.payout)).model_dump(),
        vouchers=vouchers,
        hops=[HopOut.model_validate(dict(h)) for h in detail.hops],
    )


def _sees_accounts(caller: Caller) -> bool:
    return caller.verified is not None and bool(caller.verified.roles & FINANCE_ROLES)


def _masked_for(caller: Caller, payout: PayoutOut) -> PayoutOut:
    """The payee's account number in full for finance roles; masked for anyone else."""
    if _sees_accounts(caller):
        return payout
    payee = {
        **payout.payee,
        "account_number": mask_account_number(payout.payee.get("account_number")),
    }
    return payout.model_copy(update={"payee": payee})


@router.post(
    "/payouts/{payout_id}/account-correction",
    response_model=FinanceRequestOut,
    status_code=202,
    responses=NEEDS_KEY,
)
async def correct_account(
    request: Request,
    runtime: RuntimeDep,
    uows: UnitOfWorkFactoryDep,
    payout_id: uuid.UUID,
    body: AccountCorrection,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Request the correction of the payee of a returned or permanently failed payout
    (dual control): 202 with the pending request. When another person approves it the
    payout is issued again: a returned one at once (retrying), a failed one reserved
    again (requested) or queued. Needs an Idempotency-Key."""
    finance_only(caller)

    async def work(uow: UnitOfWork) -> FinanceRequestOut:
        row = await requests.request_correction(
            uow, payout_id, body.payee, caller.user_id, body.reason
        )
        return FinanceRequestOut.of(row)

    payload = body.model_dump(mode="json")
    return await idempotent(request, runtime, uows, idempotency_key, payload, work, status_code=202)


@router.post(
    "/payouts/{payout_id}/hold-release",
    response_model=FinanceRequestOut,
    status_code=202,
    responses=NEEDS_KEY,
)
async def request_hold_release(
    request: Request,
    runtime: RuntimeDep,
    uows: UnitOfWorkFactoryDep,
    payout_id: uuid.UUID,
    body: HoldRelease,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Request the release (``release``: pay it) or the cancellation (``cancel``) of a
    withheld payout (dual control): 202 with the pending request. Another finance person's
    approval applies it: a release checks again what intake received (the payee becomes
    ``payee`` if given, else intake's registered account; the amount must be within the
    eligible amount and the enterprise's cap, else 409 naming the rule), then reserves or
    queues it; a cancel releases it with the reason. Needs an Idempotency-Key."""
    finance_only(caller)

    async def work(uow: UnitOfWork) -> FinanceRequestOut:
        row = await requests.request_hold_decision(
            uow, payout_id, body.action, body.payee, caller.user_id, body.reason
        )
        return FinanceRequestOut.of(row)

    payload = body.model_dump(mode="json")
    return await idempotent(request, runtime, uows, idempotency_key, payload, work, status_code=202)


@router.post("/payouts/{payout_id}/close", response_model=ClosedOut, responses=NEEDS_KEY)
async def close_payout(
    request: Request,
    runtime: RuntimeDep,
    uows: UnitOfWorkFactoryDep,
    payout_id: uuid.UUID,
    body: Closing,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Close a returned or permanently failed payout with a reason (audited): nothing
    will be paid; its commitment goes back to the fund; ``payout.released`` carries the
    reason as "closed by finance: …". Needs an Idempotency-Key."""
    finance_only(caller)

    async def work(uow: UnitOfWork) -> ClosedOut:
        row = await finance.close_payout(uow, payout_id, caller.user_id, body.reason)
        return ClosedOut(
            payout_id=str(payout_id), status=row["status"], release_reason=row["release_reason"]
        )

    payload = body.model_dump(mode="json")
    return await idempotent(request, runtime, uows, idempotency_key, payload, work)


class InvalidStatement(Invalid):
    """422 with one entry per broken line and field."""

    def __init__(self, invalid: StatementInvalid) -> None:
        super().__init__(str(invalid), field="body", rule="statement")
        self.errors = invalid.errors

    def body(self) -> dict[str, Any]:
        errors = [
            {"field": f"line {e.line}.{e.field}", "rule": "statement", "message": e.message}
            for e in self.errors
        ]
        return {"detail": "statement invalid", "errors": cap_errors(errors)}


@router.post(
    "/reconciliation/statements",
    response_model=StatementImported,
    status_code=201,
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def import_bank_statement(
    request: Request,
    runtime: RuntimeDep,
    uows: UnitOfWorkFactoryDep,
    caller: CallerDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Import a bank statement (CSV body, UTF-8, format in docs/payout.md) and reconcile
    the dates it covers. Repeating an import is harmless (lines are keyed by the bank's
    reference); with an Idempotency-Key a repeat also gets the first answer."""
    finance_only(caller)
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("the statement is not UTF-8 text", field="body", rule="utf8") from None

    async def work(uow: UnitOfWork) -> StatementImported:
        try:
            statement_id, lines, duplicates, reports = await finance.import_statement(
                uow, text, caller.user_id
            )
        except StatementInvalid as exc:
            raise InvalidStatement(exc) from None
        return StatementImported(
            statement_id=str(statement_id),
            lines_imported=lines,
            duplicates_skipped=duplicates,
            reports=[ReportOut.of(r) for r in reports],
        )

    return await idempotent(
        request, runtime, uows, idempotency_key, text, work, status_code=201, required=False
    )


@router.get("/reconciliation/{day}", response_model=ReportOut)
async def reconciliation(conn: ConnectionDep, day: date) -> ReportOut:
    """The reconciliation report of one value date (Beijing time)."""
    return ReportOut.of(await views.report_for(conn, day))


@router.get("/claims/{claim_id}/audit", response_model=ClaimAudit, tags=["audit"])
async def claim_audit(claim_id: uuid.UUID, conn: ConnectionDep, runtime: RuntimeDep) -> ClaimAudit:
    """Auditors: the claim's hash-chained history in this service, every entry verified
    on the server now (hash, link, head, signed seals, state rows against the chain),
    with each break named (docs/audit.md). 404 when the service never saw the claim."""
    return await views.claim_audit(conn, runtime.settings, claim_id)
