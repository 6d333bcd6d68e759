"""401 and 403 in the project's one error body (``shared.problems.problem``)."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from shared.problems import problem


class AuthProblem(HTTPException):
    """Raised by the auth dependency. An HTTPException, so status and headers are right
    even in an app that never called ``add_auth_error_handler``; that handler gives it the
    project's error body."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str,
        rule: str,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.field = field
        self.rule = rule
        self.message = message or detail


def unauthenticated(rule: str, message: str) -> AuthProblem:
    """401 (RFC 6750: the caller should get a (new) token and try again)."""
    error = "invalid_request" if rule == "required" else "invalid_token"
    description = message.replace('"', "'")
    return AuthProblem(
        401,
        "a valid bearer token is required",
        field="header.Authorization",
        rule=rule,
        message=message,
        headers={"WWW-Authenticate": f'Bearer error="{error}", error_description="{description}"'},
    )


def forbidden(rule: str, message: str, field: str = "token.roles") -> AuthProblem:
    return AuthProblem(
        403,
        message,
        field=field,
        rule=rule,
        message=message,
        headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
    )


def unavailable(message: str) -> AuthProblem:
    """The issuer's keys cannot be had: not the caller's fault, retry later."""
    return AuthProblem(
        503,
        "the identity provider's keys are unavailable; retry later",
        field="header.Authorization",
        rule="issuer_unavailable",
        message=message,
        headers={"Retry-After": "5"},
    )


async def _render(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthProblem)
    return problem(
        exc.status_code,
        str(exc.detail),
        field=exc.field,
        rule=exc.rule,
        message=exc.message,
        headers=dict(exc.headers or {}),
    )


def add_auth_error_handler(app: FastAPI) -> None:
    app.add_exception_handler(AuthProblem, _render)
