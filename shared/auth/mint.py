"""Minting tokens with the embedded issuer's key (library, ``claimflow token``, tests).

The claims follow Keycloak's shape (``realm_access.roles``, a ``department`` attribute),
so the services' default claim mapping reads both issuers' tokens alike.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import jwt

from shared.auth.keys import ALGORITHM, SigningKey

SERVICE_AUDIENCES = ("claimflow-intake", "claimflow-review", "claimflow-payout")
DEFAULT_TTL_S = 3600


def token_claims(
    *,
    issuer: str,
    subject: str,
    audience: str | Iterable[str] = SERVICE_AUDIENCES,
    roles: Iterable[str] = (),
    departments: Iterable[str] = (),
    name: str | None = None,
    ttl_s: int = DEFAULT_TTL_S,
    now: float | None = None,
    client_id: str = "claimflow-cli",
) -> dict[str, Any]:
    issued = int(time.time() if now is None else now)
    aud = audience if isinstance(audience, str) else list(audience)
    return {
        "iss": issuer,
        "sub": subject,
        "aud": aud,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
        "jti": str(uuid.uuid4()),
        "azp": client_id,
        "typ": "Bearer",
        "name": name or subject,
        "preferred_username": subject,
        "realm_access": {"roles": sorted(set(roles))},
        "department": sorted(set(departments)),
    }


def sign(key: SigningKey, claims: Mapping[str, Any]) -> str:
    return jwt.encode(dict(claims), key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


def mint_token(key: SigningKey, **claims: Any) -> str:
    """``mint_token(key, issuer=..., subject=..., roles=[...], departments=[...])``."""
    return sign(key, token_claims(**claims))
