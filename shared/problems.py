"""The one shape of every 4xx/5xx answer: what went wrong, and per field the rule broken.

{"detail": "...", "errors": [{"field": "...", "rule": "...", "message": "..."}]}
"""

from __future__ import annotations

from fastapi.responses import JSONResponse


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
        {
            "detail": detail,
            "errors": [{"field": field, "rule": rule, "message": message or detail}],
        },
        status_code=status,
        headers=headers,
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
