"""Token verification (shared/auth/verify.py) against a real in-process issuer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from shared.auth.errors import AuthProblem
from shared.auth.jwks import parse_jwks
from shared.auth.keys import SigningKey
from shared.auth.settings import AuthSettings
from shared.auth.verify import TokenVerifier
from tests.auth_fixtures import (
    AUDIENCE,
    FakeClock,
    Requests,
    in_process_issuer,
    token,
    verifier_for,
)


async def refused(verifier: TokenVerifier, raw: str) -> AuthProblem:
    with pytest.raises(AuthProblem) as caught:
        await verifier.verify(raw)
    return caught.value


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segments(raw: str) -> tuple[dict[str, object], dict[str, object]]:
    head, body, _ = raw.split(".")
    return (
        json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))),
        json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))),
    )


async def test_a_good_token_gives_the_caller_from_its_claims() -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    caller = await verifier.verify(
        token(issuer, subject="tax-reviewer-1", roles=("reviewer",), departments=("tax",))
    )
    assert caller.subject == "tax-reviewer-1"
    assert caller.issuer == issuer.url
    assert caller.roles == {"reviewer"}
    assert caller.departments == {"tax"}
    assert caller.can("review.decide") and not caller.can("claims.register")
    assert caller.acts_for("tax") and not caller.acts_for("finance")


async def test_the_audience_may_be_one_of_several() -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    raw = token(issuer, audience=["claimflow-review", AUDIENCE])
    assert (await verifier.verify(raw)).subject == "window-01"


# Times are offsets from the moment the test runs (not from collection: a long suite
# collects minutes before it runs the unit tier).
@pytest.mark.parametrize(
    ("claims", "rule"),
    [
        ({"exp": -120}, "expired"),
        ({"nbf": +120}, "not_yet_valid"),
        ({"iat": +120}, "not_yet_valid"),
        ({"iat": "yesterday"}, "issued_at"),
        ({"aud": "claimflow-payout"}, "audience"),
        ({"aud": []}, "claim_missing"),
    ],
)
async def test_time_and_audience_claims_are_enforced(claims: dict[str, Any], rule: str) -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    now = int(time.time())
    timed: dict[str, Any] = {
        name: now + value if name in {"exp", "nbf", "iat"} and isinstance(value, int) else value
        for name, value in claims.items()
    }
    problem = await refused(verifier, token(issuer, **timed))
    assert (problem.status_code, problem.rule) == (401, rule)
    assert problem.field == "header.Authorization"
    assert problem.headers and problem.headers["WWW-Authenticate"].startswith("Bearer ")


async def test_clock_skew_within_the_leeway_is_tolerated() -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests(), leeway_s=30)
    now = int(time.time())
    assert await verifier.verify(token(issuer, exp=now - 10, nbf=now + 10))


@pytest.mark.parametrize("missing", ["exp", "sub", "aud", "iss"])
async def test_required_claims(missing: str) -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    claims = jwt.decode(token(issuer), options={"verify_signature": False})
    del claims[missing]
    problem = await refused(
        verifier,
        jwt.encode(claims, issuer.keys[0].private_key, "ES256", {"kid": issuer.keys[0].kid}),
    )
    assert problem.status_code == 401
    assert problem.rule in {"claim_missing", "issuer"}  # no iss: no issuer to trust


async def test_an_untrusted_issuer_is_refused_even_with_a_good_signature() -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    raw = token(issuer, iss="http://evil.test")
    assert (await refused(verifier, raw)).rule == "issuer"
    raw = token(issuer, iss=issuer.url + "/")  # exact match: no slash games
    assert (await refused(verifier, raw)).rule == "issuer"


async def test_each_issuer_is_checked_against_its_own_keys() -> None:
    """Two trusted issuers: a token naming A but signed with B's key does not verify."""
    a, b = in_process_issuer("http://a.test"), in_process_issuer("http://b.test")
    requests = Requests()
    verifier = verifier_for(a, b, requests=requests)
    assert (await verifier.verify(token(a))).issuer == "http://a.test"
    assert (await verifier.verify(token(b))).issuer == "http://b.test"
    forged = token(b, iss="http://a.test")  # b's key and kid, a's name
    assert (await refused(verifier, forged)).rule == "unknown_key"
    # Same kid as A's key, B's signature: the signature check catches it.
    forged = jwt.encode(
        segments(token(a))[1], b.keys[0].private_key, "ES256", {"kid": a.keys[0].kid}
    )
    assert (await refused(verifier, forged)).rule == "signature"


async def test_a_tampered_payload_fails_the_signature() -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    head, _, signature = token(issuer).split(".")
    _, claims = segments(token(issuer))
    claims["realm_access"] = {"roles": ["admin", "finance_supervisor"]}
    forged = f"{head}.{b64(json.dumps(claims).encode())}.{signature}"
    assert (await refused(verifier, forged)).rule == "signature"
    # And a flipped signature byte on an untouched payload.
    raw = token(issuer)
    body, sig = raw.rsplit(".", 1)
    raw_sig = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw_sig[5] ^= 0x01
    assert (await refused(verifier, f"{body}.{b64(bytes(raw_sig))}")).rule == "signature"


async def test_alg_none_is_refused() -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    _, claims = segments(token(issuer))
    header = {"alg": "none", "typ": "JWT", "kid": issuer.keys[0].kid}
    unsigned = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."
    problem = await refused(verifier, unsigned)
    assert (problem.status_code, problem.rule) == (401, "algorithm")
    assert requests_made(verifier) == 0  # refused before any key was fetched


def requests_made(verifier: TokenVerifier) -> int:
    return sum(cache.fetches for cache in verifier.caches.values())


@pytest.mark.parametrize("secret_form", ["pem", "jwk"])
async def test_hs256_signed_with_the_public_key_is_refused(secret_form: str) -> None:
    """The algorithm-confusion attack: the public key (known to all) used as an HMAC secret."""
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    key = issuer.keys[0]
    secret = (
        key.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if secret_form == "pem"
        else json.dumps(key.public_jwk).encode()
    )
    _, claims = segments(token(issuer))
    claims["realm_access"] = {"roles": ["admin"]}
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    problem = await refused(verifier, f"{signing_input}.{b64(mac)}")
    assert (problem.status_code, problem.rule) == (401, "algorithm")


def test_settings_refuse_symmetric_algorithms() -> None:
    with pytest.raises(ValueError, match="asymmetric"):
        AuthSettings(issuers=["http://issuer.test"], algorithms=["ES256", "HS256"])


async def test_garbage_is_malformed_not_a_500() -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    for raw in ["", "abc", "a.b.c", "x" * 20_000, "eyJhbGciOiJFUzI1NiJ9.%%%.sig"]:
        problem = await refused(verifier, raw)
        assert (problem.status_code, problem.rule) == (401, "malformed"), raw[:40]


async def test_unknown_kid_refreshes_the_jwks_once_and_is_rate_limited() -> None:
    issuer = in_process_issuer()
    requests = Requests()
    clock = FakeClock()
    verifier = verifier_for(issuer, requests=requests, clock=clock, jwks_min_refresh_interval_s=30)
    await verifier.verify(token(issuer))
    assert requests.count("/jwks.json") == 1
    assert requests.count("/.well-known/openid-configuration") == 1

    # The issuer rotates: a new key signs, the old one is still published.
    clock.now += 31
    rotated = SigningKey.generate()
    issuer.keys.insert(0, rotated)
    caller = await verifier.verify(token(issuer, rotated))
    assert caller.subject == "window-01"
    assert requests.count("/jwks.json") == 2  # refreshed exactly once for the new kid
    await verifier.verify(token(issuer, rotated))
    await verifier.verify(token(issuer, issuer.keys[1]))
    assert requests.count("/jwks.json") == 2  # both kids known now: no more fetches

    # Made-up kids: one refresh per interval at most, however many tokens arrive.
    stranger = SigningKey.generate()
    clock.now += 31
    for _ in range(5):
        assert (await refused(verifier, token(issuer, stranger))).rule == "unknown_key"
    assert requests.count("/jwks.json") == 3
    clock.now += 31
    assert (await refused(verifier, token(issuer, stranger))).rule == "unknown_key"
    assert requests.count("/jwks.json") == 4
    assert requests.count("/.well-known/openid-configuration") == 1


async def test_concurrent_requests_on_a_cold_cache_share_one_fetch() -> None:
    issuer = in_process_issuer()
    requests = Requests()
    verifier = verifier_for(issuer, requests=requests)
    raw = token(issuer)
    callers = await asyncio.gather(*(verifier.verify(raw) for _ in range(20)))
    assert {c.subject for c in callers} == {"window-01"}
    assert requests.count("/jwks.json") == 1


async def test_keys_are_fetched_again_after_max_age() -> None:
    issuer = in_process_issuer()
    requests = Requests()
    clock = FakeClock()
    verifier = verifier_for(issuer, requests=requests, clock=clock, jwks_max_age_s=600)
    await verifier.verify(token(issuer))
    clock.now += 599
    await verifier.verify(token(issuer))
    assert requests.count("/jwks.json") == 1
    clock.now += 2
    await verifier.verify(token(issuer))
    assert requests.count("/jwks.json") == 2


async def test_an_unreachable_issuer_is_503_not_401() -> None:
    """No keys at all is the service's trouble (retry later), not a bad token."""
    issuer = in_process_issuer()
    requests = Requests()
    verifier = verifier_for(
        issuer, requests=requests, jwks_urls={issuer.url: f"{issuer.url}/no-such-jwks.json"}
    )
    problem = await refused(verifier, token(issuer))
    assert (problem.status_code, problem.rule) == (503, "issuer_unavailable")
    assert problem.headers and problem.headers["Retry-After"] == "5"
    assert requests.count("/no-such-jwks.json") == 1


async def test_a_case_changed_subject_is_another_person() -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    lower = await verifier.verify(token(issuer, subject="window-01"))
    upper = await verifier.verify(token(issuer, subject="Window-01"))
    spaced = await verifier.verify(token(issuer, subject="window-01 "))
    assert lower.subject == "window-01" and upper.subject == "Window-01"
    assert not lower.same_person(upper)
    assert not lower.same_person(spaced)
    assert lower != upper
    again = await verifier.verify(token(issuer, subject="window-01", name="someone else"))
    assert lower.same_person(again)


async def test_keycloak_shaped_claims_are_mapped() -> None:
    """realm_access.roles with Keycloak's own roles beside ours; department as a string."""
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    raw = token(
        issuer,
        subject="5b0f8a52-8f7e-4c5e-9a55-0c1f1f0b1a01",
        realm_access={"roles": ["offline_access", "default-roles-claimflow", "reviewer"]},
        department="finance",
        name="Finance Reviewer",
        preferred_username="finance-reviewer-1",
    )
    caller = await verifier.verify(raw)
    assert caller.roles == {"reviewer"}
    assert caller.departments == {"finance"}
    assert caller.name == "Finance Reviewer"
    assert caller.can("review.decide")


async def test_unknown_departments_are_dropped_and_a_reviewer_without_one_gets_nothing() -> None:
    issuer = in_process_issuer()
    verifier = verifier_for(issuer, requests=Requests())
    caller = await verifier.verify(
        token(issuer, roles=("reviewer",), departments=("Tax", "police"))
    )
    assert caller.departments == frozenset()
    assert caller.permissions == frozenset()


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "CLAIMFLOW_AUTH_ISSUERS", "http://127.0.0.1:8109, https://kc/realms/claimflow"
    )
    monkeypatch.setenv("CLAIMFLOW_AUTH_ROLES_CLAIMS", "realm_access.roles")
    monkeypatch.setenv("CLAIMFLOW_AUTH_JWKS_URLS", '{"http://127.0.0.1:8109": "http://x/jwks"}')
    settings = AuthSettings()
    assert settings.issuers == ["http://127.0.0.1:8109", "https://kc/realms/claimflow"]
    assert settings.roles_claims == ["realm_access.roles"]
    assert settings.jwks_urls == {"http://127.0.0.1:8109": "http://x/jwks"}
    assert settings.mode == "oidc"
    assert settings.audience_for("review") == "claimflow-review"


async def test_a_moved_jwks_uri_is_discovered_again() -> None:
    """After a failed JWKS fetch the discovery document is read again."""
    issuer = in_process_issuer()
    requests = Requests()
    clock = FakeClock()
    verifier = verifier_for(issuer, requests=requests, clock=clock, jwks_max_age_s=60)
    await verifier.verify(token(issuer))
    cache = verifier.caches[issuer.url]
    cache._jwks_url = f"{issuer.url}/gone.json"  # as if the issuer had moved its JWKS
    clock.now += 61
    assert await verifier.verify(token(issuer))  # stale keys still serve during the outage
    clock.now += 31
    assert await verifier.verify(token(issuer))
    assert requests.count("/gone.json") == 1
    assert requests.count("/.well-known/openid-configuration") == 2
    assert requests.count("/jwks.json") == 2


def test_the_jwks_publishes_public_signature_keys_only() -> None:
    issuer = in_process_issuer()
    (published,) = issuer.jwks()["keys"]
    assert "d" not in published  # the private scalar never leaves the data folder
    assert (published["kty"], published["alg"], published["use"]) == ("EC", "ES256", "sig")
    assert published["kid"] == issuer.keys[0].kid
    # A verifier ignores symmetric and encryption keys even when a JWKS carries them.
    keys = parse_jwks(
        {
            "keys": [
                published,
                {"kty": "oct", "kid": "mac", "k": b64(b"0" * 32)},
                {**SigningKey.generate().public_jwk, "kid": "enc", "use": "enc"},
            ]
        }
    )
    assert set(keys) == {published["kid"]}


async def test_requests_arriving_during_the_first_key_fetch_wait_for_it() -> None:
    """Found by the end-to-end bench: three bots and the window called a fresh service at
    once; the first request fetched the keys, the others answered 503 "no signing keys"
    while that fetch was in flight."""
    import httpx

    from shared.auth.jwks import JwksCache
    from shared.auth.keys import SigningKey

    key = SigningKey.generate()

    async def slow_jwks(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.2)
        return httpx.Response(200, json={"keys": [key.public_jwk]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow_jwks)) as client:
        cache = JwksCache("http://issuer.test", client, jwks_url="http://issuer.test/jwks")
        found = await asyncio.gather(*(cache.key(key.kid) for _ in range(5)))
    assert all(k is not None for k in found)
    assert cache.fetches == 1
