"""Who is calling, for the routes: the caller the bearer token proved.

``shared.auth.enforce`` verifies the token and checks the route's permission before any
route code runs and leaves the verified ``shared.auth.caller.Caller`` on the request.
The routes take it through ``current_caller`` in the shape the use cases have always
received: ``user_id`` is the token's subject (exact: no case folding — people are
compared on it), ``department`` the token's one department (a token naming several
acts for none of them in a department task: the use cases decide per department),
``role`` ``approver`` for an approver, else the token's first role.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from shared.auth.caller import Caller as VerifiedCaller
from shared.auth.errors import unauthenticated


@dataclass(frozen=True)
class Caller:
    user_id: str
    department: str | None
    role: str | None
    verified: VerifiedCaller | None = None

    @classmethod
    def of(cls, caller: VerifiedCaller) -> Caller:
        departments = sorted(caller.departments)
        roles = sorted(caller.roles)
        return cls(
            user_id=caller.subject,
            department=departments[0] if len(departments) == 1 else None,
            role="approver" if "approver" in caller.roles else (roles[0] if roles else None),
            verified=caller,
        )


async def current_caller(request: Request) -> Caller:
    verified: VerifiedCaller | None = getattr(request.state, "caller", None)
    if verified is None:
        # Only a route the permission table calls open could get here.
        raise unauthenticated("required", "send Authorization: Bearer <token>")
    return Caller.of(verified)


CallerDep = Annotated[Caller, Depends(current_caller)]
"""Who calls, as a route parameter: the verified token's subject, role and department."""
