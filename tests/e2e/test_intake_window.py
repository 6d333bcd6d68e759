"""The window over HTTP against the three real services: both claim kinds, refusals,
duplicates and Idempotency-Key under concurrency, 容缺受理 with its deadline, withdrawal,
and the tracker that answers the enterprise."""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from shared.contracts.topics import INTAKE_EVENTS
from shared.devstack.demo_claims import make_claim, make_subsidy_claim
from shared.devstack.stack import StackConfig
from tests.e2e.helpers import (
    approve_through_review,
    claim_status,
    decide,
    eventually,
    tasks_for,
    wait_status,
)
from tests.kafka_helpers import find_on_topic
from tests.tokens import window

pytestmark = pytest.mark.e2e
WINDOW = window("window-07")
_rng = random.Random()


def refund_body(**overrides: Any) -> dict[str, Any]:
    body = make_claim(_rng, "2026-09")
    body.update({"tax_credit_rating": "A", **overrides})
    return body


async def post_claim(
    client: httpx.AsyncClient, cfg: StackConfig, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    headers = {**WINDOW, **({"Idempotency-Key": key} if key else {})}
    return await client.post(f"{cfg.url('intake')}/claims", json=body, headers=headers)


async def approve_all(client: httpx.AsyncClient, cfg: StackConfig, claim_id: str) -> None:
    """All departments approve, and an approver signs off when the amount needs it."""
    await approve_through_review(client, cfg, claim_id)


async def payouts_of(client: httpx.AsyncClient, cfg: StackConfig, claim_id: str) -> list[Any]:
    r = await client.get(f"{cfg.url('payout')}/payouts", params={"claim_id": claim_id})
    r.raise_for_status()
    rows: list[Any] = r.json()
    return rows


async def test_refusal_body_names_field_and_rule_and_stores_nothing(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    body = refund_body(requested_amount="12.345", tax_credit_rating="E")
    body["uscc"] = body["uscc"][:-1] + ("1" if body["uscc"][-1] != "1" else "2")
    r = await post_claim(client, services, body)
    assert r.status_code == 422
    answer = r.json()
    assert answer["detail"] == "validation failed"
    fields = {e["field"] for e in answer["errors"]}
    assert {"uscc", "requested_amount", "tax_credit_rating"} <= fields
    listed = await client.get(f"{services.url('intake')}/claims", params={"uscc": body["uscc"]})
    assert listed.json()["total"] == 0
    # Rules needing the catalogue answer in the same shape.
    over_cap = make_subsidy_claim(_rng, "startup-loan-interest-2026")
    over_cap["requested_amount"] = "300000.01"
    over_cap["documents_promised"] = ["loan_contract"]
    over_cap["documents_supplied"] = ["application_form", "interest_statements"]
    r = await post_claim(client, services, over_cap)
    assert r.status_code == 422
    rules = {(e["field"], e["rule"]) for e in r.json()["errors"]}
    assert rules == {
        ("requested_amount", "per_enterprise_cap"),
        ("documents_promised", "critical_document"),
    }


async def test_concurrent_duplicates_and_idempotent_retries_over_http(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    body = refund_body()
    a, b = await asyncio.gather(
        post_claim(client, services, body), post_claim(client, services, body)
    )
    assert sorted([a.status_code, b.status_code]) == [201, 409]
    created, conflict = (a, b) if a.status_code == 201 else (b, a)
    assert conflict.json()["existing_claim_id"] == created.json()["claim_id"]

    body = refund_body()
    key = str(uuid.uuid4())
    answers = await asyncio.gather(*(post_claim(client, services, body, key) for _ in range(3)))
    assert [r.status_code for r in answers] == [201, 201, 201]
    assert len({r.json()["claim_id"] for r in answers}) == 1
    changed = await post_claim(client, services, {**body, "enterprise_name": "别的公司"}, key)
    assert changed.status_code == 422
    assert changed.json()["errors"][0]["rule"] == "idempotency_key_reused"
    listed = await client.get(f"{services.url('intake')}/claims", params={"uscc": body["uscc"]})
    assert listed.json()["total"] == 1


async def test_subsidy_claim_is_tracked_to_payment(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    body = make_subsidy_claim(_rng, "startup-loan-interest-2026")
    r = await post_claim(client, services, body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert (created["kind"], created["program_id"]) == ("subsidy", "startup-loan-interest-2026")
    claim_id = created["claim_id"]
    view = await claim_status(client, services, claim_id)
    assert view["holders"] == ["review:finance", "review:industry"]
    assert view["step_due_at"] is not None and view["time_left_seconds"] > 0
    tasks = await tasks_for(client, services, claim_id)
    assert (await decide(client, services, tasks[0], "approve")).status_code == 200

    async def one_left() -> dict[str, Any] | None:
        v = await claim_status(client, services, claim_id)
        return v if len(v["holders"]) == 1 else None

    view = await eventually(one_left, what="one department left")
    assert view["holders"] == [f"review:{tasks[1]['department']}"]
    assert (await decide(client, services, tasks[1], "approve")).status_code == 200
    view = await wait_status(client, services, claim_id, "paid")
    assert view["holders"] == ["none (final)"]
    types = [e["event_type"] for e in view["timeline"]]
    assert types[0] == "claim.submitted" and types[-1] == "payout.confirmed"
    assert {"review.task_decided", "review.decided", "payout.sent"} <= set(types)
    page = await client.get(
        f"{services.url('intake')}/claims",
        params={"kind": "subsidy", "status": "paid", "limit": 500},
    )
    assert claim_id in {c["claim_id"] for c in page.json()["items"]}
    enterprise = await client.get(f"{services.url('intake')}/enterprises/{body['uscc']}/claims")
    assert enterprise.json()["by_status"] == {"paid": 1}
    metrics = (await client.get(f"{services.url('intake')}/metrics")).text
    assert (
        'claimflow_claims_received_total{kind="subsidy",program="startup-loan-interest-2026"}'
        in metrics
    )
    assert 'claimflow_claims_outcome_total{kind="subsidy",outcome="paid"' in metrics


async def test_withdrawal_before_payout(services: StackConfig, client: httpx.AsyncClient) -> None:
    r = await post_claim(client, services, refund_body())
    claim_id = r.json()["claim_id"]
    url = f"{services.url('intake')}/claims/{claim_id}/withdraw"
    w = await client.post(url, json={"reason": "企业申请撤回"}, headers=WINDOW)
    assert w.status_code == 200, w.text
    again = await client.post(url, json={"reason": "twice"}, headers=WINDOW)
    assert again.status_code == 409 and again.json()["errors"][0]["rule"] == "claim_closed"
    await find_on_topic(
        services.bootstrap,
        INTAKE_EVENTS,
        lambda m: m.get("claim_id") == claim_id and m.get("event_type") == "claim.withdrawn",
    )
    assert (await claim_status(client, services, claim_id))["status"] == "withdrawn"


async def test_claim_with_a_promised_document_goes_to_review_at_once(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    """Intake's side of 容缺: accepted at once with a deadline, review starts at once,
    the document arrives, the documents are complete, the claim is paid."""
    body = refund_body(
        documents_supplied=["refund_application", "vat_returns", "bank_account_proof"],
        documents_promised=["input_invoice_list"],
    )
    r = await post_claim(client, services, body)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "accepted_documents_pending"
    assert created["pending_documents"] == ["input_invoice_list"]
    assert created["documents_due_by"] is not None
    claim_id = created["claim_id"]
    submitted = await find_on_topic(
        services.bootstrap,
        INTAKE_EVENTS,
        lambda m: m.get("claim_id") == claim_id and m.get("event_type") == "claim.submitted",
    )
    assert submitted["payload"]["pending_documents"] == ["input_invoice_list"]
    assert submitted["payload"]["documents_due_by"] == created["documents_due_by"]
    tasks = await tasks_for(client, services, claim_id)  # review starts at once
    view = await claim_status(client, services, claim_id)
    documents = {d["document_id"]: d for d in view["documents"]}
    assert len(documents) == 4
    assert documents["input_invoice_list"] == {
        "document_id": "input_invoice_list",
        "critical": False,
        "state": "promised",
        "requested_by": "checklist",
        "supplied_at": None,
        "title": None,
        "requested_at": None,
    }
    supplied = await client.post(
        f"{services.url('intake')}/claims/{claim_id}/documents",
        json={"document_id": "input_invoice_list"},
        headers=WINDOW,
    )
    assert supplied.status_code == 200 and supplied.json()["documents_completed"] is True
    await find_on_topic(
        services.bootstrap,
        INTAKE_EVENTS,
        lambda m: (
            m.get("claim_id") == claim_id and m.get("event_type") == "claim.documents_completed"
        ),
    )
    view = await claim_status(client, services, claim_id)
    assert (view["status"], view["pending_documents"], view["documents_due_by"]) == (
        "in_review",
        [],
        None,
    )
    assert {t["department"] for t in tasks} == {"tax", "treasury"}
    await approve_all(client, services, claim_id)
    view = await wait_status(client, services, claim_id, "paid")
    types = [e["event_type"] for e in view["timeline"]]
    assert types.index("claim.documents_completed") < types.index("payout.confirmed")


async def _status_in(
    client: httpx.AsyncClient, cfg: StackConfig, claim_id: str, statuses: set[str]
) -> dict[str, Any] | None:
    view = await claim_status(client, cfg, claim_id)
    return view if view["status"] in statuses else None


async def test_approved_claim_is_not_paid_until_the_document_arrives(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    body = refund_body(
        documents_supplied=["refund_application", "vat_returns", "input_invoice_list"],
        documents_promised=["bank_account_proof"],
    )
    claim_id = (await post_claim(client, services, body)).json()["claim_id"]
    await approve_all(client, services, claim_id)
    view = await eventually(
        lambda: _status_in(
            client, services, claim_id, {"approved_documents_pending", "payout_requested"}
        ),
        what="approved on condition",
    )
    assert view["pending_documents"] == ["bank_account_proof"]
    await asyncio.sleep(3)  # the simulated bank settles in well under a second
    assert await money_moved(client, services, claim_id) == []
    assert (await claim_status(client, services, claim_id))["status"] != "paid"
    r = await client.post(
        f"{services.url('intake')}/claims/{claim_id}/documents",
        json={"document_id": "bank_account_proof"},
        headers=WINDOW,
    )
    assert r.status_code == 200
    await wait_status(client, services, claim_id, "paid")


async def money_moved(client: httpx.AsyncClient, cfg: StackConfig, claim_id: str) -> list[Any]:
    """Payouts that sent or paid money (a held or cancelled reservation is not money)."""
    return [p for p in await payouts_of(client, cfg, claim_id) if p["status"] in ("sent", "paid")]


async def lapse_soon(cfg: StackConfig, claim_id: str) -> None:
    """Stand-in for the calendar: move this claim's documents deadline into the past
    (the lapse loop compares against the database; production never does this)."""
    conn = await asyncpg.connect(cfg.dsn)
    try:
        await conn.execute(
            """UPDATE intake.claims SET documents_due_at = now() - interval '1 second',
                   documents_due_by = current_date - 1 WHERE claim_id = $1""",
            uuid.UUID(claim_id),
        )
    finally:
        await conn.close()


async def promised_claim(client: httpx.AsyncClient, cfg: StackConfig) -> str:
    body = make_subsidy_claim(_rng, "stable-growth-relief-2026")
    body["documents_supplied"] = ["application_form", "difficulty_statement"]
    body["documents_promised"] = ["payroll_records", "financial_statements"]
    r = await post_claim(client, cfg, body)
    assert r.status_code == 201, r.text
    claim_id: str = r.json()["claim_id"]
    return claim_id


async def test_overdue_claim_lapses_once_with_an_event(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    claim_id = await promised_claim(client, services)
    await lapse_soon(services, claim_id)
    view = await wait_status(client, services, claim_id, "lapsed", timeout=20)
    assert view["holders"] == ["none (final)"]
    lapsed = await find_on_topic(
        services.bootstrap,
        INTAKE_EVENTS,
        lambda m: m.get("claim_id") == claim_id and m.get("event_type") == "claim.lapsed",
    )
    assert lapsed["payload"]["missing_documents"] == ["payroll_records", "financial_statements"]
    late = await client.post(
        f"{services.url('intake')}/claims/{claim_id}/documents",
        json={"document_id": "payroll_records"},
        headers=WINDOW,
    )
    assert late.status_code == 409
    await asyncio.sleep(6)  # another lapse cycle: still one lapse on the timeline
    view = await claim_status(client, services, claim_id)
    assert [e["event_type"] for e in view["timeline"]].count("claim.lapsed") == 1


async def test_lapsed_claim_is_never_paid(services: StackConfig, client: httpx.AsyncClient) -> None:
    claim_id = await promised_claim(client, services)
    tasks = await tasks_for(client, services, claim_id)
    await lapse_soon(services, claim_id)
    await wait_status(client, services, claim_id, "lapsed", timeout=20)
    for task in tasks:
        await decide(client, services, task, "approve")
    await asyncio.sleep(4)
    assert await money_moved(client, services, claim_id) == []
    assert (await claim_status(client, services, claim_id))["status"] == "lapsed"
