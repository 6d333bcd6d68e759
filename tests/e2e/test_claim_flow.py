"""A claim through intake → review → payout, over the real broker, PostgreSQL and three
service processes."""

from __future__ import annotations

import asyncio
import json
import random
import uuid

import asyncpg
import httpx
import pytest
import rfc8785

from shared.contracts import ClaimSubmittedV1, EventEnvelope
from shared.contracts.topics import DEAD_LETTER, INTAKE_EVENTS, REVIEW_EVENTS
from shared.devstack.demo_claims import make_uscc
from shared.devstack.stack import StackConfig
from tests.e2e.helpers import claim_status, decide, submit_claim, tasks_for, wait_status
from tests.kafka_helpers import find_on_topic, produce_as

pytestmark = pytest.mark.e2e


async def payouts_of(
    client: httpx.AsyncClient, cfg: StackConfig, claim_id: str
) -> list[dict[str, object]]:
    r = await client.get(f"{cfg.url('payout')}/payouts", params={"claim_id": claim_id})
    r.raise_for_status()
    rows: list[dict[str, object]] = r.json()
    return rows


async def test_approved_claim_is_paid_exactly_once(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    claim_id = await submit_claim(client, services)
    tasks = await tasks_for(client, services, claim_id)
    assert {t["department"] for t in tasks} == {"tax", "treasury"}
    # The departments decide in parallel (并联审批).
    responses = await asyncio.gather(*(decide(client, services, t, "approve") for t in tasks))
    assert [r.status_code for r in responses] == [200, 200]
    view = await wait_status(client, services, claim_id, "paid")
    producers = {e["producer"] for e in view["timeline"]}
    assert producers == {"intake", "review", "payout"}
    types = [e["event_type"] for e in view["timeline"]]
    assert types.count("payout.confirmed") == 1
    payouts = await payouts_of(client, services, claim_id)
    assert len(payouts) == 1 and payouts[0]["status"] == "paid"
    assert payouts[0]["amount"] == view["eligible_amount"]


async def test_rejected_claim_is_never_paid(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    claim_id = await submit_claim(client, services)
    tasks = await tasks_for(client, services, claim_id)
    assert (await decide(client, services, tasks[0], "reject")).status_code == 200
    await wait_status(client, services, claim_id, "rejected")
    # The other department's task is cancelled: deciding it now is refused.
    late = await decide(client, services, tasks[1], "approve")
    assert late.status_code == 409, late.text
    await asyncio.sleep(1.5)
    assert await payouts_of(client, services, claim_id) == []
    assert (await claim_status(client, services, claim_id))["status"] == "rejected"


async def test_same_event_delivered_twice_is_processed_once(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    claim_id = await submit_claim(client, services)
    for task in await tasks_for(client, services, claim_id):
        assert (await decide(client, services, task, "approve")).status_code == 200
    await wait_status(client, services, claim_id, "paid")
    decided = await find_on_topic(
        services.bootstrap,
        REVIEW_EVENTS,
        lambda m: m.get("claim_id") == claim_id and m.get("event_type") == "review.decided",
    )
    # The exact bytes and signature review published (RFC 8785 round-trips; Ed25519
    # signatures are deterministic).
    raw = rfc8785.dumps(decided)
    # The broker hands the very same event to payout twice more (a producer retry, a
    # rebalance): nothing may move.
    await produce_as(services, "review", REVIEW_EVENTS, raw, key=claim_id.encode())
    await produce_as(services, "review", REVIEW_EVENTS, raw, key=claim_id.encode())
    conn = await asyncpg.connect(services.dsn)
    try:

        async def seen() -> int:
            n: int = await conn.fetchval(
                "SELECT count(*) FROM payout.inbox WHERE message_id = $1", decided["event_id"]
            )
            return n

        await asyncio.sleep(2)
        assert await seen() == 1
        duplicates = await conn.fetchval(
            "SELECT count(*) FROM payout.payouts WHERE claim_id = $1", uuid.UUID(claim_id)
        )
        settled = await conn.fetchval(
            """SELECT count(*) FROM bank_sim.instructions i JOIN payout.payouts p USING (payout_id)
               WHERE p.claim_id = $1""",
            uuid.UUID(claim_id),
        )
    finally:
        await conn.close()
    assert (duplicates, settled) == (1, 1)
    payout_metrics = (await client.get(f"{services.url('payout')}/metrics")).text
    assert (
        'claimflow_consumed_events_total{event_type="review.decided",outcome="duplicate",service="payout"}'
        in payout_metrics
    )


async def test_malformed_message_is_dead_lettered_and_the_next_one_processed(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    marker = uuid.uuid4().hex
    truncated = f'{{"event_type": "claim.submitted", "note": "{marker}"'.encode()
    not_an_envelope = json.dumps({"event_type": "claim.submitted", "note": marker}).encode()
    good = EventEnvelope.wrap(
        ClaimSubmittedV1.model_validate(
            {**json.loads(make_claim_event_payload()), "registered_by": "window-09"}
        ),
        claim_id=uuid.uuid4(),
        producer="intake",
    )
    # All three on one partition, the good one last: the poison must not block it. Signed
    # by intake: a bug of the entitled producer, not a forgery (test_signed_events.py).
    for value in (truncated, not_an_envelope, good.to_bytes()):
        await produce_as(services, "intake", INTAKE_EVENTS, value, key=b"same", partition=0)
    letters = []
    for value in (truncated, not_an_envelope):
        text = value.decode()
        letters.append(
            await find_on_topic(
                services.bootstrap,
                DEAD_LETTER,
                # payout reads the intake topic too and dead-letters the same poison
                lambda m: (
                    m.get("raw_value") == text  # noqa: B023 (awaited at once)
                    and m.get("service") == "review"
                ),
                timeout=30,
            )
        )
    for letter in letters:
        assert letter["service"] == "review"
        assert letter["source_topic"] == INTAKE_EVENTS and letter["source_partition"] == 0
        assert "envelope invalid" in letter["reason"]
    assert letters[0]["event_type"] is None
    assert letters[1]["event_type"] == "claim.submitted"
    assert letters[0]["source_offset"] < letters[1]["source_offset"]
    assert len(await tasks_for(client, services, str(good.claim_id))) == 2


def make_claim_event_payload() -> str:
    """A valid claim.submitted payload, as intake would write it."""
    from datetime import UTC, datetime

    return json.dumps(
        {
            "claim_kind": "vat_refund",
            "uscc": make_uscc(random.Random()),
            "enterprise_name": "自贡测试企业有限公司",
            "tax_period": "2026-09",
            "requested_amount_fen": 100_000_00,
            "eligible_amount_fen": 100_000_00,
            "payee": {
                "bank_name": "自贡银行",
                "account_name": "自贡测试企业有限公司",
                "account_number": "6222020200001234567",
            },
            "registered_by": "window-09",
            "received_at": datetime.now(UTC).isoformat(),
        }
    )
