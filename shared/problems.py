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
