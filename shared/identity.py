"""Who is calling. Until real authentication arrives, callers name themselves in headers;
this is the one place to swap for a token check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Header, HTTPException


@dataclass(frozen=True)
class Caller:
    user_id: str
    department: str | None
    role: str | None


def current_caller(
    x_user_id: Annotated[str | None, Header(description="Caller's user id")] = None,
    x_department: Annotated[str | None, Header(description="Caller's department")] = None,
    x_role: Annotated[str | None, Header(description="Caller's role")] = None,
) -> Caller:
    if not x_user_id or not x_user_id.strip():
        raise HTTPException(
            status_code=401,
            detail={"field": "header.X-User-Id", "rule": "required", "message": "name the caller"},
        )
    return Caller(user_id=x_user_id.strip(), department=x_department, role=x_role)
