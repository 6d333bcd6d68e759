"""A real embedded issuer served in-process (httpx.ASGITransport), for the unit tests of
token verification: real keys, real JWKS and discovery documents, no network."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.auth.demo_users import load_demo_users
from shared.auth.issuer import Issuer, create_issuer_app
from shared.auth.keys import SigningKey
from shared.auth.mint import sign, token_claims
from shared.auth.settings import AuthSettings
from shared.auth.verify import TokenVerifier

ISSUER_URL = "http://issuer.test"
AUDIENCE = "claimflow-intake"


@dataclass
class FakeClock:
    """Monotonic time the test moves by hand (for the JWKS refresh rate limit)."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Requests:
    paths: list[str] = field(default_factory=list)

    async def record(self, request: httpx.Request) -> None:
        self.paths.append(request.url.path)

    def count(self, path: str) -> int:
        return self.paths.count(path)


def in_process_issuer(url: str = ISSUER_URL) -> Issuer:
    return Issuer(
        url=url, keys=[SigningKey.generate()], users=load_demo_users(), dev_client_secret="s" * 20
    )


def issuer_client(*issuers: Issuer, requests: Requests) -> httpx.AsyncClient:
    """One client routing each issuer's host to that issuer's ASGI app."""
    apps = {httpx.URL(i.url).host: httpx.ASGITransport(app=create_issuer_app(i)) for i in issuers}
    return httpx.AsyncClient(
        mounts={f"all://{host}": transport for host, transport in apps.items()},
        event_hooks={"request": [requests.record]},
    )


def verifier_for(
    *issuers: Issuer,
    requests: Requests,
    clock: FakeClock | None = None,
    audience: str = AUDIENCE,
    **settings: Any,
) -> TokenVerifier:
    config = AuthSettings(issuers=[i.url for i in issuers], **settings)
    return TokenVerifier(
        config,
        audience=audience,
        client=issuer_client(*issuers, requests=requests),
        clock=clock or FakeClock(),
    )


def token(
    issuer: Issuer,
    key: SigningKey | None = None,
    *,
    subject: str = "window-01",
    roles: tuple[str, ...] = ("window_clerk",),
    departments: tuple[str, ...] = (),
    audience: str | list[str] = AUDIENCE,
    now: float | None = None,
    **overrides: Any,
) -> str:
    claims = token_claims(
        issuer=issuer.url,
        subject=subject,
        roles=roles,
        departments=departments,
        audience=audience,
        now=time.time() if now is None else now,
    )
    claims.update(overrides)
    return sign(key or issuer.keys[0], claims)
