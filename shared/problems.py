"""The one shape of every 4xx/5xx answer: what went wrong, and per field the rule broken.

{"detail": "...", "errors": [{"field": "...", "rule": "...", "message": "..."}]}
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


def problem_body(detail: str, field: str, rule: str, message: str | None = None) -> dict[str, Any]:
    """The one error body, naming one field and the one rule it broke (``message``
    defaults to ``detail``)."""
    return {
        "detail": detail,
        "errors": [{"field": field, "rule": rule, "message": message or detail}],
    }


def problem(
    status: int,
    detail: str,
    field: str,
    rule: str,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An answer naming one field and the one rule it broke."""
    return JSONResponse(
        problem_body(detail, field, rule, message), status_code=status, headers=headers
    )


MAX_ERRORS_SHOWN = 20
"""An answer lists at most this many broken rules: a body with thousands of bad items
must not come back as a multi-megabyte error (the first ones say what to fix)."""


def cap_errors(errors: list[dict[str, str]]) -> list[dict[str, str]]:
    """The first ``MAX_ERRORS_SHOWN`` errors, and one entry saying how many were left out."""
    if len(errors) <= MAX_ERRORS_SHOWN:
        return errors
    left_out = len(errors) - MAX_ERRORS_SHOWN
    return [
        *errors[:MAX_ERRORS_SHOWN],
        {
            "field": "",
            "rule": "too_many_errors",
            "message": f"{left_out} more errors not shown; fix the ones above and resend",
        },
    ]


class Refusal(Exception):
    """The one error hierarchy of the use cases: a refusal naming the field and the rule.

    Use cases raise a subclass; every service app maps it to the one error body with the
    subclass's status (``service_app`` registers the handler), so no route translates
    errors by hand. A refusal is raised before anything changed (the unit of work rolls
    back), which is what makes it safe to show.
    """

    status_code = 422

    def __init__(self, message: str, *, field: str = "", rule: str = "invalid") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.rule = rule

    def body(self) -> dict[str, Any]:
        return problem_body(self.message, self.field, self.rule)


class Invalid(Refusal):
    """The request breaks a rule of the domain (422)."""


class NotFound(Refusal):
    status_code = 404

    def __init__(self, message: str, *, field: str = "path", rule: str = "exists") -> None:
        super().__init__(message, field=field, rule=rule)


class Forbidden(Refusal):
    """The caller may not do this (segregation of duties, wrong department)."""

    status_code = 403

    def __init__(self, message: str, *, field: str = "caller", rule: str = "allowed") -> None:
        super().__init__(message, field=field, rule=rule)


class Conflict(Refusal):
    """The request does not fit the current state (already decided, closed, …)."""

    status_code = 409


def refusal_response(refusal: Refusal) -> JSONResponse:
    return JSONResponse(refusal.body(), status_code=refusal.status_code)
