"""Events that cannot be forged (issue 12 item 4), on the real stack: a review.decided
that review did not sign — unsigned, signed with another service's key, or a signed one
replayed with a changed amount — is dead-lettered with the reason and pays nothing;
the genuine event still pays afterwards (the forgery did not take its inbox slot).
And (item 5) a genuinely signed review.decided above the eligible amount intake computed
is withheld by payout: nothing reaches the bank."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from shared.contracts import BankAccount, EventEnvelope, ReviewDecidedV1
from shared.contracts.topics import REVIEW_EVENTS
from shared.devstack.stack import StackConfig
from shared.messaging import signing
from shared.money import fen_to_yuan
from tests.e2e.helpers import claim_status, eventually, submit_claim, wait_status
from tests.kafka_helpers import produce, signature_headers
from tests.tokens import AUDITOR

pytestmark = pytest.mark.e2e

PAYEE = BankAccount(
    bank_name="自贡银行", account_name="自贡测试企业有限公司", account_number="6222020200004321"
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10, headers=dict(AUDITOR)) as c:
        yield c


@pytest.fixture
async def db(services: StackConfig) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(services.dsn)
    try:
        yield conn
    finally:
        await conn.close()


def decided(claim_id: str, received_at: str, amount_fen: int, producer: str) -> bytes:
    envelope = EventEnvelope.wrap(
        ReviewDecidedV1(
            decision="approved",
            approved_amount_fen=amount_fen,
            claim_kind="vat_refund",
            payee=PAYEE,
            claim_received_at=datetime.fromisoformat(received_at),
        ),
        claim_id=uuid.UUID(claim_id),
        producer=producer,
    )
    return signing.envelope_bytes(envelope)


async def refusal(db: asyncpg.Connection, service: str, marker: bytes) -> str:
    """The reason of ``service``'s dead letter whose raw bytes hold ``marker``."""

    async def probe() -> str | None:
        reason: str | None = await db.fetchval(
            f"""SELECT reason FROM {service}.dead_letters
                WHERE source_topic = $1 AND position($2::bytea IN raw_value) > 0""",
            REVIEW_EVENTS,
            marker,
        )
        return reason

    return await eventually(probe, timeout=30, what=f"{service} dead-letters the forgery")


async def test_forged_review_decided_is_dead_lettered_and_nothing_is_paid(
    services: StackConfig, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    # Submitted with the account the genuine decision names (payout pays only the
    # account intake registered: issue 12 item 5).
    claim_id = await submit_claim(client, services, bank_account=PAYEE.model_dump())
    received_at = (await claim_status(client, services, claim_id))["received_at"]
    key = claim_id.encode()

    # 1. Unsigned, 5,000,000,000.00 yuan: what issue 12 saw paid.
    unsigned = decided(claim_id, received_at, 500_000_000_000, "review")
    await produce(services.bootstrap, REVIEW_EVENTS, unsigned, key=key)
    marker = json.loads(unsigned)["event_id"].encode()
    assert "not signed" in await refusal(db, "payout", marker)
    assert "not signed" in await refusal(db, "intake", marker)

    # 2. Signed with intake's key, naming review as producer, then naming intake.
    for producer, why in (
        ("review", "signed by intake but the envelope names 'review'"),
        ("intake", "intake is not entitled to emit 'review.decided'"),
    ):
        forged = decided(claim_id, received_at, 500_000_000_000, producer)
        headers = signature_headers(services.data_dir, "intake", forged)
        await produce(services.bootstrap, REVIEW_EVENTS, forged, key=key, headers=headers)
        assert why in await refusal(db, "payout", json.loads(forged)["event_id"].encode())

    # 3. A genuine review.decided (signed by review) replayed with the amount changed, sent
    #    ahead of the genuine one.
    genuine = decided(claim_id, received_at, 1_234_56, "review")
    headers = signature_headers(services.data_dir, "review", genuine)
    replayed = genuine.replace(b'"approved_amount_fen":123456', b'"approved_amount_fen":12345600')
    assert replayed != genuine
    await produce(services.bootstrap, REVIEW_EVENTS, replayed, key=key, headers=headers)
    event_id = json.loads(genuine)["event_id"]
    reason = await refusal(db, "payout", b"12345600")
    assert "does not match the bytes received" in reason

    # Nothing paid, nothing reserved, for any of them.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM payout.payouts WHERE claim_id = $1", uuid.UUID(claim_id)
        )
        == 0
    )
    # The forgery took no inbox slot under the genuine event's id ...
    assert (
        await db.fetchval("SELECT count(*) FROM payout.inbox WHERE message_id = $1", event_id) == 0
    )
    refused = (await client.get(f"{services.url('payout')}/metrics")).text
    for code in ("unsigned", "not_entitled", "bad_signature"):
        assert f'claimflow_events_refused_total{{reason="{code}",service="payout"}}' in refused

    # ... so the genuine event, signed by review, is applied: the approved amount is paid.
    await produce(services.bootstrap, REVIEW_EVENTS, genuine, key=key, headers=headers)

    async def paid_amount() -> int | None:
        amount: int | None = await db.fetchval(
            "SELECT amount_fen FROM payout.payouts WHERE claim_id = $1", uuid.UUID(claim_id)
        )
        return amount

    assert (
        await eventually(paid_amount, timeout=30, what="the genuine decision applied") == 1_234_56
    )


async def test_the_services_own_events_travel_signed(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    """What intake publishes carries its key id and a signature that verifies with the
    configured public keys, over the exact bytes on the topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from shared.audit.keys import KeyRing
    from shared.contracts.topics import INTAKE_EVENTS

    claim_id = await submit_claim(client, services)
    keyring = KeyRing.load(services.data_dir / "keys" / "public.json")
    verifier = signing.EventVerifier(keyring)
    consumer = AIOKafkaConsumer(bootstrap_servers=services.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(INTAKE_EVENTS) or set()
        tps = [TopicPartition(INTAKE_EVENTS, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def find() -> str | None:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    if claim_id.encode() in (r.value or b""):
                        return verifier.check(r.value, r.headers)
            return None

        assert await eventually(find, timeout=30, what="intake's event on its topic") == "intake"
    finally:
        await consumer.stop()


async def test_signed_decision_above_intakes_eligible_amount_is_withheld_not_paid(
    services: StackConfig, client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    """Issue 12 item 5: review's signature is genuine, so payout accepts the event; but
    it approves more than intake found eligible. Payout withholds it with the reason,
    nothing is reserved and the simulated bank never gets an instruction."""
    claim_id = await submit_claim(client, services, bank_account=PAYEE.model_dump())
    view = await claim_status(client, services, claim_id)
    eligible_fen = int(Decimal(str(view["eligible_amount"])) * 100)
    genuine = decided(claim_id, view["received_at"], eligible_fen + 1_000_00, "review")
    headers = signature_headers(services.data_dir, "review", genuine)
    await produce(
        services.bootstrap, REVIEW_EVENTS, genuine, key=claim_id.encode(), headers=headers
    )
    base = services.url("payout")

    async def withheld() -> dict[str, Any] | None:
        r = await client.get(f"{base}/payouts", params={"claim_id": claim_id, "status": "withheld"})
        assert r.status_code == 200, r.text
        rows: list[dict[str, Any]] = r.json()
        return rows[0] if rows else None

    payout = await eventually(withheld, timeout=30, what="payout withholds the approval")
    assert payout["withheld_reason"] == "above_eligible"
    assert payout["approved_amount"] == str(fen_to_yuan(eligible_fen + 1_000_00))
    assert payout["reserved_at"] is None and payout["issued_at"] is None
    await asyncio.sleep(3)  # several rounds of the payment loop
    admin = await asyncpg.connect(services.admin_dsn)
    try:
        at_bank = await admin.fetchval(
            "SELECT count(*) FROM bank_sim.instructions WHERE payout_id = $1",
            uuid.UUID(payout["payout_id"]),
        )
        status = await admin.fetchval(
            "SELECT status FROM payout.payouts WHERE claim_id = $1", uuid.UUID(claim_id)
        )
    finally:
        await admin.close()
    assert at_bank == 0 and status == "withheld"
    metrics = (await client.get(f"{base}/metrics")).text
    assert 'claimflow_payouts_withheld_total{reason="above_eligible"}' in metrics
    # The window sees finance holding it, with finance's deadline, not "approved".
    view = await wait_status(client, services, claim_id, "payout_withheld")
    assert view["holders"] == ["finance (payee check: release or cancel)"], view
