"""The embedded issuer as a real process on a real port (``python -m shared.auth.issuer``):
discovery → JWKS → verification over HTTP, ``claimflow token``, the password grant, and
the authorization-code + PKCE flow of the (future) staff console, end to end with httpx.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from shared.auth.errors import AuthProblem
from shared.auth.issuer import SECRET_FILE, read_info, s256
from shared.auth.keys import SigningKey, load_or_create_key
from shared.auth.mint import mint_token
from shared.auth.settings import AuthSettings
from shared.auth.verify import TokenVerifier

pytestmark = pytest.mark.integration

PORT = int(os.environ.get("CLAIMFLOW_TEST_PORT_BASE", "25400")) + 9
REDIRECT = "http://127.0.0.1:47123/callback"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningIssuer:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]


def start_issuer(data_dir: Path, port: int = PORT) -> RunningIssuer:
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.auth.issuer", "--data-dir", str(data_dir),
         "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=(data_dir / "issuer.log").open("ab"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, (data_dir / "issuer.log").read_text()
        try:
            if httpx.get(f"{url}/.well-known/openid-configuration", timeout=1).is_success:
                return RunningIssuer(url, data_dir, process)
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError("the issuer did not answer within 20 s")


def stop_issuer(running: RunningIssuer) -> None:
    running.process.terminate()
    try:
        running.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        running.process.kill()
        running.process.wait()


@pytest.fixture(scope="module")
def issuer() -> Iterator[RunningIssuer]:
    data_dir = Path(tempfile.mkdtemp(prefix="claimflow-issuer-", dir="/tmp"))
    running = start_issuer(data_dir)
    try:
        yield running
    finally:
        stop_issuer(running)
        shutil.rmtree(data_dir, ignore_errors=True)


def verifier(issuer: RunningIssuer, audience: str = "claimflow-review") -> TokenVerifier:
    # Only the issuer URL is configured: the JWKS is found through discovery.
    return TokenVerifier(AuthSettings(issuers=[issuer.url]), audience=audience)


async def test_a_library_minted_token_verifies_through_discovery(issuer: RunningIssuer) -> None:
    info = read_info(issuer.data_dir)
    assert info is not None and info["issuer"] == issuer.url
    raw = mint_token(
        load_or_create_key(issuer.data_dir),
        issuer=issuer.url,
        subject="leader-li",
        roles=["approver"],
    )
    check = verifier(issuer)
    try:
        caller = await check.verify(raw)
        # A key the issuer never published: refused, after one JWKS refresh.
        stranger = mint_token(SigningKey.generate(), issuer=issuer.url, subject="leader-li")
        with pytest.raises(AuthProblem) as refused:
            await check.verify(stranger)
    finally:
        await check.aclose()
    assert caller.subject == "leader-li" and caller.can("review.sign_off")
    assert refused.value.rule == "unknown_key"
    # Discovery + JWKS once; the unknown kid came within the refresh rate limit (30 s).
    assert check.caches[issuer.url].fetches == 1


async def test_the_cli_mints_a_token_the_issuer_vouches_for(issuer: RunningIssuer) -> None:
    done = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "claimflow"), "token", "--user", "industry-reviewer-2",
         "--data-dir", str(issuer.data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    check = verifier(issuer)
    try:
        caller = await check.verify(done.stdout.strip())
    finally:
        await check.aclose()
    assert caller.subject == "industry-reviewer-2"
    assert caller.roles == {"reviewer"} and caller.departments == {"industry"}

    explicit = await asyncio.to_thread(
        subprocess.run,
        [str(Path(sys.executable).parent / "claimflow"), "token", "--user", "window-01",
         "--role", "window_clerk", "--department", "tax", "--data-dir", str(issuer.data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert explicit.returncode == 0, explicit.stderr
    claims = jwt.decode(explicit.stdout.strip(), options={"verify_signature": False})
    assert claims["realm_access"]["roles"] == ["window_clerk"]
    assert claims["department"] == ["tax"]


async def test_password_grant_of_the_dev_client(issuer: RunningIssuer) -> None:
    secret = (issuer.data_dir / SECRET_FILE).read_text().strip()
    async with httpx.AsyncClient(base_url=issuer.url) as http:
        wrong = await http.post(
            "/token",
            data={"grant_type": "password", "client_id": "claimflow-dev",
                  "client_secret": "guess", "username": "admin-ops",
                  "password": "claimflow-demo"},
        )  # fmt: skip
        granted = await http.post(
            "/token",
            data={"grant_type": "password", "client_id": "claimflow-dev",
                  "client_secret": secret, "username": "finance-chen",
                  "password": "claimflow-demo"},
        )  # fmt: skip
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_client")
    assert granted.status_code == 200, granted.text
    check = verifier(issuer, audience="claimflow-payout")
    try:
        caller = await check.verify(granted.json()["access_token"])
    finally:
        await check.aclose()
    assert caller.subject == "finance-chen" and caller.can("funds.top_up")


def authorize_params(challenge: str, state: str, **extra: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "claimflow-console",
        "redirect_uri": REDIRECT,
        "scope": "openid profile",
        "state": state,
        "nonce": "n-" + state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }


async def test_authorization_code_with_pkce_end_to_end(issuer: RunningIssuer) -> None:
    code_verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(8)
    async with httpx.AsyncClient(base_url=issuer.url) as http:
        discovery = (await http.get("/.well-known/openid-configuration")).json()
        assert discovery["code_challenge_methods_supported"] == ["S256"]
        page = await http.get(
            urlsplit(discovery["authorization_endpoint"]).path,
            params=authorize_params(s256(code_verifier), state),
        )
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        for user in ("window-01", "tax-reviewer-1", "leader-zhang", "auditor-zhou"):
            assert f'value="{user}"' in page.text
        # Submit the login form as a browser would: its hidden fields plus the button.
        hidden = dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', page.text))
        form = {name: html.unescape(value) for name, value in hidden.items()}
        form["user"] = "treasury-reviewer-1"
        redirect = await http.post("/authorize", data=form)
        assert redirect.status_code == 302
        location = urlsplit(redirect.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
        query = parse_qs(location.query)
        assert query["state"] == [state]
        code = query["code"][0]

        exchange = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "claimflow-console",
            "code_verifier": code_verifier,
        }
        tokens = await http.post(urlsplit(discovery["token_endpoint"]).path, data=exchange)
        assert tokens.status_code == 200, tokens.text
        assert tokens.headers["cache-control"] == "no-store"
        replay = await http.post("/token", data=exchange)
        assert (replay.status_code, replay.json()["error"]) == (400, "invalid_grant")

    body = tokens.json()
    check = verifier(issuer, audience="claimflow-review")
    try:
        caller = await check.verify(body["access_token"])
    finally:
        await check.aclose()
    assert caller.subject == "treasury-reviewer-1"
    assert caller.departments == {"treasury"} and caller.can("review.decide")
    jwks = jwt.PyJWKClient(discovery["jwks_uri"])
    id_token = jwt.decode(
        body["id_token"],
        jwks.get_signing_key_from_jwt(body["id_token"]).key,
        algorithms=["ES256"],
        audience="claimflow-console",
        issuer=issuer.url,
    )
    assert id_token["sub"] == "treasury-reviewer-1" and id_token["nonce"] == "n-" + state


async def test_pkce_is_enforced(issuer: RunningIssuer) -> None:
    code_verifier = secrets.token_urlsafe(48)
    async with httpx.AsyncClient(base_url=issuer.url) as http:
        # No challenge, or the plain method: back to the client with an error.
        for extra in ({"code_challenge": ""}, {"code_challenge_method": "plain"}):
            answer = await http.get(
                "/authorize", params=authorize_params(s256(code_verifier), "s", **extra)
            )
            assert answer.status_code == 302
            assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == [
                "invalid_request"
            ]
        # A redirect URI that is not registered is never redirected to.
        evil = await http.get(
            "/authorize",
            params=authorize_params(
                s256(code_verifier), "s", redirect_uri="https://evil.example/cb"
            ),
        )
        assert evil.status_code == 400 and "location" not in evil.headers

        form = {**authorize_params(s256(code_verifier), "s"), "user": "window-02"}
        location = (await http.post("/authorize", data=form)).headers["location"]
        code = parse_qs(urlsplit(location).query)["code"][0]
        exchange = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": "claimflow-console",
            "code_verifier": secrets.token_urlsafe(48),  # not the one challenged
        }
        wrong = await http.post("/token", data=exchange)
        assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
        # The code died with the failed attempt: the right verifier is too late now.
        late = await http.post("/token", data={**exchange, "code_verifier": code_verifier})
        assert late.status_code == 400


async def test_the_key_survives_a_restart_of_the_issuer() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="claimflow-issuer-", dir="/tmp"))
    try:
        # Its own port: the module's issuer is still listening on PORT.
        first = start_issuer(data_dir, PORT + 1)
        async with httpx.AsyncClient() as http:
            kid = (await http.get(f"{first.url}/jwks.json")).json()["keys"][0]["kid"]
        raw = mint_token(load_or_create_key(data_dir), issuer=first.url, subject="admin-ops",
                         roles=["admin"])  # fmt: skip
        stop_issuer(first)
        second = start_issuer(data_dir, PORT + 1)
        try:
            async with httpx.AsyncClient() as http:
                jwks = (await http.get(f"{second.url}/jwks.json")).json()
            assert jwks["keys"][0]["kid"] == kid
            check = verifier(second, audience="claimflow-intake")
            try:
                assert (await check.verify(raw)).subject == "admin-ops"
            finally:
                await check.aclose()
        finally:
            stop_issuer(second)
        assert (data_dir / "auth" / "issuer-es256.pem").stat().st_mode & 0o077 == 0
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
