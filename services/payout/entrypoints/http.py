"""Routes for finance staff: funds, payouts with their hops, top-ups, account corrections,
reconciliation. Actions need a caller of the finance or treasury department."""

from __future__ import annotations

import json
import uuid
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from services.payout.domain.model import StatementInvalid
from services.payout.service_layer import handlers
from services.payout.service_layer.reconciliation import import_statement, report_for
from shared.identity import Caller, current_caller
from shared.money import PositiveYuan, fen_to_yuan, optional_fen_to_yuan, yuan_to_fen
from shared.problems import cap_errors, problem
from shared.service_app import runtime_of
from shared.validation import BankAccountInput, Instant, Offset, VisibleText

router = APIRouter(tags=["payouts"])

FINANCE_DEPARTMENTS = frozenset({"finance", "treasury"})
STATUSES = "^(queued|held|requested|issued|accepted|sent|retrying|paid|failed|returned|released)$"


def _forbidden(caller: Caller) -> JSONResponse | None:
    if caller.department in FINANCE_DEPARTMENTS:
        return None
    return problem(
        403,
        "finance staff only (X-Department: finance or treasury)",
        "header.X-Department",
        "finance_only",
    )


def _yuan(fen: int | None) -> str | None:
    amount = optional_fen_to_yuan(fen)
    return None if amount is None else str(amount)


def _view(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["amount"] = fen_to_yuan(out.pop("amount_fen"))
    out["approved_amount"] = fen_to_yuan(out.pop("approved_amount_fen"))
    out["paid_amount"] = fen_to_yuan(out.pop("paid_amount_fen"))
    out["payee"] = json.loads(out["payee"])
    end = out.get("paid_at")
    out["time_to_payment_seconds"] = (
        (end - out["claim_received_at"]).total_seconds() if end is not None else None
    )
    return out


def _fund_view(v: dict[str, Any]) -> dict[str, Any]:
    return {
        "fund_id": v["fund_id"],
        "claim_kind": v["claim_kind"],
        "name": v["name"],
        "budget": _yuan(v["budget_fen"]),
        "reserved": _yuan(v["reserved_fen"]),
        "committed": _yuan(v["committed_fen"]),
        "paid": _yuan(v["paid_fen"]),
        "remaining": _yuan(v["remaining_fen"]),
        "waiting_claims": v["waiting_claims"],
        "waiting_amount": _yuan(v["waiting_fen"]),
        "waiting": {
            reason: {"claims": w["claims"], "amount": _yuan(w["amount_fen"])}
            for reason, w in v["waiting"].items()
        },
        "payouts": {
            status: {"claims": w["claims"], "amount": _yuan(w["amount_fen"])}
            for status, w in v["payouts"].items()
        },
    }


@router.get("/funds")
async def list_funds(request: Request) -> list[dict[str, Any]]:
    """Budget, reserved, committed (sent), paid (arrived), remaining, waiting claims."""
    async with runtime_of(request).db.acquire() as conn:
        views = await handlers.refresh_gauges(conn)
    return [_fund_view(v) for v in views]


@router.get("/funds/{fund_id}/queue")
async def fund_queue(request: Request, fund_id: str) -> Response:
    """Claims waiting for this fund's budget, in the order they will be paid."""
    async with runtime_of(request).db.acquire() as conn:
        if not await conn.fetchval("SELECT true FROM funds WHERE fund_id = $1", fund_id):
            return problem(404, f"no fund {fund_id!r}", "path.fund_id", "exists")
        rows = await conn.fetch(
            """SELECT payout_id, claim_id, amount_fen, queued_at FROM payouts
               WHERE fund_id = $1 AND status = 'queued' ORDER BY queue_seq""",
            fund_id,
        )
    return JSONResponse(
        [
            {
                "position": i,
                "payout_id": str(r["payout_id"]),
                "claim_id": str(r["claim_id"]),
                "amount": _yuan(r["amount_fen"]),
                "queued_at": r["queued_at"].isoformat(),
            }
            for i, r in enumerate(rows, start=1)
        ]
    )


class TopUp(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: PositiveYuan
    reason: VisibleText = Field(min_length=1, max_length=500)


@router.post("/funds/{fund_id}/top-ups")
async def top_up_fund(
    request: Request, fund_id: str, body: TopUp, caller: Caller = Depends(current_caller)
) -> Response:
    """Add to a fund's budget (audited); waiting claims are reserved in order at once."""
    if (refused := _forbidden(caller)) is not None:
        return refused
    try:
        events = await handlers.top_up(
            runtime_of(request).db, fund_id, yuan_to_fen(body.amount), caller.user_id, body.reason
        )
    except handlers.NotFound as exc:
        return problem(404, str(exc), "path.fund_id", "exists")
    except handlers.Conflict as exc:
        return problem(409, str(exc), "path.fund_id", "capped_fund")
    async with runtime_of(request).db.acquire() as conn:
        views = await handlers.refresh_gauges(conn)
    fund = next(v for v in views if v["fund_id"] == fund_id)
    return JSONResponse(
        {
            "fund": _fund_view(fund),
            "released_from_queue": sum(e.event_type != "payout.queued" for e in events),
        }
    )


@router.get("/payouts")
async def list_payouts(
    request: Request,
    response: Response,
    claim_id: uuid.UUID | None = None,
    status: Annotated[str | None, Query(pattern=STATUSES)] = None,
    fund: str | None = None,
    from_: Annotated[Instant | None, Query(alias="from")] = None,
    to: Instant | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> list[dict[str, Any]]:
    """Payouts, newest approval first; ``from``/``to`` bound the approval time. The total
    is in the X-Total-Count header."""
    where = """($1::uuid IS NULL OR claim_id = $1) AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR fund_id = $3)
               AND ($4::timestamptz IS NULL OR requested_at >= $4)
               AND ($5::timestamptz IS NULL OR requested_at < $5)"""
    args = (claim_id, status, fund, from_, to)
    async with runtime_of(request).db.acquire() as conn:
        total = await conn.fetchval(f"SELECT count(*) FROM payouts WHERE {where}", *args)
        rows = await conn.fetch(
            f"""SELECT * FROM payouts WHERE {where}
                ORDER BY requested_at DESC, payout_id LIMIT $6 OFFSET $7""",
            *args,
            limit,
            offset,
        )
    response.headers["X-Total-Count"] = str(total)
    return [_view(r) for r in rows]


@router.get("/payouts/{payout_id}")
async def get_payout(request: Request, payout_id: uuid.UUID) -> Response:
    """A payout with its vouchers (one per issue) and every hop with its time."""
    async with runtime_of(request).db.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM payouts WHERE payout_id = $1", payout_id)
        if row is None:
            return problem(404, f"no payout {payout_id}", "path.payout_id", "exists")
        vouchers = await conn.fetch(
            "SELECT * FROM vouchers WHERE payout_id = $1 ORDER BY issue_no", payout_id
        )
        hops = await conn.fetch(
            "SELECT * FROM payout_hops WHERE payout_id = $1 ORDER BY at, id", payout_id
        )
    view = _view(row)
    view["vouchers"] = [
        {**dict(v), "amount": _yuan(v["amount_fen"]), "amount_fen": None} for v in vouchers
    ]
    for v in view["vouchers"]:
        v.pop("amount_fen")
    view["hops"] = [{k: r[k] for k in ("issue_no", "attempt", "hop", "at", "detail")} for r in hops]
    return JSONResponse(to_jsonable_python(view))


class AccountCorrection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payee: BankAccountInput
    reason: VisibleText = Field(min_length=1, max_length=500)


@router.post("/payouts/{payout_id}/account-correction")
async def correct_account(
    request: Request,
    payout_id: uuid.UUID,
    body: AccountCorrection,
    caller: Caller = Depends(current_caller),
) -> Response:
    """Correct the payee of a returned payout (audited) and re-issue it."""
    if (refused := _forbidden(caller)) is not None:
        return refused
    try:
        issue_no = await handlers.correct_account(
            runtime_of(request).db, payout_id, body.payee, caller.user_id, body.reason
        )
    except handlers.NotFound as exc:
        return problem(404, str(exc), "path.payout_id", "exists")
    except handlers.Conflict as exc:
        return problem(409, str(exc), "path.payout_id", "returned_only")
    return JSONResponse({"payout_id": str(payout_id), "issue_no": issue_no, "status": "retrying"})


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "date": report.day.isoformat(),
        "summary": {"matched": len(report.matched), **report.mismatch_counts()},
        "matched": report.matched,
        "missing_statement_line": report.missing_statement_line,
        "unknown_statement_line": report.unknown_statement_line,
        "amount_mismatch": report.amount_mismatch,
    }


@router.post(
    "/reconciliation/statements",
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def import_bank_statement(
    request: Request, caller: Caller = Depends(current_caller)
) -> Response:
    """Import a bank statement (CSV body, UTF-8, format in docs/payout.md) and reconcile
    the dates it covers."""
    if (refused := _forbidden(caller)) is not None:
        return refused
    try:
        body = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        return problem(422, "the statement is not UTF-8 text", "body", "utf8")
    try:
        statement_id, lines, duplicates, reports = await import_statement(
            runtime_of(request).db, body, caller.user_id
        )
    except StatementInvalid as exc:
        return JSONResponse(
            {
                "detail": "statement invalid",
                "errors": cap_errors(
                    [
                        {
                            "field": f"line {e.line}.{e.field}",
                            "rule": "statement",
                            "message": e.message,
                        }
                        for e in exc.errors
                    ]
                ),
            },
            status_code=422,
        )
    return JSONResponse(
        {
            "statement_id": str(statement_id),
            "lines_imported": lines,
            "duplicates_skipped": duplicates,
            "reports": [_report_json(r) for r in reports],
        },
        status_code=201,
    )


@router.get("/reconciliation/{day}")
async def reconciliation(request: Request, day: date) -> dict[str, Any]:
    async with runtime_of(request).db.acquire() as conn:
        report = await report_for(conn, day)
    return _report_json(report)
