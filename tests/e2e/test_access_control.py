"""Identity and access on the real stack (issue 11): every route of the permission table
answers 401 without a valid token and 403 to a token of a role that lacks the route's
permission; the outsider journeys that moved money with headers end in 401/403 with
nothing changed."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest

from shared.auth.keys import SigningKey, load_key
from shared.auth.mint import mint_token, token_claims
from shared.auth.permissions import ROLES, load_policy
from shared.devstack.stack import StackConfig
from tests.e2e.helpers import submit_claim, tasks_for
from tests.tokens import AUDITOR, approver, bearer, finance_clerk, reviewer, window

pytestmark = pytest.mark.e2e

POLICY = load_policy()
ROUTES = [
    (service, route, wanted)
    for service, routes in POLICY.endpoints.items()
    for route, wanted in routes.items()
]
SAMPLE_PATH_VALUES = {
    "claim_id": str(uuid.UUID(int=1)),
    "task_id": str(uuid.UUID(int=2)),
    "payout_id": str(uuid.UUID(int=3)),
    "request_id": str(uuid.UUID(int=4)),
    "fund_id": "treasury-refund",
    "uscc": "91510300MA62X8XK4T",
    "day": "2026-11-27",
}


def url_of(cfg: StackConfig, service: str, route: str) -> tuple[str, str]:
    method, path = route.split(" ", 1)
    for name, value in SAMPLE_PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    return method, cfg.url(service) + path


def a_role_without(wanted: list[str]) -> str | None:
    """A claimflow role holding none of ``wanted``; None when every role holds one."""
    return next(
        (role for role in ROLES if not any(p in POLICY.roles[role].permissions for p in wanted)),
        None,
    )


def headers_of_role(cfg: StackConfig, role: str | None) -> dict[str, str]:
    if role is None:
        # Every role may use the route: a valid token with no claimflow role may not.
        key = load_key(cfg.data_dir / "auth" / "issuer-es256.pem")
        raw = mint_token(key, issuer=cfg.issuer_url, subject="nobody", roles=["offline_access"])
        return {"Authorization": f"Bearer {raw}"}
    departments = ["tax"] if POLICY.roles[role].scope == "department" else []
    return bearer(cfg, f"someone-{role}", role, departments=departments)


async def call(
    client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str]
) -> httpx.Response:
    # No default (auditor) token: only what the test names.
    return await client.request(method, url, headers=headers, json={} if method == "POST" else None)


@pytest.fixture
async def bare() -> Any:
    async with httpx.AsyncClient(timeout=30) as c:
        yield c


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def bad_tokens(cfg: StackConfig) -> dict[str, str]:
    """Tokens a service must refuse with 401, each for one reason."""
    key = load_key(cfg.data_dir / "auth" / "issuer-es256.pem")
    iss, sub, roles = cfg.issuer_url, "auditor-zhou", ["auditor"]
    expired = mint_token(key, issuer=iss, subject=sub, roles=roles, ttl_s=60, now=0)
    wrong_audience = mint_token(
        key, issuer=iss, subject=sub, roles=roles, audience="claimflow-elsewhere"
    )
    wrong_issuer = mint_token(
        key, issuer="http://127.0.0.1:1/realms/evil", subject=sub, roles=roles
    )
    forged = mint_token(SigningKey.generate(), issuer=iss, subject=sub, roles=roles)
    head, _, signature = mint_token(key, issuer=iss, subject=sub, roles=roles).split(".")
    # The signed token's claims swapped for ones granting every role: the signature no
    # longer matches.
    claims = token_claims(issuer=iss, subject=sub, roles=list(ROLES))
    tampered = ".".join((head, b64(json.dumps(claims).encode()), signature))
    return {
        "garbage": "not-a-token",
        "expired": expired,
        "wrong_audience": wrong_audience,
        "wrong_issuer": wrong_issuer,
        "forged_signature": forged,
        "tampered_claims": tampered,
    }


@pytest.mark.parametrize(("service", "route", "wanted"), ROUTES, ids=lambda v: str(v))
async def test_every_route_refuses_no_token_bad_tokens_and_the_wrong_role(
    bare: httpx.AsyncClient, services: StackConfig, service: str, route: str, wanted: list[str]
) -> None:
    method, url = url_of(services, service, route)
    anonymous = await call(bare, method, url, {})
    assert anonymous.status_code == 401, (route, anonymous.text)
    assert anonymous.json()["errors"][0]["field"] == "header.Authorization"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    for why, raw in bad_tokens(services).items():
        r = await call(bare, method, url, {"Authorization": f"Bearer {raw}"})
        assert r.status_code == 401, (route, why, r.text)
    role = a_role_without(wanted)
    wrong = await call(bare, method, url, headers_of_role(services, role))
    assert wrong.status_code == 403, (route, role, wrong.text)
    error = wrong.json()["errors"][0]
    assert error["field"] == f"permission.{wanted[0]}" and error["rule"] == "permission"
    assert wanted[0] in error["message"]


async def test_anonymous_reads_of_claims_trackers_and_payouts_are_refused(
    bare: httpx.AsyncClient, client: httpx.AsyncClient, services: StackConfig
) -> None:
    claim_id = await submit_claim(client, services)
    for url in (
        f"{services.url('intake')}/claims",
        f"{services.url('intake')}/claims/{claim_id}",
        f"{services.url('review')}/claims/{claim_id}/review",
        f"{services.url('payout')}/payouts",
        f"{services.url('payout')}/funds",
    ):
        r = await bare.get(url)
        assert r.status_code == 401, (url, r.text)
        assert "bank" not in r.text.lower()


async def test_an_invented_department_cannot_approve(
    client: httpx.AsyncClient, services: StackConfig
) -> None:
    claim_id = await submit_claim(client, services)
    task = next(t for t in await tasks_for(client, services, claim_id) if t["department"] == "tax")
    url = f"{services.url('review')}/tasks/{task['task_id']}/decision"
    invented = bearer(services, "x-tax", "reviewer", departments=[])  # no known department
    r = await client.post(url, json={"decision": "approve"}, headers=invented)
    assert r.status_code == 403, r.text
    # A reviewer of another department is refused by the task's department rule.
    other = await client.post(url, json={"decision": "approve"}, headers=dict(reviewer("finance")))
    assert other.status_code == 403, other.text
    view = (await client.get(f"{services.url('review')}/claims/{claim_id}/review")).json()
    assert next(t for t in view["tasks"] if t["task_id"] == task["task_id"])["status"] == "pending"


async def test_the_registrant_cannot_approve_his_own_claim_by_any_spelling(
    client: httpx.AsyncClient, services: StackConfig
) -> None:
    claim_id = await submit_claim(client, services)  # registered by window-01
    task = next(t for t in await tasks_for(client, services, claim_id) if t["department"] == "tax")
    url = f"{services.url('review')}/tasks/{task['task_id']}/decision"
    # His own token is a window clerk's: no review permission.
    own = await client.post(url, json={"decision": "approve"}, headers=dict(window("window-01")))
    assert own.status_code == 403, own.text
    # The same person holding a reviewer token (same subject) is refused by segregation.
    same = bearer(services, "window-01", "reviewer", departments=["tax"])
    r = await client.post(url, json={"decision": "approve"}, headers=same)
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["rule"] == "segregation_registrant"
    # A token he made up for a case-changed subject is not signed by the issuer.
    made_up = mint_token(
        SigningKey.generate(),
        issuer=services.issuer_url,
        subject="Window-01",
        roles=["reviewer"],
        departments=["tax"],
    )
    r = await client.post(
        url, json={"decision": "approve"}, headers={"Authorization": f"Bearer {made_up}"}
    )
    assert r.status_code == 401, r.text


async def test_only_an_approver_signs_off(client: httpx.AsyncClient, services: StackConfig) -> None:
    claim_id = await submit_claim(
        client,
        services,
        end_credit_balance="3000000.00",
        requested_amount="2500000.00",
    )
    tasks = [t for t in await tasks_for(client, services, claim_id) if t["status"] == "pending"]
    for task in tasks:
        r = await client.post(
            f"{services.url('review')}/tasks/{task['task_id']}/decision",
            json={"decision": "approve"},
            headers=dict(reviewer(task["department"])),
        )
        assert r.status_code == 200, r.text

    async def sign_off_task() -> dict[str, Any] | None:
        view = (await client.get(f"{services.url('review')}/claims/{claim_id}/review")).json()
        return next((t for t in view["tasks"] if t["department"] == "sign_off"), None)

    from tests.e2e.helpers import eventually

    task = await eventually(sign_off_task, what="a sign-off task")
    url = f"{services.url('review')}/tasks/{task['task_id']}/decision"
    for who in (dict(reviewer("tax", "tax-reviewer-9")), dict(window()), dict(finance_clerk())):
        r = await client.post(url, json={"decision": "approve"}, headers=who)
        assert r.status_code == 403, r.text
    view = (await client.get(f"{services.url('review')}/claims/{claim_id}/review")).json()
    assert view["status"] == "sign_off"


async def test_an_intern_cannot_top_up_a_budget(
    client: httpx.AsyncClient, services: StackConfig
) -> None:
    funds_url = f"{services.url('payout')}/funds"
    before = {f["fund_id"]: f["budget"] for f in (await client.get(funds_url)).json()}
    fund_id = next(iter(k for k, v in before.items() if v is not None))
    body = {"amount": "10000000000000.00", "reason": "intern"}
    # A window clerk may not even ask; a finance clerk may ask (dual control: another
    # person approves), but never for more than the maximum of one request.
    for who, status in (
        (bearer(services, "intern", "window_clerk", departments=["finance"]), 403),
        (dict(finance_clerk("finance-intern")), 422),
    ):
        r = await client.post(
            f"{funds_url}/{fund_id}/top-ups",
            json=body,
            headers={**who, "Idempotency-Key": f"intern-{uuid.uuid4()}"},
        )
        assert r.status_code == status, r.text
        assert r.json()["errors"][0]["field"] in ("permission.funds.top_up.request", "body.amount")
    after = {f["fund_id"]: f["budget"] for f in (await client.get(funds_url)).json()}
    assert after == before


async def test_mallory_cannot_redirect_a_payment(
    client: httpx.AsyncClient, services: StackConfig
) -> None:
    payouts = (await client.get(f"{services.url('payout')}/payouts", params={"limit": 5})).json()
    payout_id = payouts[0]["payout_id"] if payouts else str(uuid.uuid4())
    mallory = {
        "bank_name": "某银行",
        "account_name": "Mallory",
        "account_number": "6222000011112222",
    }
    for who in (
        bearer(services, "mallory", "window_clerk", departments=["finance"]),
        dict(reviewer("finance", "mallory")),
        bearer(services, "mallory", "auditor"),
    ):
        r = await client.post(
            f"{services.url('payout')}/payouts/{payout_id}/account-correction",
            json={"payee": mallory, "reason": "new account"},
            headers={**who, "Idempotency-Key": f"mallory-{uuid.uuid4()}"},
        )
        assert r.status_code == 403, r.text
    if payouts:
        after = (await client.get(f"{services.url('payout')}/payouts/{payout_id}")).json()
        assert "Mallory" not in json.dumps(after)


async def test_bank_account_numbers_are_masked_for_everyone_but_finance(
    client: httpx.AsyncClient, services: StackConfig
) -> None:
    from tests.e2e.helpers import approve_through_review, eventually

    claim_id = await submit_claim(client, services)
    await approve_through_review(client, services, claim_id)
    url = f"{services.url('payout')}/payouts"

    async def payout() -> dict[str, Any] | None:
        found = (await client.get(url, params={"claim_id": claim_id})).json()
        return found[0] if found else None

    as_auditor = await eventually(payout, what="the payout")
    assert as_auditor["payee"]["account_number"].startswith("****")
    detail = (await client.get(f"{url}/{as_auditor['payout_id']}")).json()
    assert detail["payee"]["account_number"].startswith("****")
    assert all(v["account_number"].startswith("****") for v in detail["vouchers"])
    as_finance = (
        await client.get(url, params={"claim_id": claim_id}, headers=dict(finance_clerk()))
    ).json()[0]
    full = as_finance["payee"]["account_number"]
    assert not full.startswith("****") and full.endswith(as_auditor["payee"]["account_number"][-4:])


async def test_a_reviewer_reads_only_the_claims_on_their_departments_desk(
    client: httpx.AsyncClient, services: StackConfig
) -> None:
    """A tax reviewer sees the claims review put before the tax department (a VAT refund:
    tax and treasury), not a subsidy reviewed by finance and industry only — neither the
    claim, its review, nor its line in a list; a claim that does not exist gets the same
    answer as one on another desk (the answer tells nothing about existence)."""
    from shared.devstack.demo_claims import make_subsidy_claim
    from tests.e2e.helpers import _rng, eventually

    vat_id = await submit_claim(client, services)
    vat = (await client.get(f"{services.url('intake')}/claims/{vat_id}")).json()
    body = make_subsidy_claim(_rng, "direct-financing-2026")
    body["uscc"] = vat["uscc"]  # one enterprise, two claims: its page lists both
    r = await client.post(f"{services.url('intake')}/claims", json=body, headers=window())
    assert r.status_code == 201, r.text
    subsidy_id = r.json()["claim_id"]
    assert {t["department"] for t in await tasks_for(client, services, vat_id)} == {
        "tax",
        "treasury",
    }
    assert {t["department"] for t in await tasks_for(client, services, subsidy_id)} == {
        "finance",
        "industry",
    }
    tax = dict(reviewer("tax"))
    intake, review = services.url("intake"), services.url("review")

    async def tracker_knows_the_desk() -> bool:
        # Intake learns the desks from review's events: wait until it has them.
        return (await client.get(f"{intake}/claims/{vat_id}", headers=tax)).status_code == 200

    await eventually(tracker_knows_the_desk, what="intake's tracker naming the tax desk")
    assert (await client.get(f"{review}/claims/{vat_id}/review", headers=tax)).status_code == 200

    missing = str(uuid.uuid4())
    for off_desk, unknown in (
        (f"{intake}/claims/{subsidy_id}", f"{intake}/claims/{missing}"),
        (f"{review}/claims/{subsidy_id}/review", f"{review}/claims/{missing}/review"),
    ):
        refused = await client.get(off_desk, headers=tax)
        assert refused.status_code == 403, (off_desk, refused.text)
        error = refused.json()["errors"][0]
        assert (error["field"], error["rule"]) == ("claim_id", "department_scope"), error
        assert body["enterprise_name"] not in refused.text and "industry" not in refused.text
        # A claim that does not exist gets the very same answer: nothing tells which exist.
        nothing = await client.get(unknown, headers=tax)
        assert (nothing.status_code, nothing.json()) == (403, refused.json())

    listed = (
        await client.get(f"{intake}/claims", params={"uscc": vat["uscc"]}, headers=tax)
    ).json()
    assert [c["claim_id"] for c in listed["items"]] == [vat_id] and listed["total"] == 1
    page = (await client.get(f"{intake}/enterprises/{vat['uscc']}/claims", headers=tax)).json()
    assert [c["claim_id"] for c in page["claims"]] == [vat_id]
    everything = (await client.get(f"{intake}/claims", params={"limit": 500}, headers=tax)).json()
    assert subsidy_id not in {c["claim_id"] for c in everything["items"]}
    # Another department's worklist is not the tax reviewer's to read either.
    r = await client.get(f"{review}/worklist", params={"department": "finance"}, headers=tax)
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["field"] == "query.department"

    # The finance reviewer reads the subsidy, and not the VAT refund.
    finance = dict(reviewer("finance"))

    async def finance_desk() -> bool:
        url = f"{intake}/claims/{subsidy_id}"
        return (await client.get(url, headers=finance)).status_code == 200

    await eventually(finance_desk, what="intake's tracker naming the finance desk")
    assert (await client.get(f"{intake}/claims/{vat_id}", headers=finance)).status_code == 403

    # Everyone else keeps their reads: the window, approvers, finance, auditors.
    for who in (window("window-09"), approver(), finance_clerk(), AUDITOR):
        headers = dict(who)
        assert (
            await client.get(f"{intake}/claims/{subsidy_id}", headers=headers)
        ).status_code == 200
        both = (
            await client.get(f"{intake}/enterprises/{vat['uscc']}/claims", headers=headers)
        ).json()
        assert {c["claim_id"] for c in both["claims"]} == {vat_id, subsidy_id}
    for who in (approver(), AUDITOR):
        url = f"{review}/claims/{subsidy_id}/review"
        assert (await client.get(url, headers=dict(who))).status_code == 200
