"""Sign-in: OIDC authorization code with PKCE (S256) against the issuer named by its URL
(discovery), tokens verified with shared/auth — the same verification the services use.

The console is a public client (no secret): PKCE binds the code to this sign-in, ``state``
to this browser session, ``nonce`` the ID token to this authorization request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from services.console.config import ConsoleSettings
from services.console.session import PendingLogin
from shared.auth.caller import Caller
from shared.auth.errors import AuthProblem
from shared.auth.settings import AuthSettings
from shared.auth.verify import TokenVerifier

PENDING_LOGIN_TTL_S = 600


class SignInFailed(Exception):
    """The sign-in could not be completed; the message is shown to the user."""


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class SignedIn:
    caller: Caller
    access_token: str
    id_token: str
    expires_at: float


class OidcClient:
    def __init__(self, settings: ConsoleSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self._http = client
        self._discovery: dict[str, Any] | None = None
        auth = AuthSettings(issuers=[settings.issuer_url])
        # Two verifiers, one JWKS fetch path each: the ID token is meant for the console
        # (aud = client id), the access token for the services (aud = their ids).
        self._id_verifier = TokenVerifier(auth, audience=settings.client_id, client=client)
        self._access_verifier = TokenVerifier(auth, audience=settings.api_audience, client=client)

    async def discovery(self) -> dict[str, Any]:
        if self._discovery is None:
            url = f"{self.settings.issuer_url}/.well-known/openid-configuration"
            try:
                r = await self._http.get(url)
                r.raise_for_status()
                doc: dict[str, Any] = r.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise SignInFailed(f"the sign-in service is not reachable ({exc})") from None
            if doc.get("issuer") != self.settings.issuer_url:
                raise SignInFailed("the issuer's discovery document names another issuer")
            self._discovery = doc
        return self._discovery

    async def start(self, next_path: str) -> tuple[PendingLogin, str]:
        """A pending login and the issuer's authorization URL to send the browser to."""
        doc = await self.discovery()
        pending = PendingLogin(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            code_verifier=secrets.token_urlsafe(64),  # 86 characters: within 43..128
            next_path=next_path,
            started_at=time.time(),
        )
        query = {
            "response_type": "code",
            "client_id": self.settings.client_id,
            "redirect_uri": self.settings.redirect_uri,
            "scope": "openid profile",
            "state": pending.state,
            "nonce": pending.nonce,
            "code_challenge": s256(pending.code_verifier),
            "code_challenge_method": "S256",
        }
        return pending, f"{doc['authorization_endpoint']}?{urlencode(query)}"

    async def finish(self, pending: PendingLogin | None, code: str, state: str) -> SignedIn:
        if pending is None:
            raise SignInFailed("no sign-in was started in this browser session")
        if time.time() - pending.started_at > PENDING_LOGIN_TTL_S:
            raise SignInFailed("the sign-in took too long; start again")
        if not hmac.compare_digest(pending.state, state):
            raise SignInFailed("the sign-in answer does not belong to this session (state)")
        doc = await self.discovery()
        try:
            r = await self._http.post(
                doc["token_endpoint"],
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": self.settings.redirect_uri,
                    "client_id": self.settings.client_id,
                    "code_verifier": pending.code_verifier,
                },
            )
        except httpx.HTTPError as exc:
            raise SignInFailed(f"the sign-in service is not reachable ({exc})") from None
        if r.status_code != 200:
            raise SignInFailed(f"the issuer refused the code: {r.text[:200]}")
        body = r.json()
        access, id_token = body.get("access_token"), body.get("id_token")
        if not isinstance(access, str) or not isinstance(id_token, str):
            raise SignInFailed("the issuer answered without an access token and an ID token")
        try:
            person = await self._id_verifier.verify(id_token)
            caller = await self._access_verifier.verify(access)
        except AuthProblem as problem:
            raise SignInFailed(f"the token does not verify: {problem.detail}") from None
        # Signature, iss, aud and exp were checked above; now the claims may be read.
        id_claims = jwt.decode(id_token, options={"verify_signature": False})
        if not hmac.compare_digest(str(id_claims.get("nonce", "")), pending.nonce):
            raise SignInFailed("the ID token was not issued for this sign-in (nonce)")
        if not person.same_person(caller):
            raise SignInFailed("the ID token and the access token name different people")
        access_claims = jwt.decode(access, options={"verify_signature": False})
        return SignedIn(
            caller=caller,
            access_token=access,
            id_token=id_token,
            expires_at=float(access_claims["exp"]),
        )

    async def aclose(self) -> None:
        await self._id_verifier.aclose()
        await self._access_verifier.aclose()
