"""The console's routes. Every screen reads and writes through the services' HTTP APIs
(services/console/api.py) with the signed-in user's token; nothing here touches a
database or a topic."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2_fragments.fastapi import Jinja2Blocks
from starlette.datastructures import FormData
from stdnum.cn import uscc as stdnum_uscc
from stdnum.exceptions import InvalidChecksum
from stdnum.exceptions import ValidationError as StdnumError

from services.console.api import ApiAnswer, ApiClient, ServiceUnavailable, new_idempotency_key
from services.console.audit import install_audit
from services.console.config import ConsoleSettings
from services.console.dashboard import install_dashboard
from services.console.finance import install_finance
from services.console.i18n import LANGS, bilingual_name, translate, translate_or
from services.console.oidc import OidcClient, SignInFailed
from services.console.session import COOKIE, CSRF_HEADER, Session, SessionStore
from services.console.web import (
    DASHBOARD_ROLES,
    FINANCE_ROLES,
    ConsoleError,
    Kit,
    LoginRequired,
    RateLimiter,
    checked_form,
    first,
    form_list,
    form_str,
    safe_next,
    session_of,
    signed_in,
    with_role,
)
from shared.workdays import CHINA

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
DUE_SOON_S = 24 * 3600
PROGRAMS_TTL_S = 300.0
DESK_CATCH_UP_S = 5.0
"""How long a reviewer's task page waits for intake's tracker to learn a new desk."""
LOW_RISK_CHECK = "pass"

Form = Annotated[FormData, Depends(checked_form)]
Window = Annotated[Session, Depends(with_role("window_clerk"))]
Reviewer = Annotated[Session, Depends(with_role("reviewer"))]
Approver = Annotated[Session, Depends(with_role("approver"))]
SignedIn = Annotated[Session, Depends(signed_in)]


# --- formatting ------------------------------------------------------------------------


def _yuan(value: Any) -> str:
    try:
        return f"{Decimal(str(value)):,.2f}"
    except (InvalidOperation, ValueError):
        return "—"


def _when(value: Any) -> str:
    """ISO timestamps and dates from the APIs, shown in Beijing time."""
    if not value:
        return "—"
    text = str(value)
    if len(text) == 10:
        return text
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M")


def _when_exact(value: Any) -> str:
    """To the second, Beijing time: the auditor's history orders events that fall in
    one minute."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")


def _seconds_left(value: Any) -> int | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return int((moment - datetime.now(UTC)).total_seconds())


def uscc_problem(value: str) -> str | None:
    """The same rule as intake's (GB 32100-2015, python-stdnum), for feedback while
    typing; intake decides."""
    try:
        stdnum_uscc.validate(value)
    except InvalidChecksum:
        return "校验码不符 (GB 32100-2015), 请核对 / the check character does not match"
    except StdnumError as exc:
        return f"不是有效的统一社会信用代码 / not a unified social credit code: {exc}"
    return None


# --- the app ---------------------------------------------------------------------------


def create_app(settings: ConsoleSettings) -> FastAPI:
    templates = Jinja2Blocks(directory=str(HERE / "templates"))
    env = templates.env
    env.filters["yuan"] = _yuan
    env.filters["when"] = _when
    env.filters["when_exact"] = _when_exact
    env.globals["bilingual"] = bilingual_name

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=settings.http_timeout_s) as client:
            app.state.oidc = OidcClient(settings, client)
            app.state.api = ApiClient(settings, client)
            yield
            await app.state.oidc.aclose()

    app = FastAPI(
        title="claimflow console",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.sessions = SessionStore(
        settings.session_secret.get_secret_value(), ttl_s=settings.session_ttl_s
    )
    app.state.status_limiter = RateLimiter(settings.status_rate_per_minute)
    app.state.programs = (0.0, None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    def api(request: Request) -> ApiClient:
        client: ApiClient = request.app.state.api
        return client

    async def call(
        request: Request, service: str, method: str, path: str, **kwargs: Any
    ) -> ApiAnswer:
        session = session_of(request)
        try:
            return await api(request).call(
                service,
                method,
                path,
                token=session.access_token,
                **kwargs,
            )
        except ServiceUnavailable:
            raise ConsoleError(503, "error.unavailable", service) from None

    async def need(request: Request, service: str, path: str, **kwargs: Any) -> Any:
        answer = await call(request, service, "GET", path, **kwargs)
        if answer.status == 404:
            raise ConsoleError(404, "error.404", answer.detail)
        if answer.status == 403:
            raise ConsoleError(403, "error.403", answer.detail)
        if not answer.ok:
            raise ConsoleError(502, "error.unavailable", f"{service}: {answer.detail}")
        return answer.body

    async def catalogue(request: Request) -> dict[str, Any]:
        """Claim kinds and programs with their checklists, from intake's GET /programs
        (cached for a few minutes: reference data)."""
        fetched_at, cached = request.app.state.programs
        if cached is None or time.monotonic() - fetched_at > PROGRAMS_TTL_S:
            cached = await need(request, "intake", "/programs")
            request.app.state.programs = (time.monotonic(), cached)
        result: dict[str, Any] = cached
        return result

    def checklist(cat: dict[str, Any], kind: str, program_id: str | None) -> list[dict[str, Any]]:
        if kind == "subsidy":
            program = first(cat["programs"], id=program_id) if program_id else None
            return list(program["documents"]) if program else []
        return list(cat["vat_refund"]["documents"])

    def doc_names(cat: dict[str, Any]) -> dict[str, str]:
        names = {d["id"]: d["name"] for d in cat["vat_refund"]["documents"]}
        for p in cat["programs"]:
            names.update({d["id"]: d["name"] for d in p["documents"]})
        return names

    def render(
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        *,
        status: int = 200,
        block: str | None = None,
    ) -> HTMLResponse:
        session = session_of(request)
        lang = session.lang

        def t(key: str) -> str:
            return translate(key, lang)

        def holder(value: str) -> str:
            if value.startswith("review:"):
                return translate_or(f"dept.{value[7:]}", value, lang)
            return translate_or(f"holder.{value}", value, lang)

        def event(value: str) -> str:
            return translate_or(f"event.{value}", value, lang)

        ctx: dict[str, Any] = {
            "t": t,
            "holder": holder,
            "event": event,
            "lang": lang,
            "session": session,
            "caller": session.caller if session.signed_in(time.time()) else None,
            "csrf": session.csrf,
            "csrf_header": CSRF_HEADER,
            "grafana_url": settings.grafana_url,
            "sees_dashboards": session.caller is not None
            and bool(session.caller.roles & DASHBOARD_ROLES),
            "reads_finance": session.caller is not None
            and bool(session.caller.roles & (FINANCE_ROLES | {"auditor"})),
            "path": request.url.path,
            "status_url": f"{settings.origin}/status",
            **(context or {}),
        }
        response = templates.TemplateResponse(
            request, name, ctx, status_code=status, block_name=block
        )
        assert isinstance(response, HTMLResponse)
        return response

    # --- sessions, security headers, error pages ---------------------------------------

    @app.middleware("http")
    async def sessions(request: Request, call_next: Any) -> Response:
        store: SessionStore = app.state.sessions
        cookie = request.cookies.get(COOKIE)
        session = store.load(cookie)
        if session is None:
            accept = request.headers.get("accept-language", "")
            session = store.new("en" if accept.lower().startswith("en") else "zh")
        request.state.session = session
        response: Response = await call_next(request)
        current: Session = request.state.session
        value = store.cookie_value(current)
        if value != cookie:
            response.set_cookie(
                COOKIE,
                value,
                max_age=settings.session_ttl_s,
                httponly=True,
                samesite="lax",
                secure=settings.secure_cookies,
                path="/",
            )
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "form-action 'self' " + settings.issuer_url + "; frame-ancestors 'none'",
        )
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.exception_handler(ConsoleError)
    async def console_error(request: Request, exc: ConsoleError) -> HTMLResponse:
        return render(
            request, "error.html", {"key": exc.key, "detail": exc.detail}, status=exc.status
        )

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("HX-Request"):
            # htmx follows redirects inside the swap; send the whole page to sign-in.
            return Response(
                status_code=204, headers={"HX-Redirect": f"/login?next={exc.next_path}"}
            )
        return RedirectResponse(f"/login?next={exc.next_path}", status_code=303)

    # --- sign-in ------------------------------------------------------------------------

    @app.get("/", response_model=None)
    async def home(request: Request, session: SignedIn) -> Response:
        assert session.caller is not None
        roles = session.caller.roles
        if "window_clerk" in roles:
            return RedirectResponse("/window/claims/new", status_code=303)
        if "reviewer" in roles:
            return RedirectResponse("/review", status_code=303)
        if "approver" in roles:
            return RedirectResponse("/sign-off", status_code=303)
        if roles & FINANCE_ROLES:
            return RedirectResponse("/finance/funds", status_code=303)
        if "auditor" in roles:
            return RedirectResponse("/audit", status_code=303)
        return render(request, "home.html")

    @app.get("/login", response_model=None)
    async def login(request: Request, next: str = "/") -> Response:
        session = session_of(request)
        if session.signed_in(time.time()):
            return RedirectResponse(safe_next(next), status_code=303)
        oidc: OidcClient = request.app.state.oidc
        try:
            pending, url = await oidc.start(safe_next(next))
        except SignInFailed as exc:
            raise ConsoleError(503, "error.signin", str(exc)) from None
        session.pending = pending
        return RedirectResponse(url, status_code=303)

    @app.get("/auth/callback", response_model=None)
    async def callback(
        request: Request, code: str = "", state: str = "", error: str = ""
    ) -> Response:
        session = session_of(request)
        if error or not code:
            raise ConsoleError(401, "error.signin", error or "no authorization code")
        oidc: OidcClient = request.app.state.oidc
        try:
            done = await oidc.finish(session.pending, code, state)
        except SignInFailed as exc:
            session.pending = None
            raise ConsoleError(401, "error.signin", str(exc)) from None
        next_path = session.pending.next_path if session.pending else "/"
        store: SessionStore = request.app.state.sessions
        fresh = store.rotate(session)
        fresh.caller = done.caller
        fresh.access_token = done.access_token
        fresh.id_token = done.id_token
        fresh.token_expires_at = done.expires_at
        request.state.session = fresh
        log.info("signed in: %s roles=%s", done.caller.subject, sorted(done.caller.roles))
        return RedirectResponse(next_path, status_code=303)

    @app.post("/logout", response_model=None)
    async def logout(request: Request, form: Form) -> Response:
        store: SessionStore = request.app.state.sessions
        old = session_of(request)
        store.drop(old)
        request.state.session = store.new(old.lang)
        return render(request, "logged_out.html")

    @app.get("/lang/{lang}", response_model=None)
    async def switch_language(request: Request, lang: str, next: str = "/") -> Response:
        if lang in LANGS:
            session_of(request).lang = lang
        return RedirectResponse(safe_next(next), status_code=303)

    # --- window (窗口受理) -------------------------------------------------------------

    def blank_claim(kind: str, program_id: str | None) -> dict[str, str]:
        return {"kind": kind, "program_id": program_id or "", "tax_credit_rating": "A"}

    async def claim_form(
        request: Request,
        values: dict[str, str],
        doc_states: dict[str, str],
        errors: dict[str, str],
        *,
        status: int = 200,
        block: str | None = None,
    ) -> HTMLResponse:
        cat = await catalogue(request)
        kind = values.get("kind") or "vat_refund"
        program_id = values.get("program_id") or None
        if kind == "subsidy" and program_id is None and cat["programs"]:
            program_id = cat["programs"][0]["id"]
            values["program_id"] = program_id
        documents = checklist(cat, kind, program_id)
        known = {d["id"] for d in documents}
        general = {
            k: v
            for k, v in errors.items()
            if k not in FORM_FIELDS and k.removeprefix("documents.") not in known
        }
        return render(
            request,
            "claim_new.html",
            {
                "values": values,
                "programs": cat["programs"],
                "documents": documents,
                "doc_states": doc_states,
                "errors": errors,
                "general_errors": general,
                "idempotency_key": new_idempotency_key(),
            },
            status=status,
            block=block,
        )

    @app.get("/window/claims/new")
    async def new_claim(
        request: Request, session: Window, kind: str = "vat_refund", program_id: str = ""
    ) -> HTMLResponse:
        kind = kind if kind in ("vat_refund", "subsidy") else "vat_refund"
        block = "checklist" if request.headers.get("HX-Request") else None
        return await claim_form(request, blank_claim(kind, program_id), {}, {}, block=block)

    @app.get("/window/uscc-check")
    async def uscc_check(request: Request, session: Window, uscc: str = "") -> HTMLResponse:
        value = uscc.strip().upper()
        problem = uscc_problem(value) if value else None
        return render(
            request,
            "claim_new.html",
            {"uscc_error": problem, "uscc_ok": bool(value) and problem is None},
            block="uscc_feedback",
        )

    @app.post("/window/claims", response_model=None)
    async def register(request: Request, session: Window, form: Form) -> Response:
        values = {name: form_str(form, name) for name in FORM_FIELDS}
        kind = values["kind"] if values["kind"] in ("vat_refund", "subsidy") else "vat_refund"
        values["kind"] = kind
        cat = await catalogue(request)
        documents = checklist(cat, kind, values["program_id"] or None)
        doc_states = {d["id"]: form_str(form, f"doc.{d['id']}") or "missing" for d in documents}
        body: dict[str, Any] = {
            "kind": kind,
            "uscc": values["uscc"].upper(),
            "enterprise_name": values["enterprise_name"],
            "requested_amount": values["requested_amount"],
            "bank_account": {
                "bank_name": values["bank_account.bank_name"],
                "account_name": values["bank_account.account_name"],
                "account_number": values["bank_account.account_number"].replace(" ", ""),
            },
            "documents_supplied": [d for d, s in doc_states.items() if s == "supplied"],
            "documents_promised": [d for d, s in doc_states.items() if s == "promised"],
        }
        if kind == "vat_refund":
            for name in VAT_FIELDS:
                body[name] = values[name]
        else:
            body["program_id"] = values["program_id"]
            if values["description"]:
                body["description"] = values["description"]
        answer = await call(
            request,
            "intake",
            "POST",
            "/claims",
            json=body,
            idempotency_key=form_str(form, "idempotency_key") or None,
        )
        if answer.status == 201:
            claim_id = answer.body["claim_id"]
            return RedirectResponse(f"/window/claims/{claim_id}/receipt", status_code=303)
        if answer.status in (409, 422):
            errors = answer.field_errors(session.lang) or {"": answer.detail}
            return await claim_form(request, values, doc_states, errors, status=422)
        raise ConsoleError(502, "error.unavailable", answer.detail)

    @app.get("/window/claims/{claim_id}/receipt")
    async def receipt(request: Request, claim_id: uuid.UUID, session: Window) -> HTMLResponse:
        claim = await need(request, "intake", f"/claims/{claim_id}")
        cat = await catalogue(request)
        program = first(cat["programs"], id=claim["program_id"]) if claim["program_id"] else None
        return render(
            request,
            "receipt.html",
            {"claim": claim, "names": doc_names(cat), "program": program},
        )

    @app.get("/window/search")
    async def search(
        request: Request, session: Window, q: str = "", status: str = ""
    ) -> HTMLResponse:
        q = q.strip()
        params: dict[str, Any] = {"limit": 100}
        if status in STATUSES:
            params["status"] = status
        items: list[dict[str, Any]] = []
        name_search = False
        searched = bool(q or status)
        try:
            claim_id: uuid.UUID | None = uuid.UUID(q) if q else None
        except ValueError:
            claim_id = None
        if claim_id is not None:
            answer = await call(request, "intake", "GET", f"/claims/{claim_id}")
            items = [answer.body] if answer.ok else []
        elif searched:
            if len(q) == 18 and q.isalnum():
                params["uscc"] = q.upper()
            elif q:
                # intake's GET /claims has no name filter: look through the latest claims.
                name_search = True
                params["limit"] = 500
            page = await need(request, "intake", "/claims", params=params)
            items = page["items"]
            if name_search:
                items = [c for c in items if q in c["enterprise_name"]][:100]
        block = "results" if request.headers.get("HX-Request") else None
        return render(
            request,
            "search.html",
            {
                "q": q,
                "status": status,
                "statuses": STATUSES,
                "items": items,
                "searched": searched,
                "name_search": name_search,
            },
            block=block,
        )

    async def tracker_context(request: Request, claim_id: uuid.UUID) -> dict[str, Any]:
        claim = await need(request, "intake", f"/claims/{claim_id}")
        cat = await catalogue(request)
        return {
            "claim": claim,
            "names": doc_names(cat),
            "outstanding": [
                d for d in claim["documents"] if d["state"] in ("promised", "requested")
            ],
            "final": claim["status"] in FINAL_STATUSES,
        }

    @app.get("/window/claims/{claim_id}")
    async def tracker(request: Request, claim_id: uuid.UUID, session: Window) -> HTMLResponse:
        return render(request, "tracker.html", await tracker_context(request, claim_id))

    @app.post("/window/claims/{claim_id}/documents", response_model=None)
    async def document_received(
        request: Request, claim_id: uuid.UUID, session: Window, form: Form
    ) -> Response:
        document_id = form_str(form, "document_id")
        answer = await call(
            request,
            "intake",
            "POST",
            f"/claims/{claim_id}/documents",
            json={"document_id": document_id},
        )
        context = await tracker_context(request, claim_id)
        if not answer.ok:
            context["action_error"] = answer.detail
        if request.headers.get("HX-Request"):
            return render(request, "tracker.html", context, block="documents")
        if not answer.ok:
            return render(request, "tracker.html", context, status=answer.status)
        return RedirectResponse(f"/window/claims/{claim_id}", status_code=303)

    @app.post("/window/claims/{claim_id}/withdraw", response_model=None)
    async def withdraw(
        request: Request, claim_id: uuid.UUID, session: Window, form: Form
    ) -> Response:
        answer = await call(
            request,
            "intake",
            "POST",
            f"/claims/{claim_id}/withdraw",
            json={"reason": form_str(form, "reason")},
        )
        if answer.ok:
            return RedirectResponse(f"/window/claims/{claim_id}", status_code=303)
        context = await tracker_context(request, claim_id)
        context["withdraw_errors"] = answer.field_errors(session.lang) or {"": answer.detail}
        return render(request, "tracker.html", context, status=answer.status)

    # --- reviewer (联审) ---------------------------------------------------------------

    async def my_tasks(request: Request, session: Session) -> list[dict[str, Any]]:
        assert session.caller is not None
        tasks: list[dict[str, Any]] = []
        for department in sorted(session.caller.departments):
            tasks += await need(
                request,
                "review",
                "/worklist",
                params={"department": department},
            )
        for task in tasks:
            task["seconds_left"] = _seconds_left(task["due_at"])
            task["due_soon"] = not task["overdue"] and (task["seconds_left"] or 0) < DUE_SOON_S
            task["low_risk"] = (
                task["cross_check_result"] == LOW_RISK_CHECK
                and not task["pending_documents"]
                and not task["escalated"]
            )
        # Overdue first, then due soon, then by deadline (the API sorts by deadline only).
        tasks.sort(key=lambda t: (not t["overdue"], not t["due_soon"], t["due_at"]))
        return tasks

    @app.get("/review")
    async def worklist(
        request: Request,
        session: Reviewer,
        overdue: str = "",
        check: str = "",
        kind: str = "",
    ) -> HTMLResponse:
        tasks = await my_tasks(request, session)
        total = len(tasks)
        if overdue:
            tasks = [t for t in tasks if t["overdue"]]
        if check in ("pass", "warn", "fail"):
            tasks = [t for t in tasks if t["cross_check_result"] == check]
        if kind in ("vat_refund", "subsidy"):
            tasks = [t for t in tasks if t["kind"] == kind]
        return render(
            request,
            "worklist.html",
            {
                "tasks": tasks,
                "total": total,
                "filters": {"overdue": overdue, "check": check, "kind": kind},
                "done": request.query_params.get("done", ""),
            },
        )

    @app.get("/review/count")
    async def worklist_count(request: Request, session: Reviewer) -> HTMLResponse:
        return HTMLResponse(str(len(await my_tasks(request, session))))

    async def task_context(
        request: Request, session: Session, claim_id: uuid.UUID, task_id: uuid.UUID
    ) -> dict[str, Any]:
        assert session.caller is not None
        review = await need(request, "review", f"/claims/{claim_id}/review")
        task = first(review["tasks"], task_id=str(task_id))
        if task is None:
            raise ConsoleError(404, "error.404")
        if task["stage"] == "sign_off":
            if "approver" not in session.caller.roles:
                raise ConsoleError(403, "error.403")
        elif not session.caller.acts_for(task["department"]):
            # Another department's task: not shown at all (the review service would also
            # refuse the decision).
            raise ConsoleError(403, "error.403")
        claim = await claim_on_my_desk(request, claim_id)
        cat = await catalogue(request)
        return {
            "review": review,
            "task": task,
            "claim": claim,
            "names": doc_names(cat),
            "checklist": checklist(cat, claim["kind"], claim["program_id"]),
        }

    async def claim_on_my_desk(request: Request, claim_id: uuid.UUID) -> Any:
        """Intake's claim for a task review has just shown as the caller's. Intake learns
        which desks a claim is on from review's events, a moment after review made the
        task: a reviewer who opens a brand-new task may get there first, so a
        department_scope refusal is asked again for a few seconds before it stands."""
        deadline = time.monotonic() + DESK_CATCH_UP_S
        while True:
            answer = await call(request, "intake", "GET", f"/claims/{claim_id}")
            if answer.status != 403 or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.2)
        if answer.status in (403, 404):
            raise ConsoleError(answer.status, f"error.{answer.status}", answer.detail)
        if not answer.ok:
            raise ConsoleError(502, "error.unavailable", f"intake: {answer.detail}")
        return answer.body

    @app.get("/review/claims/{claim_id}/tasks/{task_id}")
    async def task_page(
        request: Request, claim_id: uuid.UUID, task_id: uuid.UUID, session: Reviewer
    ) -> HTMLResponse:
        return render(request, "task.html", await task_context(request, session, claim_id, task_id))

    async def decide(
        request: Request,
        department: str,
        task_id: str,
        decision: str,
        comment: str,
        documents: list[str],
    ) -> ApiAnswer:
        body: dict[str, Any] = {"decision": decision, "comment": comment or None}
        if decision == "return":
            body["documents"] = documents
        return await call(
            request,
            "review",
            "POST",
            f"/tasks/{task_id}/decision",
            json=body,
        )

    @app.post("/review/claims/{claim_id}/tasks/{task_id}/decision", response_model=None)
    async def task_decision(
        request: Request,
        claim_id: uuid.UUID,
        task_id: uuid.UUID,
        session: Reviewer,
        form: Form,
    ) -> Response:
        context = await task_context(request, session, claim_id, task_id)
        decision = form_str(form, "decision")
        answer = await decide(
            request,
            context["task"]["department"],
            str(task_id),
            decision,
            form_str(form, "comment"),
            form_list(form, "documents"),
        )
        if answer.ok:
            return RedirectResponse("/review?done=1", status_code=303)
        context["decision_error"] = answer.detail
        context["decision_errors"] = answer.field_errors(session.lang)
        return render(request, "task.html", context, status=answer.status)

    @app.post("/review/bulk-approve", response_model=None)
    async def bulk_approve(request: Request, session: Reviewer, form: Form) -> Response:
        selected = set(form_list(form, "task"))
        # Only what the worklist itself says is this reviewer's and low-risk: the browser's
        # selection is a wish, not a permission.
        eligible = [
            t
            for t in await my_tasks(request, session)
            if t["task_id"] in selected and t["low_risk"]
        ]
        approved, refused = 0, []
        for task in eligible:
            answer = await decide(
                request, task["department"], task["task_id"], "approve", "批量通过 (低风险)", []
            )
            if answer.ok:
                approved += 1
            else:
                refused.append(f"{task['enterprise_name']}: {answer.detail}")
        if refused:
            raise ConsoleError(409, "error.title", "; ".join(refused))
        return RedirectResponse(f"/review?done={approved}", status_code=303)

    # --- approver (联批) ---------------------------------------------------------------

    @app.get("/sign-off")
    async def sign_off_list(request: Request, session: Approver) -> HTMLResponse:
        tasks = await need(request, "review", "/worklist", params={"department": "sign_off"})
        for task in tasks:
            review = await need(request, "review", f"/claims/{task['claim_id']}/review")
            task["opinions"] = [t for t in review["tasks"] if t["stage"] != "sign_off"]
        return render(
            request,
            "signoff.html",
            {"tasks": tasks, "done": request.query_params.get("done", "")},
        )

    @app.post("/sign-off/claims/{claim_id}/tasks/{task_id}", response_model=None)
    async def sign_off(
        request: Request,
        claim_id: uuid.UUID,
        task_id: uuid.UUID,
        session: Approver,
        form: Form,
    ) -> Response:
        await task_context(request, session, claim_id, task_id)
        decision = form_str(form, "decision")
        if decision not in ("approve", "reject"):
            raise ConsoleError(422, "error.title", "decision must be approve or reject")
        answer = await decide(
            request, "sign_off", str(task_id), decision, form_str(form, "comment"), []
        )
        if not answer.ok:
            raise ConsoleError(answer.status, "error.title", answer.detail)
        return RedirectResponse("/sign-off?done=1", status_code=303)

    # --- finance (资金) and audit (审计): their own modules, on the same helpers ---------

    kit = Kit(render=render, call=call, need=need)
    install_finance(app, kit)
    install_dashboard(app, kit)
    install_audit(app, kit)

    # --- public status page (进度查询) --------------------------------------------------

    @app.get("/status")
    async def status_page(request: Request) -> HTMLResponse:
        return render(request, "status.html", {"result": None})

    @app.post("/status")
    async def status_lookup(request: Request, form: Form) -> HTMLResponse:
        client = request.client.host if request.client else "unknown"
        limiter: RateLimiter = request.app.state.status_limiter
        if not limiter.allow(client):
            return render(request, "status.html", {"result": None, "limited": True}, status=429)
        number, uscc = form_str(form, "claim_number"), form_str(form, "uscc").upper()
        context: dict[str, Any] = {"result": None, "claim_number": number, "uscc": uscc}
        try:
            claim_id: uuid.UUID | None = uuid.UUID(number)
        except ValueError:
            claim_id = None
        claim: dict[str, Any] | None = None
        if claim_id is not None and uscc:
            try:
                # Anonymous (the enterprise has no token): intake's open status lookup,
                # which needs the claim number and the USCC and shows nothing else.
                answer = await api(request).call(
                    "intake",
                    "POST",
                    "/public/status",
                    token=None,
                    json={"claim_id": str(claim_id), "uscc": uscc},
                )
            except ServiceUnavailable:
                raise ConsoleError(503, "error.unavailable") from None
            if answer.ok:
                claim = answer.body
        if claim is None:
            # One answer for "no such claim" and "not this enterprise's claim": the page
            # must not tell whether a claim number exists.
            context["not_found"] = True
            return render(request, "status.html", context, status=404)
        cat = await catalogue_public(request)
        # Only what the enterprise may see: no amounts, no bank data, no reviewers' names.
        context["result"] = {
            "status": claim["status"],
            "holders": claim["holders"],
            "to_supply": claim["pending_documents"],
            "due_by": claim["documents_due_by"],
            "step_due_at": claim["step_due_at"],
            "paid": claim["paid"],
        }
        context["names"] = doc_names(cat)
        return render(request, "status.html", context)

    async def catalogue_public(request: Request) -> dict[str, Any]:
        _, cached = request.app.state.programs
        if cached is None:
            answer = await api(request).call("intake", "GET", "/programs", token=None)
            cached = answer.body if answer.ok else {"vat_refund": {"documents": []}, "programs": []}
            if answer.ok:
                request.app.state.programs = (time.monotonic(), cached)
        result: dict[str, Any] = cached
        return result

    return app


VAT_FIELDS = (
    "tax_period",
    "end_credit_balance",
    "base_credit_balance",
    "input_composition_ratio",
    "tax_credit_rating",
)
FORM_FIELDS = (
    "kind",
    "program_id",
    "uscc",
    "enterprise_name",
    "requested_amount",
    *VAT_FIELDS,
    "description",
    "bank_account.bank_name",
    "bank_account.account_name",
    "bank_account.account_number",
)
STATUSES = (
    "submitted",
    "accepted_documents_pending",
    "in_review",
    "returned_for_documents",
    "approved",
    "approved_documents_pending",
    "rejected",
    "payout_requested",
    "payout_sent",
    "payout_failed",
    "paid",
    "withdrawn",
    "lapsed",
)
FINAL_STATUSES = frozenset({"rejected", "paid", "withdrawn", "lapsed"})
