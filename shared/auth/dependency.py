"""The FastAPI side: ``install_auth(app, service=...)`` once, then ``require(permission)``
on every route.

    @router.post("/claims")
    async def register(caller: Annotated[Caller, Depends(require("claims.register"))]): ...
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.audit.chain import bind_actor
from shared.auth.caller import Caller
from shared.auth.errors import add_auth_error_handler, forbidden, unauthenticated
from shared.auth.permissions import Policy, known_departments, load_policy
from shared.auth.settings import AuthSettings
from shared.auth.verify import TokenVerifier

log = logging.getLogger(__name__)

bearer = HTTPBearer(
    auto_error=False,
    description="A JWT from a trusted issuer (the embedded issuer, or Keycloak)",
)


class Authenticator(Protocol):
    async def authenticate(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> Caller: ...

    async def aclose(self) -> None: ...


class BearerAuthenticator:
    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def authenticate(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> Caller:
        if credentials is None:
            raise unauthenticated("required", "send Authorization: Bearer <token>")
        return await self.verifier.verify(credentials.credentials)

    async def aclose(self) -> None:
        await self.verifier.aclose()


class InsecureDevHeaders:
    """CLAIMFLOW_AUTH_MODE=insecure-dev: the caller names itself in X-User-Id, X-Role and
    X-Department (comma-separated). For poking at a local service by hand only (Camunda's
    no-auth mode, same spirit); nothing in the project's tests or demo uses it."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        log.critical(
            "CLAIMFLOW_AUTH_MODE=insecure-dev: callers are NOT authenticated; anyone "
            "reaching this port can act as anyone. Never run like this outside a laptop."
        )

    async def authenticate(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> Caller:
        subject = request.headers.get("x-user-id", "")
        if not subject:
            raise unauthenticated("required", "insecure-dev mode: send X-User-Id")
        roles = frozenset(
            r.strip() for r in request.headers.get("x-role", "").split(",") if r.strip()
        ) & frozenset(self.policy.roles)
        departments = (
            frozenset(
                d.strip() for d in request.headers.get("x-department", "").split(",") if d.strip()
            )
            & known_departments()
        )
        log.warning(
            "insecure-dev: %s %s as %r (roles %s) without authentication",
            request.method,
            request.url.path,
            subject,
            sorted(roles),
        )
        return Caller(
            subject=subject,
            name=subject,
            issuer="insecure-dev",
            roles=roles,
            departments=departments,
            permissions=self.policy.grant(roles, departments),
        )

    async def aclose(self) -> None:
        return None


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def build_authenticator(
    service: str,
    settings: AuthSettings | None = None,
    policy: Policy | None = None,
    *,
    http_host: str = "127.0.0.1",
) -> Authenticator:
    """The service's authenticator. ``http_host`` is the address the service listens on:
    insecure-dev is refused unless that is loopback (Camunda's rule: no-auth only for
    local development)."""
    settings = settings or AuthSettings()
    policy = policy or load_policy()
    if settings.mode == "insecure-dev":
        if http_host not in LOOPBACK:
            raise ValueError(
                f"CLAIMFLOW_AUTH_MODE=insecure-dev on {http_host}: only on a loopback address"
            )
        return InsecureDevHeaders(policy)
    return BearerAuthenticator(
        TokenVerifier(settings, audience=settings.audience_for(service), policy=policy)
    )


def install_auth(app: FastAPI, authenticator: Authenticator) -> None:
    """Makes ``require`` work in this app and renders its 401/403 in the one error body.
    The caller closes the authenticator (``aclose``) in the app's lifespan."""
    app.state.auth = authenticator
    add_auth_error_handler(app)


async def authorize(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None,
    wanted: Sequence[str],
    policy: Policy,
) -> Caller:
    """The verified caller holding one of ``wanted``; else 401 / 403 naming the permission.

    The verified caller is kept on the request (``request.state.caller``) for the
    route's own checks (segregation of duties, department scope)."""
    authenticator: Authenticator | None = getattr(request.app.state, "auth", None)
    if authenticator is None:
        raise RuntimeError("install_auth(app, ...) was not called for this app")
    caller = await authenticator.authenticate(request, credentials)
    conflicts = policy.conflicts(caller.roles)
    if conflicts:
        pairs = ", ".join(f"{a}+{b}" for a, b in conflicts)
        raise forbidden(
            "role_conflict",
            f"the token holds mutually exclusive roles ({pairs}); ask for one of them",
        )
    if not any(caller.can(name) for name in wanted):
        granting = sorted({role for name in wanted for role in policy.roles_granting(name)})
        scoped = [
            r for r in caller.roles if policy.roles[r].scope == "department"
        ] and not caller.departments
        hint = " (a reviewer needs a department claim)" if scoped else ""
        raise forbidden(
            "permission",
            f"missing permission {' or '.join(wanted)}: granted to {', '.join(granting)}; "
            f"the token's roles are [{', '.join(sorted(caller.roles))}]{hint}",
            field=f"permission.{wanted[0]}",
        )
    request.state.caller = caller
    # The audit chain names the token's subject as the actor of what this request changes.
    bind_actor(caller.subject)
    return caller


def require(permission: str, *alternatives: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the verified caller, who holds ``permission`` (or one of the
    ``alternatives``: a route serving two kinds of object, e.g. a review task that is a
    department task or a sign-off, whose handler then checks the one that fits);
    else 401 / 403."""
    policy = load_policy()
    wanted = (permission, *alternatives)
    for name in wanted:
        if name not in policy.permissions:
            # A typo in a route must fail at import, not grant or refuse at random.
            raise ValueError(f"unknown permission {name!r} (see shared/auth/permissions.yaml)")

    async def caller_with_permission(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        return await authorize(request, credentials, wanted, policy)

    caller_with_permission.__name__ = "require_" + "_or_".join(
        name.replace(".", "_") for name in wanted
    )
    return caller_with_permission
