"""Department scope of reads: a reviewer sees the claims on their department's desk.

A tax-office reviewer is given the cases on the tax desk, nothing else (issue 11). A
claim is on a department's desk when review put it before that department — it has or
had a task of that department; the window, approvers, finance and auditors read as
before. Who is scoped follows from the permission table: a caller whose every role
granting the read permission is department-scoped (``scope: department`` in
permissions.yaml, the ``reviewer``) reads only the desks of the token's departments; a
caller holding the permission through any unscoped role reads everything it covers.

The services apply the scope in their read queries (a ``WHERE`` on the departments), so
what lies on another desk is never fetched. A single claim off the caller's desks is
refused with 403 ``department_scope`` — the same answer, field and message for a claim
that does not exist, so the refusal tells nothing about which claim ids exist; 403
because that is how the project already answers a reviewer opening another
department's task (the console's "not your department's task" page).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from shared.auth.caller import Caller
from shared.auth.errors import unauthenticated
from shared.auth.permissions import Policy, load_policy
from shared.problems import Forbidden

Desks = list[str] | None
"""The departments whose desks a caller reads (sorted), or None: no department scope."""


def desks_of(caller: Caller, permission: str, policy: Policy | None = None) -> Desks:
    """The desks ``caller`` may read under ``permission``: None when some role of the
    caller grants it without a department scope, else the token's departments (empty: no
    desk at all, which reads nothing)."""
    policy = policy or load_policy()
    granting = [
        policy.roles[role]
        for role in caller.roles
        if role in policy.roles and permission in policy.roles[role].permissions
    ]
    if any(rule.scope is None for rule in granting):
        return None
    return sorted(caller.departments)


def read_scope(permission: str) -> Callable[[Request], Awaitable[Desks]]:
    """A route dependency: the desks the verified caller reads under ``permission``."""
    policy = load_policy()
    if permission not in policy.permissions:
        raise ValueError(f"unknown permission {permission!r} (see shared/auth/permissions.yaml)")

    async def desks(request: Request) -> Desks:
        caller: Caller | None = getattr(request.state, "caller", None)
        if caller is None:
            # Only a route the permission table calls open could get here.
            raise unauthenticated("required", "send Authorization: Bearer <token>")
        return desks_of(caller, permission, policy)

    desks.__name__ = "desks_for_" + permission.replace(".", "_")
    return desks


ClaimsReadDesks = Annotated[Desks, Depends(read_scope("claims.read"))]
ReviewReadDesks = Annotated[Desks, Depends(read_scope("review.read"))]
WorklistDesks = Annotated[Desks, Depends(read_scope("review.worklist.read"))]


def off_desk(desks: list[str]) -> Forbidden:
    """The refusal of a claim that is not on ``desks`` — or does not exist: one answer
    for both (byte for byte), naming the caller's desks and nothing of the claim."""
    return Forbidden(
        "the claim is not on the desk of your department(s) "
        f"{', '.join(desks) or '(none)'}: a reviewer reads only the claims review put "
        "before their department",
        field="claim_id",
        rule="department_scope",
    )


def off_desk_worklist(department: str, desks: list[str]) -> Forbidden:
    return Forbidden(
        f"the {department} worklist is not yours: a reviewer reads the worklist of their "
        f"department(s) {', '.join(desks) or '(none)'}",
        field="query.department",
        rule="department_scope",
    )
