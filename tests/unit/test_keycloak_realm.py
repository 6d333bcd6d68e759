"""deploy/keycloak/claimflow-realm.json, checked structurally. Keycloak itself cannot run
here (no Docker, no JVM image): these checks catch what would make the services refuse
every Keycloak token — a missing role, the department attribute not mapped into the
token, no audience for a service, a console client without PKCE."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.auth.demo_users import load_demo_users
from shared.auth.mint import SERVICE_AUDIENCES
from shared.auth.permissions import ROLES, known_departments, load_policy
from shared.auth.settings import AuthSettings

REALM_FILE = Path(__file__).resolve().parents[2] / "deploy" / "keycloak" / "claimflow-realm.json"


@pytest.fixture(scope="module")
def realm() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REALM_FILE.read_text(encoding="utf-8"))
    return data


def clients(realm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["clientId"]: c for c in realm["clients"]}


def mappers(client: dict[str, Any], kind: str) -> list[dict[str, str]]:
    return [m["config"] for m in client.get("protocolMappers", []) if m["protocolMapper"] == kind]


def test_the_realm_and_its_roles(realm: dict[str, Any]) -> None:
    assert realm["realm"] == "claimflow" and realm["enabled"] is True
    assert realm["sslRequired"] == "external"
    assert realm["registrationAllowed"] is False
    assert [r["name"] for r in realm["roles"]["realm"]] == list(ROLES)


def test_a_resource_server_client_per_service(realm: dict[str, Any]) -> None:
    by_id = clients(realm)
    for service in ("intake", "review", "payout"):
        client = by_id[AuthSettings().audience_for(service)]
        assert client["bearerOnly"] is True and client["publicClient"] is False
        assert not client["standardFlowEnabled"] and not client["directAccessGrantsEnabled"]


def test_the_console_is_a_public_client_with_pkce_s256(realm: dict[str, Any]) -> None:
    console = clients(realm)["claimflow-console"]
    assert console["publicClient"] is True
    assert console["standardFlowEnabled"] is True
    assert console["implicitFlowEnabled"] is False
    assert console["directAccessGrantsEnabled"] is False
    assert console["attributes"]["pkce.code.challenge.method"] == "S256"
    assert console["redirectUris"] and all(
        uri != "*" and not uri.startswith("*") for uri in console["redirectUris"]
    )


@pytest.mark.parametrize("client_id", ["claimflow-console", "claimflow-demo"])
def test_tokens_carry_roles_department_and_the_service_audiences(
    realm: dict[str, Any], client_id: str
) -> None:
    client = clients(realm)[client_id]
    settings = AuthSettings()
    # realm_access.roles comes from Keycloak's built-in "roles" scope.
    assert "realm_access.roles" in settings.roles_claims
    assert "roles" in client["defaultClientScopes"] and "profile" in client["defaultClientScopes"]
    (department,) = mappers(client, "oidc-usermodel-attribute-mapper")
    assert department["user.attribute"] == "department"
    assert department["claim.name"] == settings.department_claim
    assert department["access.token.claim"] == "true"
    assert department["multivalued"] == "true"
    audiences = {
        m["included.client.audience"]
        for m in mappers(client, "oidc-audience-mapper")
        if m["access.token.claim"] == "true"
    }
    assert audiences == set(SERVICE_AUDIENCES)


def test_the_user_profile_declares_the_department_attribute(realm: dict[str, Any]) -> None:
    """Keycloak 24+ drops attributes its user profile does not declare."""
    (provider,) = realm["components"]["org.keycloak.userprofile.UserProfileProvider"]
    profile = json.loads(provider["config"]["kc.user.profile.config"][0])
    (department,) = [a for a in profile["attributes"] if a["name"] == "department"]
    assert department["multivalued"] is True
    assert set(department["validations"]["options"]["options"]) == known_departments()
    assert department["permissions"]["edit"] == ["admin"]  # users cannot move themselves


def test_every_demo_user_has_a_role_and_matches_the_embedded_issuer(
    realm: dict[str, Any],
) -> None:
    policy = load_policy()
    demo = load_demo_users()
    users = {u["username"]: u for u in realm["users"]}
    assert set(users) == {u.id for u in demo.users}
    for expected in demo.users:
        user = users[expected.id]
        assert user["enabled"] is True
        assert user["realmRoles"] and set(user["realmRoles"]) <= set(ROLES), expected.id
        assert user["realmRoles"] == expected.roles
        assert user.get("attributes", {}).get("department", []) == expected.departments
        assert not policy.conflicts(frozenset(user["realmRoles"]))
        (credential,) = user["credentials"]
        assert credential["type"] == "password" and credential["temporary"] is False
    held = {role for u in realm["users"] for role in u["realmRoles"]}
    assert held == set(ROLES)
    reviewers = [u for u in realm["users"] if "reviewer" in u["realmRoles"]]
    assert {d for u in reviewers for d in u["attributes"]["department"]} == known_departments()
