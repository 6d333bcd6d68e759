"""Bearer token → Caller: signature against the issuer's JWKS, iss, aud, exp/nbf with
leeway, then the claim mapping and the permission table."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from jwt.exceptions import (
    DecodeError,
    ExpiredSignatureError,
    ImmatureSignatureError,
    InvalidAudienceError,
    InvalidIssuedAtError,
    InvalidIssuerError,
    InvalidSignatureError,
    InvalidTokenError,
    MissingRequiredClaimError,
)

from shared.auth.caller import Caller
from shared.auth.errors import AuthProblem, unauthenticated, unavailable
from shared.auth.jwks import JwksCache, KeysUnavailable
from shared.auth.permissions import Policy, known_departments, load_policy
from shared.auth.settings import AuthSettings

log = logging.getLogger(__name__)

# Tokens are headers; anything longer than this is not a token we issued or trust.
MAX_TOKEN_LENGTH = 16_384


def claim(claims: dict[str, Any], path: str) -> Any:
    """``realm_access.roles`` → claims["realm_access"]["roles"]; None when absent."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


class TokenVerifier:
    """Verifies tokens of the trusted issuers for one audience. Holds one JWKS cache per
    issuer (OpenSPP's issuer-keyed verification) and one httpx client; ``aclose`` it."""

    def __init__(
        self,
        settings: AuthSettings,
        *,
        audience: str,
        policy: Policy | None = None,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.issuers:
            raise ValueError("CLAIMFLOW_AUTH_ISSUERS names no trusted issuer")
        self.settings = settings
        self.audience = audience
        self.policy = policy or load_policy()
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=settings.http_timeout_s)
        self.caches = {
            issuer: JwksCache(
                issuer,
                self._client,
                jwks_url=settings.jwks_urls.get(issuer),
                max_age_s=settings.jwks_max_age_s,
                min_refresh_interval_s=settings.jwks_min_refresh_interval_s,
                clock=clock,
            )
            for issuer in settings.issuers
        }

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def verify(self, token: str) -> Caller:
        """The caller the token vouches for, or AuthProblem (401; 503 when the issuer's
        keys cannot be had)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise unauthenticated("malformed", "the bearer token is empty or too long")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except InvalidTokenError as exc:
            raise unauthenticated("malformed", f"not a JWT: {exc}") from None

        algorithm = header.get("alg")
        if algorithm not in self.settings.algorithms:
            # Checked before any key is touched: "none" and HS256-with-the-public-key
            # never reach a verification routine.
            raise unauthenticated(
                "algorithm",
                f"alg {algorithm!r} is not accepted (accepted: {self.settings.algorithms})",
            )
        issuer = unverified.get("iss")
        cache = self.caches.get(issuer) if isinstance(issuer, str) else None
        if cache is None:
            raise unauthenticated("issuer", f"issuer {issuer!r} is not trusted")

        kid = header.get("kid")
        try:
            key = await cache.key(kid if isinstance(kid, str) else None)
        except KeysUnavailable as exc:
            raise unavailable(str(exc)) from None
        if key is None:
            raise unauthenticated("unknown_key", f"issuer {issuer} has no key {kid!r}")
        if key.algorithm_name != algorithm:
            raise unauthenticated(
                "algorithm", f"key {kid!r} is for {key.algorithm_name}, the token says {algorithm}"
            )

        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=issuer,
                leeway=self.settings.leeway_s,
                options={
                    "require": ["exp", "iss", "aud", self.settings.subject_claim],
                    "verify_signature": True,
                    "verify_exp": True,
                    "verify_nbf": True,
                    "verify_iat": True,
                    "verify_aud": True,
                    "verify_iss": True,
                },
            )
        except ExpiredSignatureError:
            raise unauthenticated("expired", "the token has expired") from None
        except ImmatureSignatureError:
            raise unauthenticated("not_yet_valid", "the token is not valid yet (nbf)") from None
        except InvalidIssuedAtError:
            raise unauthenticated("issued_at", "the token's iat is not a number") from None
        except InvalidAudienceError:
            raise unauthenticated(
                "audience", f"the token is not meant for {self.audience}"
            ) from None
        except InvalidIssuerError:
            raise unauthenticated("issuer", f"issuer {issuer!r} is not trusted") from None
        except MissingRequiredClaimError as exc:
            raise unauthenticated("claim_missing", f"the token has no {exc.claim!r}") from None
        except (InvalidSignatureError, DecodeError):
            raise unauthenticated("signature", "the token's signature does not verify") from None
        except InvalidTokenError as exc:
            raise unauthenticated("invalid", f"the token is invalid: {exc}") from None
        return self.caller_from(claims, cache.issuer)

    def caller_from(self, claims: dict[str, Any], issuer: str) -> Caller:
        subject = claim(claims, self.settings.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise unauthenticated("subject", "the token's subject is missing or not a string")
        name = next(
            (
                value
                for path in self.settings.name_claims
                if isinstance(value := claim(claims, path), str) and value
            ),
            subject,
        )
        roles = frozenset(
            role
            for path in self.settings.roles_claims
            for role in _strings(claim(claims, path))
            if role in self.policy.roles
        )
        named = _strings(claim(claims, self.settings.department_claim))
        departments = frozenset(d for d in named if d in known_departments())
        if len(departments) != len(set(named)):
            log.warning(
                "token of %s names unknown departments %s",
                subject,
                sorted(set(named) - departments),
            )
        return Caller(
            subject=subject,
            name=name,
            issuer=issuer,
            roles=roles,
            departments=departments,
            permissions=self.policy.grant(roles, departments),
        )


__all__ = ["AuthProblem", "TokenVerifier", "claim"]
