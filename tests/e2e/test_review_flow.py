"""Joint review end to end: three service processes, the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from shared.contracts import (
    BankAccount,
    ClaimDocumentSuppliedV1,
    ClaimSubmittedV1,
    EventEnvelope,
    EventPayload,
)
from shared.contracts.topics import INTAKE_EVENTS, REVIEW_EVENTS
from shared.devstack.demo_claims import make_uscc
from shared.devstack.stack import StackConfig
from tests.e2e.helpers import (
    approve_through_review,
    decide,
    eventually,
    review_of,
    submit_claim,
    tasks_for,
    wait_status,
)
from tests.kafka_helpers import find_on_topic, produce_as
from tests.tokens import reviewer

pytestmark = pytest.mark.e2e
PAYEE = BankAccount(
    bank_name="自贡银行", account_name="自贡测试企业有限公司", account_number="6222020200001234567"
)


async def publish(cfg: StackConfig, claim_id: uuid.UUID, payload: EventPayload) -> None:
    """Play intake on its topic (this branch's intake registers VAT refunds only)."""
    envelope = EventEnvelope.wrap(payload, claim_id=claim_id, producer="intake")
    await produce_as(cfg, "intake", INTAKE_EVENTS, envelope.to_bytes(), key=str(claim_id).encode())


def subsidy(amount_fen: int, program: str = "stable-growth-relief-2026") -> ClaimSubmittedV1:
    return ClaimSubmittedV1(
        claim_kind="subsidy",
        uscc=make_uscc(random.Random()),
        enterprise_name="自贡测试企业有限公司",
        tax_period="2026-10",
        program_id=program,
        requested_amount_fen=amount_fen,
        eligible_amount_fen=amount_fen,
        payee=PAYEE,
        registered_by="window-02",
        received_at=datetime.now(UTC),
        pending_documents=["payroll_records"],
    )


async def wait_review(
    client: httpx.AsyncClient, cfg: StackConfig, claim_id: str, status: str
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await client.get(f"{cfg.url('review')}/claims/{claim_id}/review")
        if r.status_code != 200:
            return None
        view: dict[str, Any] = r.json()
        return view if view["status"] == status else None

    return await eventually(probe, what=f"review of {claim_id} {status}")


async def test_three_departments_decide_concurrently_then_sign_off(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    claim_id = uuid.uuid4()
    await publish(services, claim_id, subsidy(1_500_000_00))
    tasks = await tasks_for(client, services, str(claim_id))
    assert {t["department"] for t in tasks} == {"finance", "industry", "tax"}
    # Each department sees its task on its worklist with the cross-check findings.
    for department in ("finance", "industry", "tax"):
        r = await client.get(
            f"{services.url('review')}/worklist",
            params={"department": department},
            headers=dict(reviewer(department)),
        )
        item = next(i for i in r.json() if i["claim_id"] == str(claim_id))
        assert {f["check"] for f in item["findings"]} >= {"blacklist", "duplicate", "amount"}
    # Polling with the answer's ETag: 304 while nothing changed (issue 15).
    worklist_url, tax = f"{services.url('review')}/worklist", {"department": "tax"}
    tag = (await client.get(worklist_url, params=tax, headers=dict(reviewer("tax")))).headers[
        "etag"
    ]
    unchanged = await client.get(
        worklist_url, params=tax, headers={**reviewer("tax"), "If-None-Match": tag}
    )
    assert unchanged.status_code == 304 and unchanged.content == b""
    responses = await asyncio.gather(*(decide(client, services, t, "approve") for t in tasks))
    assert [r.status_code for r in responses] == [200, 200, 200]
    changed = await client.get(
        worklist_url, params=tax, headers={**reviewer("tax"), "If-None-Match": tag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert str(claim_id) not in {i["claim_id"] for i in changed.json()}
    view = await wait_review(client, services, str(claim_id), "sign_off")
    sign_off = next(t for t in view["tasks"] if t["department"] == "sign_off")
    # A stage-2 reviewer cannot sign off, nor can someone without the approver role.
    as_reviewer = await decide(client, services, sign_off, "approve", user="tax-reviewer")
    assert as_reviewer.status_code == 403, as_reviewer.text
    assert as_reviewer.json()["errors"][0]["rule"] == "segregation_approver"
    no_role = await client.post(
        f"{services.url('review')}/tasks/{sign_off['task_id']}/decision",
        json={"decision": "approve"},
        headers=reviewer("tax", "someone"),
    )
    assert no_role.status_code == 403
    assert (await decide(client, services, sign_off, "approve", user="leader-1")).status_code == 200
    decided = await find_on_topic(
        services.bootstrap,
        REVIEW_EVENTS,
        lambda m: m.get("claim_id") == str(claim_id) and m.get("event_type") == "review.decided",
    )
    assert decided["payload"]["decision"] == "approved"
    assert decided["payload"]["approved_amount_fen"] == 1_500_000_00
    assert decided["payload"]["program_id"] == "stable-growth-relief-2026"
    assert decided["payload"]["documents_pending"] is True  # payroll_records still owed
    view = await review_of(client, services, str(claim_id))
    assert {t["decided_by"] for t in view["tasks"]} == {
        "finance-reviewer",
        "industry-reviewer",
        "tax-reviewer",
        "leader-1",
    }


async def test_return_for_documents_pauses_and_intake_documents_resume(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    claim_id = uuid.uuid4()
    await publish(services, claim_id, subsidy(200_000_00, "direct-financing-2026"))
    tasks = {t["department"]: t for t in await tasks_for(client, services, str(claim_id))}
    no_documents = await decide(client, services, tasks["finance"], "return")
    assert no_documents.status_code == 422
    r = await client.post(
        f"{services.url('review')}/tasks/{tasks['finance']['task_id']}/decision",
        json={"decision": "return", "comment": "审计报告缺页", "documents": ["audit_report"]},
        headers=reviewer("finance", "finance-reviewer"),
    )
    assert r.status_code == 200, r.text
    await find_on_topic(
        services.bootstrap,
        REVIEW_EVENTS,
        lambda m: (
            m.get("claim_id") == str(claim_id)
            and m.get("event_type") == "review.returned_for_documents"
        ),
    )
    # Paused: the industry task is off the worklist and cannot be decided.
    paused = await decide(client, services, tasks["industry"], "approve")
    assert paused.status_code == 409
    await publish(
        services,
        claim_id,
        ClaimDocumentSuppliedV1(document="audit_report", still_pending=[], recorded_by="w-2"),
    )
    view = await wait_review(client, services, str(claim_id), "department_review")
    reopened = next(
        t for t in view["tasks"] if t["department"] == "finance" and t["status"] == "pending"
    )
    assert reopened["task_id"] != tasks["finance"]["task_id"]
    assert (await decide(client, services, tasks["industry"], "approve")).status_code == 200
    assert (await decide(client, services, reopened, "approve")).status_code == 200
    await wait_review(client, services, str(claim_id), "approved")


async def test_large_refund_through_intake_is_signed_off_and_paid(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    claim_id = await submit_claim(
        client,
        services,
        end_credit_balance="3000000.00",
        base_credit_balance="0.00",
        input_composition_ratio="0.8000",
        requested_amount="2400000.00",
    )
    tasks = await tasks_for(client, services, claim_id)
    registrant = await decide(client, services, tasks[0], "approve", user="window-01")
    assert registrant.status_code == 403
    assert registrant.json()["errors"][0]["rule"] == "segregation_registrant"
    view = await approve_through_review(client, services, claim_id)
    assert view["approved_amount"] == "2400000.00"
    assert any(t["department"] == "sign_off" for t in view["tasks"])
    await wait_status(client, services, claim_id, "paid")
