"""Request plumbing shared by the console's routes: sessions on the request, CSRF-checked
forms, sign-in and role requirements, error pages, the per-IP rate limit."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData

from services.console.api import ApiAnswer
from services.console.session import CSRF_FIELD, CSRF_HEADER, Session, csrf_ok
from shared.contracts.common import FINANCE_ROLES as FINANCE_ROLES

# Finance staff (FINANCE_ROLES): the finance screens, full bank account numbers.
DASHBOARD_ROLES = FINANCE_ROLES | {"admin"}
"""Who gets the header's link to the Grafana dashboards (finance, and operations)."""


@dataclass(frozen=True)
class Kit:
    """What the screens of services/console/finance.py and audit.py need from the app
    (created in app.create_app): render a template, call a service, GET or fail."""

    render: Callable[..., HTMLResponse]
    call: Callable[..., Awaitable[ApiAnswer]]
    need: Callable[..., Awaitable[Any]]


class ConsoleError(Exception):
    """Shown as an error page with this status and message key (services/console/i18n)."""

    def __init__(self, status: int, key: str, detail: str = "") -> None:
        super().__init__(key)
        self.status = status
        self.key = key
        self.detail = detail


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def session_of(request: Request) -> Session:
    session: Session = request.state.session
    return session


async def checked_form(request: Request) -> FormData:
    """Every state-changing request: the form (or htmx header) must carry the session's
    CSRF token. A dependency of every POST route (tests/unit/test_console_app.py checks
    that none is missing)."""
    form = await request.form()
    presented = request.headers.get(CSRF_HEADER)
    if presented is None:
        value = form.get(CSRF_FIELD)
        presented = value if isinstance(value, str) else None
    if not csrf_ok(session_of(request), presented):
        raise ConsoleError(403, "error.csrf")
    return form


def signed_in(request: Request) -> Session:
    session = session_of(request)
    if not session.signed_in(time.time()):
        raise LoginRequired(safe_next(request.url.path))
    return session


def with_role(*roles: str) -> Callable[[Request], Session]:
    def dependency(request: Request) -> Session:
        session = signed_in(request)
        assert session.caller is not None
        if not session.caller.roles & set(roles):
            raise ConsoleError(403, "error.403")
        return session

    return dependency


def safe_next(path: str | None) -> str:
    """Only paths of this console: no scheme, no host, no ``//evil`` nor ``/\\evil``."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def form_str(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def form_list(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str) and v]


class RateLimiter:
    """At most ``limit`` events per ``window_s`` per key (sliding window), in memory."""

    def __init__(
        self, limit: int, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        events = self._events.setdefault(key, deque())
        while events and now - events[0] > self.window_s:
            events.popleft()
        if len(events) >= self.limit:
            return False
        events.append(now)
        if len(self._events) > 50_000:
            # Forget idle keys so a scan from many addresses cannot grow memory forever.
            for k in [k for k, v in self._events.items() if not v]:
                del self._events[k]
        return True


def first(items: Iterable[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((i for i in items if all(i.get(k) == v for k, v in match.items())), None)
