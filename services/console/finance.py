"""Finance screens (资金): funds with their waiting queues, payouts filtered with a CSV
export of exactly the filtered rows, a payout's vouchers and hops, account correction of
a returned or failed payment, budget top-ups, bank statement upload and reconciliation.

Everything goes through payout's HTTP API (services/payout/entrypoints/http.py). Its
money-moving POSTs need an Idempotency-Key: the console makes one per rendered form (a
hidden field), so a double click or a browser retry moves money once.

**Dual control** (issue 11 item 4): payout's correction and top-up POSTs file a pending
request (202) that another person approves (``POST /finance/requests/{id}/approve``,
403 ``four_eyes`` for the requester). The console's forms file the request through
``ACTIONS`` / ``carry_out``; ``/finance/requests`` lists the pending requests with
approve / reject buttons for another finance person.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData, UploadFile

from services.console.api import ApiAnswer, new_idempotency_key
from services.console.i18n import translate
from services.console.session import Session
from services.console.web import (
    FINANCE_ROLES,
    ConsoleError,
    Kit,
    checked_form,
    form_str,
    session_of,
    with_role,
)
from shared.contracts.common import mask_account_number
from shared.workdays import CHINA

PAGE_SIZE = 50
API_PAGE = 500
"""payout's GET /payouts answers at most 500 rows a call; the export pages through."""
EXPORT_MAX_ROWS = 100_000
STATEMENT_MAX_BYTES = 1_048_576
"""payout's own body limit (CLAIMFLOW_MAX_BODY_BYTES default): refused here already."""
QUEUE_SHOWN = 20
PAYOUT_STATUSES = (
    "queued",
    "held",
    "requested",
    "issuing",
    "issued",
    "unknown",
    "accepted",
    "sent",
    "retrying",
    "paid",
    "failed",
    "returned",
    "released",
    "withheld",
)
CORRECTABLE = frozenset({"returned", "failed"})
CSV_COLUMNS = (
    "payout_id",
    "claim_id",
    "claim_kind",
    "fund_id",
    "status",
    "approved_amount",
    "paid_amount",
    "requested_at",
    "paid_at",
    "time_to_payment_seconds",
    "bank_name",
    "account_name",
    "account_number",
    "failure_reason",
)
CORRECTION_FIELDS = ("payee.bank_name", "payee.account_name", "payee.account_number", "reason")
TOP_UP_FIELDS = ("amount", "reason")

FinanceReader = Annotated[
    Session, Depends(with_role("finance_clerk", "finance_supervisor", "auditor"))
]
"""Funds, payouts, reconciliation reports: payout's funds.read / payouts.read /
reconciliation.read (docs/permissions.md) — finance staff and auditors."""
FinanceClerk = Annotated[Session, Depends(with_role("finance_clerk"))]
"""payouts.correct_account, statements.import."""
FinanceSupervisor = Annotated[Session, Depends(with_role("finance_supervisor"))]
"""funds.top_up."""
FinanceDecider = Annotated[
    Session, Depends(with_role("finance_clerk", "finance_supervisor", "auditor"))
]
"""finance.requests.read (finance staff and auditors); deciding is
finance.requests.decide, which payout checks (auditors get no buttons)."""
DECIDING_ROLES = frozenset({"finance_clerk", "finance_supervisor"})
Form = Annotated[FormData, Depends(checked_form)]


# --- pure helpers (unit-tested) -------------------------------------------------------


mask_account = mask_account_number


def sees_full_accounts(session: Session) -> bool:
    return session.caller is not None and bool(session.caller.roles & FINANCE_ROLES)


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text: a value starting with = + - @ (an
    enterprise name typed at the window, a bank's reason) would be run as a formula."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def payouts_csv(rows: list[dict[str, Any]], *, full_accounts: bool) -> str:
    """The rows as CSV (UTF-8 with a BOM, so that a spreadsheet reads the Chinese
    names); the account number masked unless ``full_accounts``."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        payee = row.get("payee") or {}
        number = str(payee.get("account_number") or "")
        writer.writerow(
            [
                _cell(row.get("payout_id")),
                _cell(row.get("claim_id")),
                _cell(row.get("claim_kind")),
                _cell(row.get("fund_id")),
                _cell(row.get("status")),
                _cell(row.get("approved_amount")),
                _cell(row.get("paid_amount")),
                _cell(row.get("requested_at")),
                _cell(row.get("paid_at")),
                _cell(row.get("time_to_payment_seconds")),
                _cell(payee.get("bank_name")),
                _cell(payee.get("account_name")),
                _cell(number if full_accounts else mask_account(number)),
                _cell(row.get("failure_reason")),
            ]
        )
    return out.getvalue()


@dataclass(frozen=True)
class PayoutFilter:
    """The payouts list's filter, as the browser's query sends it (dates are Beijing
    days, ``to`` inclusive) and as payout's GET /payouts takes it."""

    status: str = ""
    fund: str = ""
    date_from: str = ""
    date_to: str = ""

    @classmethod
    def parse(cls, status: str, fund: str, date_from: str, date_to: str) -> PayoutFilter:
        return cls(
            status=status if status in PAYOUT_STATUSES else "",
            fund=fund.strip()[:100],
            date_from=_iso_day(date_from),
            date_to=_iso_day(date_to),
        )

    def api_params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.status:
            params["status"] = self.status
        if self.fund:
            params["fund"] = self.fund
        if self.date_from:
            start = datetime.combine(date.fromisoformat(self.date_from), time(), CHINA)
            params["from"] = start.isoformat()
        if self.date_to:
            end = datetime.combine(
                date.fromisoformat(self.date_to) + timedelta(days=1), time(), CHINA
            )
            params["to"] = end.isoformat()
        return params

    def query(self) -> dict[str, str]:
        """For links (the export, the pages) that keep this filter."""
        return {
            k: v
            for k, v in (
                ("status", self.status),
                ("fund", self.fund),
                ("from", self.date_from),
                ("to", self.date_to),
            )
            if v
        }


def export_name(chosen: PayoutFilter) -> str:
    """The filter names the file, in safe characters only: the fund comes from the URL and
    ends up in a header."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(["payouts", *chosen.query().values()])) + ".csv"


def _iso_day(value: str) -> str:
    try:
        return date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        return ""


def fen_yuan(fen: Any) -> str:
    try:
        return str((Decimal(int(fen)) / 100).quantize(Decimal("0.01")))
    except (TypeError, ValueError):
        return "—"


@dataclass(frozen=True)
class Action:
    """One finance action on payout's API: what the console asks, with which key."""

    path: str
    body: dict[str, Any]
    idempotency_key: str


ACTIONS = {
    "account_correction": "/payouts/{target}/account-correction",
    "top_up": "/funds/{target}/top-ups",
}
"""The actions a second person approves (dual control, payout's finance_requests): the
console files the request (payout answers 202 with it); another person approves it on
``/finance/requests`` (payout's ``POST /finance/requests/{id}/approve``)."""


def action(kind: str, target: str, body: dict[str, Any], key: str) -> Action:
    return Action(ACTIONS[kind].format(target=target), body, key or new_idempotency_key())


# --- routes ---------------------------------------------------------------------------


def install_finance(app: FastAPI, kit: Kit) -> None:
    async def carry_out(request: Request, act: Action) -> ApiAnswer:
        """The one place where finance actions reach payout: it files the request that
        another person approves (dual control)."""
        return await kit.call(
            request,
            "payout",
            "POST",
            act.path,
            json=act.body,
            idempotency_key=act.idempotency_key,
        )

    async def funds_context(request: Request) -> dict[str, Any]:
        funds = await kit.need(request, "payout", "/funds")
        queues: dict[str, list[dict[str, Any]]] = {}
        for fund in funds:
            if fund["waiting_claims"]:
                queue = await kit.need(request, "payout", f"/funds/{fund['fund_id']}/queue")
                queues[fund["fund_id"]] = queue[:QUEUE_SHOWN]
        return {
            "funds": funds,
            "queues": queues,
            "top_up_keys": {f["fund_id"]: new_idempotency_key() for f in funds},
        }

    @app.get("/finance/funds")
    async def funds_page(request: Request, session: FinanceReader) -> HTMLResponse:
        context = await funds_context(request)
        context["done"] = request.query_params.get("done", "")
        return kit.render(request, "funds.html", context)

    @app.post("/finance/funds/{fund_id}/top-ups", response_model=None)
    async def top_up(
        request: Request, fund_id: str, session: FinanceSupervisor, form: Form
    ) -> Response:
        amount, reason = form_str(form, "amount"), form_str(form, "reason")
        answer = await carry_out(
            request,
            action(
                "top_up",
                fund_id,
                {"amount": amount, "reason": reason},
                form_str(form, "idempotency_key"),
            ),
        )
        if answer.ok:
            return RedirectResponse(f"/finance/funds?done={fund_id}", status_code=303)
        if answer.status in (404, 409, 422, 428):
            context = await funds_context(request)
            context["top_up_errors"] = {
                "fund_id": fund_id,
                "entered": {"amount": amount, "reason": reason},
                "fields": answer.field_errors(session_of(request).lang) or {"": answer.detail},
            }
            return kit.render(request, "funds.html", context, status=answer.status)
        raise ConsoleError(502, "error.unavailable", f"payout: {answer.detail}")

    async def fund_ids(request: Request) -> list[str]:
        return [f["fund_id"] for f in await kit.need(request, "payout", "/funds")]

    @app.get("/finance/payouts")
    async def payouts_page(
        request: Request,
        session: FinanceReader,
        status: str = "",
        fund: str = "",
        page: int = 1,
    ) -> HTMLResponse:
        chosen = PayoutFilter.parse(
            status,
            fund,
            request.query_params.get("from", ""),
            request.query_params.get("to", ""),
        )
        page = max(1, min(page, 10_000))
        answer = await kit.call(
            request,
            "payout",
            "GET",
            "/payouts",
            params={**chosen.api_params(), "limit": PAGE_SIZE, "offset": (page - 1) * PAGE_SIZE},
        )
        if not answer.ok:
            raise ConsoleError(502, "error.unavailable", f"payout: {answer.detail}")
        total = int(answer.headers.get("x-total-count", len(answer.body)))
        return kit.render(
            request,
            "payouts.html",
            {
                "payouts": answer.body,
                "total": total,
                "page": page,
                "pages": max(1, -(-total // PAGE_SIZE)),
                "filter": chosen,
                "query": chosen.query(),
                "statuses": PAYOUT_STATUSES,
                "funds": await fund_ids(request),
                "mask": mask_account,
            },
        )

    @app.get("/finance/payouts.csv")
    async def payouts_export(
        request: Request, session: FinanceReader, status: str = "", fund: str = ""
    ) -> Response:
        """Exactly the rows of the filter: payout's pages of 500 until its
        X-Total-Count; a count that moves while paging (a payout changed status) is
        read again rather than exported half old, half new."""
        chosen = PayoutFilter.parse(
            status,
            fund,
            request.query_params.get("from", ""),
            request.query_params.get("to", ""),
        )
        rows: list[dict[str, Any]] = []
        for _attempt in range(3):
            rows, total = [], None
            while total is None or len(rows) < total:
                answer = await kit.call(
                    request,
                    "payout",
                    "GET",
                    "/payouts",
                    params={**chosen.api_params(), "limit": API_PAGE, "offset": len(rows)},
                )
                if not answer.ok:
                    raise ConsoleError(502, "error.unavailable", f"payout: {answer.detail}")
                count = int(answer.headers.get("x-total-count", "0"))
                if total is not None and count != total:
                    break
                total = count
                if total > EXPORT_MAX_ROWS:
                    raise ConsoleError(
                        413, "finance.export_too_large", f"{total} > {EXPORT_MAX_ROWS}"
                    )
                if not answer.body:
                    break
                rows += answer.body
            if total is not None and len(rows) == total:
                break
        else:
            raise ConsoleError(409, "finance.export_moving", "")
        text = payouts_csv(rows, full_accounts=sees_full_accounts(session))
        name = export_name(chosen)
        return Response(
            text.encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    async def payout_context(request: Request, payout_id: uuid.UUID) -> dict[str, Any]:
        payout = await kit.need(request, "payout", f"/payouts/{payout_id}")
        session = session_of(request)
        return {
            "payout": payout,
            "full_accounts": sees_full_accounts(session),
            "mask": mask_account,
            "can_correct": payout["status"] in CORRECTABLE
            and session.caller is not None
            and "finance_clerk" in session.caller.roles,
            "correction_key": new_idempotency_key(),
            "values": {},
            "errors": {},
            "done": request.query_params.get("done", ""),
        }

    @app.get("/finance/payouts/{payout_id}")
    async def payout_page(
        request: Request, payout_id: uuid.UUID, session: FinanceReader
    ) -> HTMLResponse:
        return kit.render(request, "payout.html", await payout_context(request, payout_id))

    @app.post("/finance/payouts/{payout_id}/account-correction", response_model=None)
    async def correct_account(
        request: Request, payout_id: uuid.UUID, session: FinanceClerk, form: Form
    ) -> Response:
        values = {name: form_str(form, name) for name in CORRECTION_FIELDS}
        body = {
            "payee": {
                "bank_name": values["payee.bank_name"],
                "account_name": values["payee.account_name"],
                "account_number": values["payee.account_number"].replace(" ", ""),
            },
            "reason": values["reason"],
        }
        answer = await carry_out(
            request,
            action("account_correction", str(payout_id), body, form_str(form, "idempotency_key")),
        )
        if answer.ok:
            return RedirectResponse(f"/finance/payouts/{payout_id}?done=corrected", status_code=303)
        if answer.status in (404, 409, 422, 428):
            context = await payout_context(request, payout_id)
            # The same key again: a retry of this very correction must not count twice.
            context["correction_key"] = form_str(form, "idempotency_key")
            context["values"] = values
            context["errors"] = answer.field_errors(session.lang) or {"": answer.detail}
            return kit.render(request, "payout.html", context, status=answer.status)
        raise ConsoleError(502, "error.unavailable", f"payout: {answer.detail}")

    def report_view(report: dict[str, Any]) -> dict[str, Any]:
        for kind in (
            "matched",
            "missing_statement_line",
            "unknown_statement_line",
            "amount_mismatch",
        ):
            for line in report.get(kind, []):
                line["statement_amount"] = fen_yuan(line.get("statement_amount_fen"))
                line["expected_amount"] = fen_yuan(line.get("expected_amount_fen"))
        return report

    async def requests_context(request: Request) -> dict[str, Any]:
        pending = await kit.need(
            request, "payout", "/finance/requests", params={"status": "pending"}
        )
        caller = session_of(request).caller
        return {
            "requests": pending,
            "keys": {r["request_id"]: new_idempotency_key() for r in pending},
            "decides": caller is not None and bool(caller.roles & DECIDING_ROLES),
        }

    @app.get("/finance/requests")
    async def requests_page(request: Request, session: FinanceDecider) -> HTMLResponse:
        """Pending top-up and correction requests with approve / reject buttons (dual
        control: the requester gets none on their own; payout enforces it anyway)."""
        context = await requests_context(request)
        context["done"] = request.query_params.get("done", "")
        return kit.render(request, "requests.html", context)

    @app.post("/finance/requests/{request_id}/{verdict}", response_model=None)
    async def decide_request(
        request: Request, request_id: uuid.UUID, verdict: str, session: FinanceDecider, form: Form
    ) -> Response:
        if verdict not in ("approve", "reject"):
            raise ConsoleError(404, "error.404", verdict)
        answer = await kit.call(
            request,
            "payout",
            "POST",
            f"/finance/requests/{request_id}/{verdict}",
            json={},
            idempotency_key=form_str(form, "idempotency_key") or new_idempotency_key(),
        )
        if answer.ok:
            return RedirectResponse(f"/finance/requests?done={request_id}", status_code=303)
        if answer.status in (403, 404, 409, 422, 428):
            context = await requests_context(request)
            context["error"] = answer.detail
            return kit.render(request, "requests.html", context, status=answer.status)
        raise ConsoleError(502, "error.unavailable", f"payout: {answer.detail}")

    @app.get("/finance/reconciliation")
    async def reconciliation_page(
        request: Request, session: FinanceReader, day: str = ""
    ) -> HTMLResponse:
        report = None
        chosen = _iso_day(day)
        if chosen:
            report = report_view(await kit.need(request, "payout", f"/reconciliation/{chosen}"))
        return kit.render(
            request,
            "reconciliation.html",
            {
                "reports": [report] if report else [],
                "day": chosen,
                "errors": {},
                "statement_key": new_idempotency_key(),
            },
        )

    @app.post("/finance/reconciliation/statements", response_model=None)
    async def upload_statement(request: Request, session: FinanceClerk, form: Form) -> Response:
        upload = form.get("statement")
        errors: dict[str, str] = {}
        data = b""
        if not isinstance(upload, UploadFile):
            errors["statement"] = "finance.statement_missing"
        else:
            data = await upload.read(STATEMENT_MAX_BYTES + 1)
            if not data:
                errors["statement"] = "finance.statement_missing"
            elif len(data) > STATEMENT_MAX_BYTES:
                errors["statement"] = "finance.statement_too_large"
        context: dict[str, Any] = {
            "reports": [],
            "day": "",
            "errors": {},
            "statement_key": new_idempotency_key(),
        }
        if errors:
            context["errors"] = {k: translate(v, session.lang) for k, v in errors.items()}
            return kit.render(request, "reconciliation.html", context, status=422)
        answer = await kit.call(
            request,
            "payout",
            "POST",
            "/reconciliation/statements",
            content=data,
            content_type="text/csv; charset=utf-8",
            idempotency_key=form_str(form, "idempotency_key") or None,
        )
        if answer.status in (413, 422):
            context["errors"] = answer.field_errors(session.lang) or {"": answer.detail}
            return kit.render(request, "reconciliation.html", context, status=answer.status)
        if not answer.ok:
            raise ConsoleError(502, "error.unavailable", f"payout: {answer.detail}")
        context["imported"] = answer.body
        context["reports"] = [report_view(r) for r in answer.body["reports"]]
        return kit.render(request, "reconciliation.html", context)
