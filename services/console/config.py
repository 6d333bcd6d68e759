"""Console settings, read from CLAIMFLOW_CONSOLE_* environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAIMFLOW_CONSOLE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8108, ge=1, le=65535)
    public_url: str | None = None
    """The console's own origin as the browser sees it (for the OIDC redirect URI);
    default ``http://<host>:<port>``."""

    intake_url: str = "http://127.0.0.1:8101"
    review_url: str = "http://127.0.0.1:8102"
    payout_url: str = "http://127.0.0.1:8103"

    issuer_url: str = "http://127.0.0.1:8109"
    """The OIDC issuer: discovery at ``<issuer_url>/.well-known/openid-configuration``.
    The embedded issuer, or ``http://keycloak:8080/realms/claimflow``."""
    client_id: str = "claimflow-console"
    api_audience: str = "claimflow-intake"
    """The access token is verified with this audience before the console trusts its
    roles and departments (the same token goes to all three services)."""

    session_secret: SecretStr
    """Signs the session cookie (required; 32+ characters)."""
    session_ttl_s: int = Field(default=8 * 3600, gt=0)
    secure_cookies: bool = True
    """``Secure`` on the session cookie: off only for plain-http loopback (tests, demo)."""

    grafana_url: str = "http://127.0.0.1:3000/dashboards"
    """Linked from every page, for finance."""

    status_rate_per_minute: int = Field(default=10, ge=1)
    """Public status page: lookups per client IP per minute."""

    http_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("session_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("the session secret must be at least 32 characters")
        return value

    @field_validator("issuer_url", "intake_url", "review_url", "payout_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def origin(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def redirect_uri(self) -> str:
        return f"{self.origin}/auth/callback"
