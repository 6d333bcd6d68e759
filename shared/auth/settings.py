"""Authentication settings, read from CLAIMFLOW_AUTH_* environment variables.

One code path for both deployments: the embedded issuer (``python -m shared.auth.issuer``,
used by ``make demo`` and the tests) and Keycloak (docker-compose) are both plain OIDC
issuers; only these settings differ.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

AuthMode = Literal["oidc", "insecure-dev"]

# Only asymmetric algorithms: a verifier holding public keys must never accept a MAC
# (HS256 "signed" with the public key is the classic algorithm-confusion attack) nor
# "none".
ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)


def _split(value: object) -> object:
    """Comma- or space-separated strings from the environment; lists pass through."""
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    return value


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAIMFLOW_AUTH_", extra="ignore")

    mode: AuthMode = "oidc"
    """``insecure-dev`` trusts X-User-Id / X-Role / X-Department headers: local poking
    only, logged loudly at start and on every request; no test or demo uses it."""

    issuers: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Trusted issuers (the exact ``iss`` values), each with its own JWKS. Comma-separated
    in the environment, e.g. ``http://127.0.0.1:8109`` or
    ``http://keycloak:8080/realms/claimflow``."""

    jwks_urls: dict[str, str] = Field(default_factory=dict)
    """Optional issuer → JWKS URL (JSON in the environment). Without an entry the JWKS
    URL comes from ``<issuer>/.well-known/openid-configuration``."""

    audience: str | None = None
    """The ``aud`` this service accepts; by default ``claimflow-<service>``."""

    algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["ES256", "RS256"])
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    """Clock skew tolerated on exp / nbf / iat."""

    # Claim mapping. Dotted paths walk into nested objects (Keycloak: realm_access.roles).
    subject_claim: str = "sub"
    name_claims: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["name", "preferred_username"]
    )
    """The display name is the first of these present; never used to compare people."""
    roles_claims: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["realm_access.roles", "roles"]
    )
    """Roles are the union of these claims (lists of strings); unknown roles are ignored,
    so Keycloak's default-roles-*, offline_access … do no harm."""
    department_claim: str = "department"
    """A string or a list of strings (Keycloak user attribute, multivalued)."""

    jwks_max_age_s: float = Field(default=3600.0, gt=0)
    """Keys are fetched again after this long, even when every kid is known."""
    jwks_min_refresh_interval_s: float = Field(default=30.0, ge=0)
    """An unknown kid triggers a refresh at most this often (per issuer), so a flood of
    tokens with made-up kids cannot turn the service into a JWKS hammer."""
    http_timeout_s: float = Field(default=5.0, gt=0)

    @field_validator("issuers", "algorithms", "name_claims", "roles_claims", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        return _split(value)

    @field_validator("issuers")
    @classmethod
    def _no_trailing_slash_confusion(cls, value: list[str]) -> list[str]:
        # `iss` is compared exactly (OIDC Core 3.1.3.7); a stray slash would refuse every
        # token, so say so at start-up rather than with a 401 per request.
        for issuer in value:
            if not issuer.startswith(("https://", "http://")):
                raise ValueError(f"issuer {issuer!r} is not an http(s) URL")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        refused = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
        if refused:
            raise ValueError(f"only asymmetric signature algorithms are accepted, not {refused}")
        return value

    def audience_for(self, service: str) -> str:
        return self.audience or f"claimflow-{service}"
