"""Routes for finance staff: funds, payouts with their hops, top-ups, account corrections,
reconciliation. Actions need a caller of the finance or treasury department."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from services.payout.domain.model import StatementInvalid
from services.payout.service_layer import handlers
from services.payout.service_layer.reconciliation import import_statement_in, report_for
from shared import idempotency
from shared.db import DbConnection
from shared.identity import Caller, current_caller
from shared.messaging.after_commit import after_commit_scope
from shared.money import PositiveYuan, fen_to_yuan, optional_fen_to_yuan, yuan_to_fen
from shared.problems import cap_errors, problem
from shared.service_app import runtime_of
from shared.validation import BankAccountInput, Instant, Offset, VisibleText

router = APIRouter(tags=["payouts"])

FINANCE_DEPARTMENTS = frozenset({"finance", "treasury"})
STATUSES = (
    "^(queued|held|requested|issuing|issued|unknown|accepted|sent|retrying|paid|failed"
    "|returned|released)$"
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


async def _idempotent(
    request: Request,
    key: str | None,
    body: Any,
    work: idempotency.Work,
    *,
    required: bool = True,
) -> Response:
    """Run ``work`` in one transaction with the Idempotency-Key's stored response
    (shared/idempotency.py), again after a deadlock; counters move after the commit.
    Nothing touches the database after the commit, so a failure there cannot turn a
    committed change into an error answer."""
    if key is None and required:
        return problem(
            428,
            "Idempotency-Key header required: a repeat of this request must be recognised",
            f"header.{idempotency.HEADER}",
            "required",
        )
    fingerprint = idempotency.request_hash(request.method, request.url.path, body)
    pool = runtime_of(request).db

    async def once() -> Response:
        with after_commit_scope() as pending:
            async with pool.acquire() as conn:
                answer = await idempotency.respond(
                    conn, work, idempotency_key=key, fingerprint=fingerprint
                )
        pending.run()
        return JSONResponse(answer.body, status_code=answer.status_code)

    return await handlers.retried_on_conflict(once)


def _forbidden(caller: Caller) -> JSONResponse | None:
    if caller.department in FINANCE_DEPARTMENTS:
        return None
    return problem(
        403,
        "finance staff only (X-Department: finance or treasury)",
        "header.X-Department",
        "finance_only",
    )


@contextmanager
def _refusals_of_a_failed_payout() -> Iterator[None]:
    """The problems an action on a returned or failed payout answers with (stored with
    its Idempotency-Key): no such payout, or one in another state."""
    try:
        yield
    except handlers.NotFound as exc:
        raise idempotency.Problem(404, str(exc), "path.payout_id", "exists") from None
    except handlers.Conflict as exc:
        raise idempotency.Problem(
            409, str(exc), "path.payout_id", "returned_or_failed_only"
        ) from None


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
        views = await handlers.fund_views(conn)
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


@router.post("/funds/{fund_id}/top-ups", responses=NEEDS_KEY)
async def top_up_fund(
    request: Request,
    fund_id: str,
    body: TopUp,
    caller: Caller = Depends(current_caller),
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Add to a fund's budget (audited); waiting claims are reserved in order at once.
    Needs an Idempotency-Key: a clerk's retry never adds the budget twice."""
    if (refused := _forbidden(caller)) is not None:
        return refused

    async def work(conn: DbConnection) -> tuple[int, dict[str, Any]]:
        try:
            events = await handlers.top_up_in(
                conn, fund_id, yuan_to_fen(body.amount), caller.user_id, body.reason
            )
        except handlers.NotFound as exc:
            raise idempotency.Problem(404, str(exc), "path.fund_id", "exists") from None
        except handlers.Conflict as exc:
            raise idempotency.Problem(409, str(exc), "path.fund_id", "capped_fund") from None
        # The fund as this transaction leaves it, read before the commit.
        fund = next(v for v in await handlers.fund_views(conn) if v["fund_id"] == fund_id)
        return 200, {
            "fund": _fund_view(fund),
            "released_from_queue": sum(e.event_type != "payout.queued" for e in events),
        }

    return await _idempotent(request, idempotency_key, body.model_dump(mode="json"), work)


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


@router.post("/payouts/{payout_id}/account-correction", responses=NEEDS_KEY)
async def correct_account(
    request: Request,
    payout_id: uuid.UUID,
    body: AccountCorrection,
    caller: Caller = Depends(current_caller),
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Correct the payee of a returned or permanently failed payout (audited) and issue it
    again: a returned one at once (retrying), a failed one reserved again (requested) or
    queued when the fund cannot cover it now. Needs an Idempotency-Key."""
    if (refused := _forbidden(caller)) is not None:
        return refused

    async def work(conn: DbConnection) -> tuple[int, dict[str, Any]]:
        with _refusals_of_a_failed_payout():
            issue_no, status = await handlers.correct_account_in(
                conn, payout_id, body.payee, caller.user_id, body.reason
            )
        return 200, {"payout_id": str(payout_id), "issue_no": issue_no, "status": status.value}

    return await _idempotent(request, idempotency_key, body.model_dump(mode="json"), work)


class Closing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: VisibleText = Field(min_length=1, max_length=500)


@router.post("/payouts/{payout_id}/close", responses=NEEDS_KEY)
async def close_payout(
    request: Request,
    payout_id: uuid.UUID,
    body: Closing,
    caller: Caller = Depends(current_caller),
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Close a returned or permanently failed payout with a reason (audited): nothing
    will be paid; its commitment goes back to the fund; ``payout.released`` carries the
    reason as "closed by finance: …". Needs an Idempotency-Key."""
    if (refused := _forbidden(caller)) is not None:
        return refused

    async def work(conn: DbConnection) -> tuple[int, dict[str, Any]]:
        with _refusals_of_a_failed_payout():
            row = await handlers.close_payout_in(conn, payout_id, caller.user_id, body.reason)
        return 200, {
            "payout_id": str(payout_id),
            "status": row["status"],
            "release_reason": row["release_reason"],
        }

    return await _idempotent(request, idempotency_key, body.model_dump(mode="json"), work)


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
    request: Request,
    caller: Caller = Depends(current_caller),
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Import a bank statement (CSV body, UTF-8, format in docs/payout.md) and reconcile
    the dates it covers. Repeating an import is harmless (lines are keyed by the bank's
    reference); with an Idempotency-Key a repeat also gets the first answer."""
    if (refused := _forbidden(caller)) is not None:
        return refused
    try:
        body = (await request.body()).decode("utf-8")
    except UnicodeDecodeError:
        return problem(422, "the statement is not UTF-8 text", "body", "utf8")

    async def work(conn: DbConnection) -> tuple[int, dict[str, Any]]:
        try:
            statement_id, lines, duplicates, reports = await import_statement_in(
                conn, body, caller.user_id
            )
        except StatementInvalid as exc:
            raise InvalidStatement(exc) from None
        return 201, {
            "statement_id": str(statement_id),
            "lines_imported": lines,
            "duplicates_skipped": duplicates,
            "reports": [_report_json(r) for r in reports],
        }

    return await _idempotent(request, idempotency_key, body, work, required=False)


class InvalidStatement(idempotency.Refusal):
    """422 with one entry per broken line and field."""

    status_code = 422

    def __init__(self, invalid: StatementInvalid) -> None:
        super().__init__(str(invalid))
        self.errors = invalid.errors

    def body(self) -> dict[str, Any]:
        return {
            "detail": "statement invalid",
            "errors": cap_errors(
                [
                    {
                        "field": f"line {e.line}.{e.field}",
                        "rule": "statement",
                        "message": e.message,
                    }
                    for e in self.errors
                ]
            ),
        }


@router.get("/reconciliation/{day}")
async def reconciliation(request: Request, day: date) -> dict[str, Any]:
    async with runtime_of(request).db.acquire() as conn:
        report = await report_for(conn, day)
    return _report_json(report)
