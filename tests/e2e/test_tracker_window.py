"""The tracker at the window, on the whole stack (issue 9): a rejection reached intake
after a document recorded a moment later (item 6), a department asking again for a
critical document and for an "other" document the window then records (items 4 and 8),
and every tracker status accepted as a list filter (item 9)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from services.intake.domain.model import ClaimStatus
from shared.devstack.demo_claims import make_claim
from shared.devstack.stack import StackConfig
from tests.e2e.helpers import SMALL_REFUND, tasks_for, wait_status
from tests.tokens import reviewer, window

pytestmark = pytest.mark.e2e
WINDOW = window("window-01")
# On review's blacklist within the look-back: the cross-check rejects at once.
BLACKLISTED = "91510302793PCF429K"
CHECKLIST = ["refund_application", "vat_returns", "input_invoice_list", "bank_account_proof"]


def refund_body(rng: random.Random, period: str, **overrides: Any) -> dict[str, Any]:
    body = make_claim(rng, period)
    body.update({"tax_credit_rating": "A", **SMALL_REFUND, **overrides})
    return body


async def test_a_rejection_is_not_lost_when_a_promised_document_follows_at_once(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    """Item 6: 16 claims of a blacklisted enterprise, each with a promised document the
    window records 0-100 ms after registering. Review rejects each at once; every one
    must end rejected (before the fix about a third stayed in_review for ever)."""
    rng = random.Random()
    periods = [f"2025-{m:02d}" for m in range(1, 13)] + [f"2024-{m:02d}" for m in range(1, 5)]

    async def one(period: str) -> str:
        body = refund_body(
            rng,
            period,
            uscc=BLACKLISTED,
            documents_supplied=[d for d in CHECKLIST if d != "input_invoice_list"],
            documents_promised=["input_invoice_list"],
        )
        r = await client.post(f"{services.url('intake')}/claims", json=body, headers=WINDOW)
        assert r.status_code == 201, r.text
        claim_id: str = r.json()["claim_id"]
        await asyncio.sleep(rng.uniform(0, 0.1))
        supplied = await client.post(
            f"{services.url('intake')}/claims/{claim_id}/documents",
            json={"document_id": "input_invoice_list"},
            headers=WINDOW,
        )
        # Recorded, or refused because the rejection already arrived.
        assert supplied.status_code in (200, 409), supplied.text
        await wait_status(client, services, claim_id, "rejected", timeout=60)
        return claim_id

    rejected = await asyncio.gather(*(one(p) for p in periods))
    assert len(set(rejected)) == len(periods)
    # The enterprise can register again for each period: no live claim is left behind.
    again = await client.post(
        f"{services.url('intake')}/claims",
        json=refund_body(rng, periods[0], uscc=BLACKLISTED),
        headers=WINDOW,
    )
    assert again.status_code == 201, again.text


async def test_a_department_asks_for_a_critical_and_an_other_document(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    """Items 4 and 8: the tax department returns a refund asking again for vat_returns
    (critical, supplied at the window) and for 补充说明（盖章）; free text alone is
    refused. The tracker shows both with the deadline; the window records both."""
    rng = random.Random()
    r = await client.post(
        f"{services.url('intake')}/claims", json=refund_body(rng, "2026-08"), headers=WINDOW
    )
    assert r.status_code == 201, r.text
    claim_id = r.json()["claim_id"]
    task = next(t for t in await tasks_for(client, services, claim_id) if t["department"] == "tax")
    url = f"{services.url('review')}/tasks/{task['task_id']}/decision"
    headers = dict(reviewer("tax", "tax-reviewer"))
    free_text = await client.post(
        url, json={"decision": "return", "documents": ["补充说明（盖章）"]}, headers=headers
    )
    assert free_text.status_code == 422, free_text.text
    assert free_text.json()["errors"][0]["field"] == "documents"
    returned = await client.post(
        url,
        json={
            "decision": "return",
            "comment": "申报表需重新盖章",
            "documents": ["vat_returns"],
            "other_documents": [{"title": "补充说明（盖章）"}],
        },
        headers=headers,
    )
    assert returned.status_code == 200, returned.text
    view = await wait_status(client, services, claim_id, "returned_for_documents")
    assert view["pending_documents"] == ["vat_returns", "other-1"]
    assert view["documents_due_by"] is not None and view["step_due_at"] is not None
    assert view["holders"] == ["enterprise", "review:tax"]
    asked = {d["document_id"]: d for d in view["documents"] if d["state"] == "requested"}
    assert asked["vat_returns"]["critical"] is True
    assert asked["other-1"]["title"] == "补充说明（盖章）"
    assert {d["requested_by"] for d in asked.values()} == {"tax"}
    for document_id in ("vat_returns", "other-1"):
        done = await client.post(
            f"{services.url('intake')}/claims/{claim_id}/documents",
            json={"document_id": document_id},
            headers=WINDOW,
        )
        assert done.status_code == 200, done.text
    await wait_status(client, services, claim_id, "in_review")

    async def resumed() -> bool:
        r = await client.get(f"{services.url('review')}/claims/{claim_id}/review")
        return bool(r.json()["status"] == "department_review")

    for _ in range(150):
        if await resumed():
            break
        await asyncio.sleep(0.2)
    assert await resumed()


async def test_every_tracker_status_is_a_list_filter(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    """Item 9: a clerk can list the claims in any status the tracker shows."""
    for status in ClaimStatus:
        r = await client.get(f"{services.url('intake')}/claims", params={"status": status.value})
        assert r.status_code == 200, (status, r.text)
        assert all(item["status"] == status.value for item in r.json()["items"])
    wrong = await client.get(f"{services.url('intake')}/claims", params={"status": "paid_twice"})
    assert wrong.status_code == 422
