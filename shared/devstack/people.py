"""The demo's people and their tokens.

Embedded stack: minted with the embedded issuer's key in the stack's data folder, so the
services verify them like any other token. docker-compose: asked from Keycloak with the
password grant of the realm's ``claimflow-demo`` client for the demo users (Keycloak
decides their roles; the roles named here must be the user's own).

``use(People.of_stack(info))`` once (the demo does it); then ``headers(user, *roles)``
anywhere in the demo's bots.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from shared.auth.cli_token import token_for
from shared.auth.demo_users import load_demo_users

TOKEN_TTL_S = 3600
_minted: dict[tuple[str, str, str, tuple[str, ...], tuple[str, ...]], tuple[str, float]] = {}
"""Tokens already minted, with when they expire: minted again a minute before, since a
chaos campaign or a long test run on a loaded machine outlives an hour."""


def _now() -> float:
    return time.time()


def _token(
    data_dir: str, issuer: str, user: str, roles: tuple[str, ...], departments: tuple[str, ...]
) -> str:
    key = (data_dir, issuer, user, roles, departments)
    held = _minted.get(key)
    if held is not None and held[1] > _now() + 60:
        return held[0]
    expires = _now() + TOKEN_TTL_S
    token = token_for(Path(data_dir), user, roles, departments, issuer=issuer, ttl_s=TOKEN_TTL_S)
    _minted[key] = (token, expires)
    return token


@dataclass
class PasswordGrant:
    """Tokens from an OIDC issuer's token endpoint (Keycloak in docker-compose)."""

    issuer: str
    client_id: str = "claimflow-demo"
    client_secret: str = "claimflow-demo-secret"
    token_endpoint: str | None = None
    cached: dict[str, tuple[str, float]] = field(default_factory=dict)

    def token(self, user: str) -> str:
        held = self.cached.get(user)
        if held is not None and held[1] > time.time() + 30:
            return held[0]
        if self.token_endpoint is None:
            discovery = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=10)
            discovery.raise_for_status()
            self.token_endpoint = str(discovery.json()["token_endpoint"])
        # A few fetches per demo (one per person and token lifetime): sync is fine here.
        answer = httpx.post(
            self.token_endpoint,
            data={
                "grant_type": "password",
                "client_id": self.client_id,
                "client_secret": self.client_secret,
                "username": user,
                "password": load_demo_users().password,
                "scope": "openid",
            },
            timeout=10,
        )
        answer.raise_for_status()
        body = answer.json()
        self.cached[user] = (body["access_token"], time.time() + float(body["expires_in"]))
        return str(body["access_token"])


@dataclass(frozen=True)
class People:
    data_dir: Path | None
    issuer: str
    grant: PasswordGrant | None = None

    @classmethod
    def of_issuer(
        cls, issuer: str, client_id: str | None = None, client_secret: str | None = None
    ) -> People:
        grant = PasswordGrant(issuer)
        grant.client_id = client_id or grant.client_id
        grant.client_secret = client_secret or grant.client_secret
        return cls(None, issuer, grant)

    @classmethod
    def of_stack(cls, info: dict[str, Any]) -> People:
        """From the stack's description (``claimflow stack up`` / stack.json), or the
        issuer named for an external deployment (``issuer_url``)."""
        if info.get("issuer_url"):
            return cls.of_issuer(
                str(info["issuer_url"]),
                info.get("issuer_client_id"),
                info.get("issuer_client_secret"),
            )
        return cls(Path(info["data_dir"]), f"http://127.0.0.1:{info['ports']['issuer']}")

    def headers(self, user: str, *roles: str, departments: Sequence[str] = ()) -> dict[str, str]:
        """``Authorization`` for ``user`` (a demo user's own roles when none are named)."""
        if self.grant is not None:
            return {"Authorization": f"Bearer {self.grant.token(user)}"}
        assert self.data_dir is not None
        token = _token(str(self.data_dir), self.issuer, user, tuple(roles), tuple(departments))
        return {"Authorization": f"Bearer {token}"}


_current: list[People] = []


def use(people: People) -> None:
    _current[:] = [people]


def headers(user: str, *roles: str, departments: Sequence[str] = ()) -> dict[str, str]:
    if not _current:
        raise RuntimeError("no stack's people: call shared.devstack.people.use(...) first")
    return _current[0].headers(user, *roles, departments=departments)
