"""The console's plumbing without a stack: sign-in against a real in-process issuer,
session cookie, CSRF on every form, the legacy identity headers, logs without bank data,
the message catalogue, the rate limit."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from services.console.api import ApiClient, ServiceUnavailable
from services.console.app import create_app
from services.console.config import ConsoleSettings
from services.console.i18n import MESSAGES
from services.console.oidc import OidcClient, SignedIn, SignInFailed
from services.console.session import COOKIE, SessionStore
from services.console.web import RateLimiter, checked_form, safe_next
from shared.auth.caller import Caller
from shared.auth.issuer import create_issuer_app
from tests.auth_fixtures import in_process_issuer

SECRET = "s" * 40
TEMPLATES = Path(__file__).resolve().parents[2] / "services" / "console" / "templates"


def settings(**overrides: object) -> ConsoleSettings:
    values: dict[str, object] = {
        "session_secret": SECRET,
        "issuer_url": "http://issuer.test",
        "intake_url": "http://127.0.0.1:9",
        "review_url": "http://127.0.0.1:9",
        "payout_url": "http://127.0.0.1:9",
        **overrides,
    }
    return ConsoleSettings.model_validate(values)


def caller(**overrides: object) -> Caller:
    values: dict[str, object] = {
        "subject": "tax-reviewer-1",
        "name": "税务局 审核 1",
        "issuer": "http://issuer.test",
        "roles": frozenset({"reviewer"}),
        "departments": frozenset({"tax"}),
        "permissions": frozenset({"review.decide"}),
        **overrides,
    }
    return Caller(**values)  # type: ignore[arg-type]


# --- sign-in: authorization code + PKCE against the real issuer app ---------------------


async def _sign_in(user: str, *, tamper_state: bool = False) -> SignedIn:
    issuer = in_process_issuer()
    transport = httpx.ASGITransport(app=create_issuer_app(issuer))
    async with httpx.AsyncClient(transport=transport, base_url=issuer.url) as http:
        oidc = OidcClient(settings(), http)
        pending, url = await oidc.start("/review")
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert query["code_challenge_method"] == "S256"
        assert query["redirect_uri"] == "http://127.0.0.1:8108/auth/callback"
        r = await http.post("/authorize", data={**query, "user": user})
        assert r.status_code == 302, r.text
        answer = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["location"]).query).items()}
        state = "forged" if tamper_state else answer["state"]
        return await oidc.finish(pending, answer["code"], state)


async def test_sign_in_yields_the_verified_callers_roles_and_department() -> None:
    done = await _sign_in("tax-reviewer-1")
    person = done.caller
    assert person.subject == "tax-reviewer-1"
    assert person.roles == {"reviewer"}
    assert person.departments == {"tax"}
    assert "review.decide" in person.permissions


async def test_a_forged_state_is_refused() -> None:
    with pytest.raises(SignInFailed, match="state"):
        await _sign_in("window-01", tamper_state=True)


# --- sessions and CSRF -------------------------------------------------------------------


def test_session_cookie_is_httponly_samesite_lax_and_secure_by_default() -> None:
    with TestClient(create_app(settings()), base_url="https://console.test") as client:
        r = client.get("/status")
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie
    # The cookie holds an id and its MAC, nothing else (no token material).
    value = cookie.split(";")[0].split("=", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_\-]{43}\.[0-9a-f]{64}", value)
    assert "default-src 'self'" in r.headers["content-security-policy"]


def test_a_forged_session_cookie_is_a_new_anonymous_session() -> None:
    store = SessionStore(SECRET, ttl_s=60)
    session = store.new()
    assert store.load(store.cookie_value(session)) is session
    assert store.load(f"{session.sid}.{'0' * 64}") is None
    assert SessionStore("t" * 40, ttl_s=60).load(store.cookie_value(session)) is None


def test_every_state_changing_route_checks_the_csrf_token() -> None:
    app = create_app(settings())
    posts = [
        r for r in app.routes if isinstance(r, APIRoute) and (r.methods or set()) & {"POST", "PUT"}
    ]
    assert len(posts) >= 8
    for route in posts:
        calls = [d.call for d in route.dependant.dependencies]
        assert checked_form in calls, f"{route.path} takes a form without the CSRF check"


def test_a_form_without_the_csrf_token_is_refused() -> None:
    with TestClient(create_app(settings(secure_cookies=False))) as client:
        client.get("/status")
        r = client.post("/status", data={"claim_number": "x", "uscc": "y"})
    assert r.status_code == 403
    assert "表单已过期" in r.text


def test_screens_need_a_sign_in() -> None:
    with TestClient(create_app(settings(secure_cookies=False))) as client:
        r = client.get("/window/claims/new", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=/window/claims/new"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/review", "/review"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("", "/"),
    ],
)
def test_redirects_after_sign_in_stay_on_the_console(given: str, expected: str) -> None:
    assert safe_next(given) == expected


# --- the API client -------------------------------------------------------------------


async def test_no_bank_account_number_in_the_logs_when_a_service_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    account = "6222020402001234567"
    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
        client = ApiClient(settings(), http)
        with caplog.at_level(logging.DEBUG), pytest.raises(ServiceUnavailable):
            await client.call(
                "intake",
                "POST",
                "/claims",
                token="t",
                json={"bank_account": {"account_number": account}},
            )
    assert caplog.records
    assert account not in caplog.text


# --- words, rate limit ----------------------------------------------------------------


def test_every_message_key_used_by_a_template_exists_in_both_languages() -> None:
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(
            re.findall(r"(?<![\w.])t\('([a-z_.0-9]+)'\)", template.read_text(encoding="utf-8"))
        )
    assert used, "no t('…') calls found"
    missing = sorted(used - MESSAGES.keys())
    assert not missing, missing
    assert all(zh and en for zh, en in MESSAGES.values())


def test_public_lookups_are_limited_per_address() -> None:
    now = [0.0]
    limiter = RateLimiter(3, 60.0, clock=lambda: now[0])
    assert [limiter.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("10.0.0.2")
    now[0] = 61.0
    assert limiter.allow("10.0.0.1")


def test_api_field_errors_are_said_in_chinese_when_the_rule_is_known() -> None:
    from services.console.api import ApiAnswer

    answer = ApiAnswer(
        422,
        {
            "detail": "validation failed",
            "errors": [
                {"field": "uscc", "rule": "uscc_check_character", "message": "check char"},
                {"field": "description", "rule": "something_new", "message": "as the API says"},
            ],
        },
    )
    assert answer.field_errors("zh") == {
        "uscc": "校验码不符 (GB 32100-2015), 请核对是否输入有误",
        "description": "as the API says",
    }
    assert answer.field_errors("en")["uscc"] == "check char"
