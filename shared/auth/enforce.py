"""Every route guarded by the permission the table names (permissions.yaml ``endpoints``).

The services do not sprinkle ``require(...)`` over their routes: one app-level
dependency looks up the matched route (``METHOD /path/{template}``) in the table,
verifies the bearer token and checks the permission before any route code runs; the
route then reads the verified caller (``shared.identity.current_caller``). At start the
service compares its routes with the table: a route the table does not name, or a table
line naming no route, stops the service — so no route ships unguarded and the table in
the docs is the truth.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials

from shared.auth.dependency import Authenticator, authorize, bearer, install_auth
from shared.auth.errors import forbidden
from shared.auth.permissions import Policy, load_policy


def route_key(method: str, path: str) -> str:
    return f"{method.upper()} {path}"


async def enforce_route_permission(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """App-level dependency: the caller must hold the matched route's permission."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    if path is None:  # not a FastAPI route (docs pages are served without one)
        return
    policy = load_policy()
    method = "GET" if request.method == "HEAD" else request.method
    key = route_key(method, path)
    if key in policy.open:
        return
    service: str = request.app.state.auth_service
    wanted = policy.endpoints.get(service, {}).get(key)
    if wanted is None:
        # Unreachable after the start-up check; refusing is the safe answer anyway.
        raise forbidden("unlisted", f"{key} is in no permission table", field="path")
    await authorize(request, credentials, wanted, policy)


def api_routes(app: FastAPI) -> set[str]:
    """``METHOD /path`` of every operation of the app, documented or not."""
    found: set[str] = set()
    for path, operations in app.openapi().get("paths", {}).items():
        for method in operations:
            found.add(route_key(method, path))
    return found


def check_route_table(app: FastAPI, service: str, policy: Policy | None = None) -> None:
    """Raise when a route has no permission line, or a line names no route."""
    policy = policy or load_policy()
    table = set(policy.endpoints.get(service, {}))
    routes = api_routes(app) - set(policy.open)
    unguarded = sorted(routes - table)
    stale = sorted(table - routes)
    if unguarded or stale:
        raise RuntimeError(
            f"{service}: routes without a permission in shared/auth/permissions.yaml "
            f"{unguarded}; table lines naming no route {stale}"
        )


def guard_service(app: FastAPI, service: str, authenticator: Authenticator) -> None:
    """Install the authenticator and check the route table (call after the routes exist)."""
    install_auth(app, authenticator)
    app.state.auth_service = service
    check_route_table(app, service)
