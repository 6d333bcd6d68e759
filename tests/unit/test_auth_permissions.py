"""require(permission) on a tiny FastAPI app; the role → permission table; demo users."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI

from shared.auth import Caller, install_auth, require
from shared.auth.demo_users import load_demo_users
from shared.auth.dependency import BearerAuthenticator, build_authenticator
from shared.auth.issuer import Issuer
from shared.auth.permissions import ROLES, known_departments, load_policy
from shared.auth.settings import AuthSettings
from tests.auth_fixtures import Requests, in_process_issuer, token, verifier_for


def tiny_app(issuer: Issuer) -> FastAPI:
    app = FastAPI()
    install_auth(app, BearerAuthenticator(verifier_for(issuer, requests=Requests())))

    @app.get("/claims")
    async def list_claims(caller: Annotated[Caller, Depends(require("claims.read"))]) -> Any:
        return {"subject": caller.subject, "roles": sorted(caller.roles)}

    @app.post("/claims")
    async def register(caller: Annotated[Caller, Depends(require("claims.register"))]) -> Any:
        return {"registered_by": caller.subject}

    @app.post("/tasks/{task_id}/decision")
    async def decide(
        task_id: str, caller: Annotated[Caller, Depends(require("review.decide"))]
    ) -> Any:
        return {"departments": sorted(caller.departments)}

    @app.post("/tasks/{task_id}/any-decision")
    async def decide_or_sign(
        task_id: str,
        caller: Annotated[Caller, Depends(require("review.decide", "review.sign_off"))],
    ) -> Any:
        return {"can_sign_off": caller.can("review.sign_off")}

    return app


@pytest.fixture
async def issuer() -> Issuer:
    return in_process_issuer()


@pytest.fixture
async def client(issuer: Issuer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=tiny_app(issuer))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        yield http


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def only_error(response: httpx.Response) -> dict[str, str]:
    body = response.json()
    assert set(body) == {"detail", "errors"}, body
    assert len(body["errors"]) == 1
    error: dict[str, str] = body["errors"][0]
    return error


async def test_a_permitted_caller_gets_through(client: httpx.AsyncClient, issuer: Issuer) -> None:
    response = await client.post("/claims", headers=bearer(token(issuer, subject="window-02")))
    assert response.status_code == 200
    assert response.json() == {"registered_by": "window-02"}


async def test_no_token_is_401_in_the_one_error_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/claims")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer error="invalid_request"')
    error = only_error(response)
    assert (error["field"], error["rule"]) == ("header.Authorization", "required")


async def test_the_old_identity_headers_are_not_accepted(client: httpx.AsyncClient) -> None:
    headers = {"X-User-Id": "window-01", "X-Role": "window_clerk", "X-Department": "tax"}
    response = await client.post("/claims", headers=headers)
    assert response.status_code == 401
    assert only_error(response)["rule"] == "required"


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (lambda i: "Basic d2luZG93LTAxOng=", "required"),
        (lambda i: "Bearer not-a-jwt", "malformed"),
        (lambda i: "Bearer " + token(i, exp=1_000_000), "expired"),
        (lambda i: "Bearer " + token(i, audience="claimflow-payout"), "audience"),
        (lambda i: "Bearer " + token(i, iss="http://elsewhere.test"), "issuer"),
    ],
)
async def test_bad_tokens_are_401(
    client: httpx.AsyncClient, issuer: Issuer, make: Any, rule: str
) -> None:
    response = await client.get("/claims", headers={"Authorization": make(issuer)})
    assert response.status_code == 401
    assert only_error(response)["rule"] == rule
    assert "WWW-Authenticate" in response.headers


async def test_reads_need_a_permission_too(client: httpx.AsyncClient, issuer: Issuer) -> None:
    raw = token(issuer, subject="nobody", roles=())
    response = await client.get("/claims", headers=bearer(raw))
    assert response.status_code == 403


async def test_403_names_the_missing_permission(client: httpx.AsyncClient, issuer: Issuer) -> None:
    raw = token(issuer, subject="auditor-zhou", roles=("auditor",))
    assert (await client.get("/claims", headers=bearer(raw))).status_code == 200
    response = await client.post("/claims", headers=bearer(raw))
    assert response.status_code == 403
    error = only_error(response)
    assert error["field"] == "permission.claims.register"
    assert error["rule"] == "permission"
    assert "claims.register" in error["message"] and "window_clerk" in error["message"]
    assert "[auditor]" in error["message"]


async def test_a_reviewer_needs_a_department(client: httpx.AsyncClient, issuer: Issuer) -> None:
    with_dept = token(issuer, subject="tax-reviewer-1", roles=("reviewer",), departments=("tax",))
    response = await client.post("/tasks/t1/decision", headers=bearer(with_dept))
    assert (response.status_code, response.json()) == (200, {"departments": ["tax"]})
    without = token(issuer, subject="lost-reviewer", roles=("reviewer",))
    response = await client.post("/tasks/t1/decision", headers=bearer(without))
    assert response.status_code == 403
    assert "department" in only_error(response)["message"]


async def test_one_of_several_permissions(client: httpx.AsyncClient, issuer: Issuer) -> None:
    approver = token(issuer, subject="leader-li", roles=("approver",))
    response = await client.post("/tasks/t1/any-decision", headers=bearer(approver))
    assert (response.status_code, response.json()) == (200, {"can_sign_off": True})
    clerk = token(issuer, subject="window-01", roles=("window_clerk",))
    response = await client.post("/tasks/t1/any-decision", headers=bearer(clerk))
    assert response.status_code == 403
    message = only_error(response)["message"]
    assert "review.decide or review.sign_off" in message
    assert "approver" in message and "reviewer" in message


async def test_mutually_exclusive_roles_are_refused(
    client: httpx.AsyncClient, issuer: Issuer
) -> None:
    raw = token(issuer, roles=("reviewer", "approver"), departments=("tax",))
    response = await client.get("/claims", headers=bearer(raw))
    assert response.status_code == 403
    error = only_error(response)
    assert error["rule"] == "role_conflict" and "reviewer+approver" in error["message"]


async def test_the_openapi_document_declares_bearer_auth(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert spec["paths"]["/claims"]["post"]["security"] == [{"HTTPBearer": []}]


def test_an_unknown_permission_fails_at_import_time() -> None:
    with pytest.raises(ValueError, match="unknown permission"):
        require("claims.delete_everything")


async def test_insecure_dev_mode_is_explicit_and_loud(caplog: pytest.LogCaptureFixture) -> None:
    assert AuthSettings().mode == "oidc"  # the default never trusts headers
    with pytest.raises(ValueError, match="loopback"):
        build_authenticator("intake", AuthSettings(mode="insecure-dev"), http_host="0.0.0.0")
    app = FastAPI()
    with caplog.at_level(logging.WARNING):
        install_auth(app, build_authenticator("intake", AuthSettings(mode="insecure-dev")))
    assert any(
        r.levelno == logging.CRITICAL and "NOT authenticated" in r.message for r in caplog.records
    )

    @app.post("/claims")
    async def register(caller: Annotated[Caller, Depends(require("claims.register"))]) -> Any:
        return {"by": caller.subject, "issuer": caller.issuer}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as http:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            ok = await http.post("/claims", headers={"X-User-Id": "w", "X-Role": "window_clerk"})
        assert ok.json() == {"by": "w", "issuer": "insecure-dev"}
        assert any("without authentication" in r.message for r in caplog.records)
        assert (await http.post("/claims", headers={"X-User-Id": "w"})).status_code == 403


def test_the_table_has_the_seven_roles_and_no_dead_permission() -> None:
    policy = load_policy()
    assert tuple(policy.roles) == ROLES
    for permission in policy.permissions:
        assert policy.roles_granting(permission), f"{permission} is granted to nobody"
    assert policy.roles["reviewer"].scope == "department"


def test_segregation_of_duties_in_the_table() -> None:
    policy = load_policy()
    assert policy.conflicts(frozenset({"reviewer", "approver"}))
    assert policy.conflicts(frozenset({"finance_clerk", "finance_supervisor"}))
    assert not policy.grant(frozenset({"auditor"}), frozenset()) & {
        "claims.register", "review.decide", "review.sign_off", "funds.top_up",
        "payouts.correct_account", "statements.import", "dead_letters.replay",
    }  # fmt: skip
    admin = policy.grant(frozenset({"admin"}), frozenset())
    assert not admin & {"review.decide", "review.sign_off", "funds.top_up", "claims.register"}


def test_demo_users_cover_every_role_and_every_department() -> None:
    users = load_demo_users().users
    assert {r for u in users for r in u.roles} == set(ROLES)
    reviewer_departments = {d for u in users if "reviewer" in u.roles for d in u.departments}
    assert reviewer_departments == known_departments() == {"tax", "finance", "industry", "treasury"}
    assert len({u.id for u in users}) == len(users)
