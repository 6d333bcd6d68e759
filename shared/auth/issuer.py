"""The embedded OIDC issuer for ``make demo`` and the tests (Keycloak's stand-in).

    python -m shared.auth.issuer --data-dir .stack --port 8109

Serves discovery (``/.well-known/openid-configuration``), the JWKS (``/jwks.json``),
``/authorize`` (authorization code + PKCE S256, with a login page listing the demo
users: no passwords, one click — it is a demo issuer on loopback) and ``/token``
(``authorization_code`` for the public console client; ``password`` for the confidential
``claimflow-dev`` client, whose secret is in ``<data-dir>/auth/dev-client-secret``).

Errors of /authorize and /token follow RFC 6749 (``error``, ``error_description``): these
are OAuth endpoints, read by OAuth clients, not the claimflow API.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from shared import secret_files
from shared.auth.demo_users import DemoUser, DemoUsers, load_demo_users
from shared.auth.keys import SigningKey, load_or_create_key
from shared.auth.mint import DEFAULT_TTL_S, SERVICE_AUDIENCES, sign, token_claims

log = logging.getLogger(__name__)

CONSOLE_CLIENT = "claimflow-console"
DEV_CLIENT = "claimflow-dev"
SECRET_FILE = Path("auth") / "dev-client-secret"
INFO_FILE = Path("auth") / "issuer.json"
CODE_TTL_S = 60
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
MAX_FORM_BYTES = 16_384


def load_or_create_secret(data_dir: Path) -> str:
    return secret_files.load_or_create_secret(data_dir / SECRET_FILE)


def s256(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier)))."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def loopback_redirect(uri: str) -> bool:
    """RFC 8252 7.3: a native/console app on this machine may use any loopback port."""
    parts = urlsplit(uri)
    return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS and not parts.fragment


@dataclass
class PendingCode:
    user: DemoUser
    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    nonce: str | None
    expires_at: float


@dataclass
class Issuer:
    """The issuer's state: keys (the first one signs; all are published), demo users,
    pending authorization codes (single use, in memory)."""

    url: str
    keys: list[SigningKey]
    users: DemoUsers
    dev_client_secret: str
    redirect_uris: list[str] = field(default_factory=list)
    """Registered redirect URIs of the console, besides any loopback one."""
    access_ttl_s: int = DEFAULT_TTL_S
    clock: Callable[[], float] = time.time
    codes: dict[str, PendingCode] = field(default_factory=dict)

    @classmethod
    def from_data_dir(cls, data_dir: Path, url: str, **kwargs: Any) -> Issuer:
        return cls(
            url=url,
            keys=[load_or_create_key(data_dir)],
            users=kwargs.pop("users", None) or load_demo_users(),
            dev_client_secret=load_or_create_secret(data_dir),
            **kwargs,
        )

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks.json",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "password"],
            "code_challenge_methods_supported": ["S256"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
            "scopes_supported": ["openid", "profile"],
            "claims_supported": ["sub", "name", "preferred_username", "realm_access", "department"],
        }

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk for k in self.keys]}

    def mint_access(self, user: DemoUser, client_id: str) -> str:
        return sign(
            self.keys[0],
            token_claims(
                issuer=self.url,
                subject=user.id,
                audience=SERVICE_AUDIENCES,
                roles=user.roles,
                departments=user.departments,
                name=user.name,
                ttl_s=self.access_ttl_s,
                now=self.clock(),
                client_id=client_id,
            ),
        )

    def mint_id_token(self, user: DemoUser, client_id: str, nonce: str | None) -> str:
        now = int(self.clock())
        claims: dict[str, Any] = {
            "iss": self.url,
            "sub": user.id,
            "aud": client_id,
            "iat": now,
            "exp": now + self.access_ttl_s,
            "name": user.name,
            "preferred_username": user.id,
        }
        if nonce is not None:
            claims["nonce"] = nonce
        return sign(self.keys[0], claims)

    def redirect_allowed(self, uri: str) -> bool:
        return uri in self.redirect_uris or loopback_redirect(uri)

    def token_response(
        self, user: DemoUser, client_id: str, scope: str, nonce: str | None
    ) -> JSONResponse:
        body: dict[str, Any] = {
            "access_token": self.mint_access(user, client_id),
            "token_type": "Bearer",
            "expires_in": self.access_ttl_s,
            "scope": scope,
        }
        if "openid" in scope.split():
            body["id_token"] = self.mint_id_token(user, client_id, nonce)
        return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


async def _form(request: Request) -> dict[str, str] | None:
    """application/x-www-form-urlencoded, parsed without extra dependencies; None when the
    body is something else. Repeated parameters are refused (RFC 6749 3.1)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
        "application/x-www-form-urlencoded"
    ):
        return None
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return None
    pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    form = dict(pairs)
    return form if len(form) == len(pairs) else None


AUTHORIZE_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "scope",
    "nonce",
    "code_challenge",
    "code_challenge_method",
)


def _check_authorize(issuer: Issuer, params: dict[str, str]) -> Response | None:
    """None when the request may proceed; else the error answer. Errors about the client or
    the redirect URI are shown here (never redirected: RFC 6749 4.1.2.1); the others go
    back to the client's redirect URI."""
    client_id = params.get("client_id", "")
    redirect_uri = params.get("redirect_uri", "")
    if client_id != CONSOLE_CLIENT:
        return oauth_error("unauthorized_client", f"unknown client {client_id!r}")
    if not issuer.redirect_allowed(redirect_uri):
        return oauth_error("invalid_request", f"redirect_uri {redirect_uri!r} is not registered")

    def back(error: str, description: str) -> Response:
        query = {"error": error, "error_description": description}
        if "state" in params:
            query["state"] = params["state"]
        return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=302)

    if params.get("response_type") != "code":
        return back("unsupported_response_type", "only response_type=code")
    if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
        # PKCE is mandatory for the public client, and only S256 (plain reveals the
        # verifier to anyone who sees the authorization request).
        return back("invalid_request", "PKCE with code_challenge_method=S256 is required")
    return None


def _login_page(issuer: Issuer, params: dict[str, str]) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(params[name])}">'
        for name in AUTHORIZE_PARAMS
        if name in params
    )
    rows = "".join(
        f'<li><button type="submit" name="user" value="{html.escape(u.id)}">'
        f"{html.escape(u.name)}</button> <code>{html.escape(u.id)}</code> "
        f"{html.escape(', '.join(u.roles))}"
        f"{(' · ' + html.escape(', '.join(u.departments))) if u.departments else ''}</li>"
        for u in issuer.users.users
    )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>claimflow demo sign-in</title></head><body>"
        "<h1>claimflow — demo sign-in</h1>"
        "<p>Embedded demo issuer: pick who you are. (Production signs in with Keycloak.)</p>"
        f"<form method='post' action='{html.escape(issuer.url)}/authorize'>{hidden}"
        f"<ul>{rows}</ul></form></body></html>"
    )


def create_issuer_app(issuer: Issuer) -> FastAPI:
    app = FastAPI(title="claimflow embedded issuer", docs_url=None, redoc_url=None)
    app.state.issuer = issuer

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> JSONResponse:
        return JSONResponse(issuer.discovery())

    @app.get("/jwks.json")
    async def jwks() -> JSONResponse:
        return JSONResponse(issuer.jwks(), headers={"Cache-Control": "public, max-age=300"})

    @app.get("/authorize", response_model=None)
    async def authorize_page(request: Request) -> Response:
        params = {k: v for k, v in request.query_params.items() if k in AUTHORIZE_PARAMS}
        refused = _check_authorize(issuer, params)
        if refused is not None:
            return refused
        return HTMLResponse(
            _login_page(issuer, params),
            headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
        )

    @app.post("/authorize", response_model=None)
    async def authorize_submit(request: Request) -> Response:
        form = await _form(request)
        if form is None:
            return oauth_error("invalid_request", "expected one form-encoded set of parameters")
        params = {k: v for k, v in form.items() if k in AUTHORIZE_PARAMS}
        refused = _check_authorize(issuer, params)
        if refused is not None:
            return refused
        user = issuer.users.get(form.get("user", ""))
        if user is None:
            return oauth_error("access_denied", f"no demo user {form.get('user')!r}")
        code = secrets.token_urlsafe(32)
        issuer.codes[code] = PendingCode(
            user=user,
            client_id=params["client_id"],
            redirect_uri=params["redirect_uri"],
            code_challenge=params["code_challenge"],
            scope=params.get("scope", "openid"),
            nonce=params.get("nonce"),
            expires_at=issuer.clock() + CODE_TTL_S,
        )
        query = {"code": code}
        if "state" in params:
            query["state"] = params["state"]
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode(query)}", status_code=302)

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        form = await _form(request)
        if form is None:
            return oauth_error("invalid_request", "expected one form-encoded set of parameters")
        grant = form.get("grant_type")
        if grant == "authorization_code":
            return _exchange_code(issuer, form)
        if grant == "password":
            return _password_grant(issuer, form)
        return oauth_error("unsupported_grant_type", f"grant_type {grant!r} is not supported")

    return app


def _exchange_code(issuer: Issuer, form: dict[str, str]) -> JSONResponse:
    # Single use: the code is removed before anything else is checked, so a replayed or
    # wrongly-redeemed code is dead either way (RFC 6749 4.1.2).
    pending = issuer.codes.pop(form.get("code", ""), None)
    if pending is None or pending.expires_at < issuer.clock():
        return oauth_error("invalid_grant", "unknown, used or expired authorization code")
    if form.get("client_id") != pending.client_id:
        return oauth_error("invalid_grant", "the code was issued to another client")
    if form.get("redirect_uri") != pending.redirect_uri:
        return oauth_error("invalid_grant", "redirect_uri differs from the authorization request")
    verifier = form.get("code_verifier", "")
    if not 43 <= len(verifier) <= 128:
        return oauth_error("invalid_grant", "code_verifier must be 43-128 characters")
    if not hmac.compare_digest(s256(verifier), pending.code_challenge):
        return oauth_error("invalid_grant", "code_verifier does not match the code_challenge")
    return issuer.token_response(pending.user, pending.client_id, pending.scope, pending.nonce)


def _password_grant(issuer: Issuer, form: dict[str, str]) -> JSONResponse:
    if form.get("client_id") != DEV_CLIENT or not hmac.compare_digest(
        form.get("client_secret", ""), issuer.dev_client_secret
    ):
        return oauth_error("invalid_client", "client authentication failed", status=401)
    user = issuer.users.get(form.get("username", ""))
    if user is None or not hmac.compare_digest(form.get("password", ""), issuer.users.password):
        return oauth_error("invalid_grant", "wrong username or password")
    return issuer.token_response(user, DEV_CLIENT, form.get("scope", "profile"), None)


def write_info(data_dir: Path, issuer: Issuer, port: int) -> Path:
    """``<data-dir>/auth/issuer.json``: where the issuer is, for ``claimflow token`` and
    for the stack to hand to the services as CLAIMFLOW_AUTH_ISSUERS."""
    path = data_dir / INFO_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {
        "issuer": issuer.url,
        "jwks_uri": f"{issuer.url}/jwks.json",
        "port": port,
        "pid": os.getpid(),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2), encoding="utf-8")
    tmp.replace(path)
    return path


def read_info(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / INFO_FILE
    if not path.exists():
        return None
    info: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return info


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--issuer-url", help="default http://127.0.0.1:PORT")
    parser.add_argument(
        "--redirect-uri",
        action="append",
        default=[],
        help="a console redirect URI besides loopback ones (repeatable)",
    )
    parser.add_argument("--access-ttl", type=int, default=DEFAULT_TTL_S)
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="listen on a non-loopback --host (anyone reaching it can sign in as anyone)",
    )
    args = parser.parse_args(argv)
    if args.host not in LOOPBACK_HOSTS and not args.allow_remote:
        # One-click sign-in without passwords is a demo on this machine, nothing more.
        parser.error(f"--host {args.host} is not loopback; add --allow-remote if you mean it")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s issuer %(levelname)s %(message)s")
    data_dir: Path = args.data_dir.resolve()
    url = (args.issuer_url or f"http://127.0.0.1:{args.port}").rstrip("/")
    issuer = Issuer.from_data_dir(
        data_dir, url, redirect_uris=args.redirect_uri, access_ttl_s=args.access_ttl
    )
    write_info(data_dir, issuer, args.port)
    log.info("issuer %s, key %s, %d demo users", url, issuer.keys[0].kid, len(issuer.users.users))
    uvicorn.run(create_issuer_app(issuer), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
