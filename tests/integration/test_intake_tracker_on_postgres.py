"""The tracker on the real PostgreSQL (issue 9): a department asking again for a
critical document (item 4), a rejection arriving after a document recorded later
(item 6), a permanently failed payout that finance closes (item 7), and outcome
counters that move only after commit (item 15)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.intake.domain.commands import SupplyDocument
from services.intake.metrics import CLAIMS_OUTCOME
from shared.contracts import (
    EventEnvelope,
    PayoutAccountCorrectedV1,
    PayoutFailedV1,
    PayoutReleasedV1,
    PayoutRequestedV1,
    PayoutSentV1,
    ReviewDecidedV1,
    ReviewReturnedForDocumentsV1,
)
from shared.contracts.topics import REVIEW_EVENTS
from shared.db import create_pool, migrate
from shared.devstack.stack import StackConfig
from shared.messaging.after_commit import after_commit_scope
from shared.messaging.consumer import IdempotentBatchConsumer
from tests.integration.helpers import Rec
from tests.integration.test_intake_rules_on_postgres import (
    HANDLERS,
    MIGRATIONS,
    PAYEE,
    refund,
    register,
    supply,
    track_event,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(infra: StackConfig) -> AsyncIterator[asyncpg.Pool]:
    name = f"intake_tr_{uuid.uuid4().hex[:8]}"
    await migrate(infra.dsn, name, MIGRATIONS)
    p = await create_pool(infra.dsn, name, min_size=2, max_size=6)
    try:
        yield p
    finally:
        await p.close()


async def track(pool: asyncpg.Pool, *envelopes: EventEnvelope) -> None:
    """Apply events in one transaction, as the consumer does: counters after commit."""
    with after_commit_scope() as pending:
        async with pool.acquire() as conn, conn.transaction():
            for envelope in envelopes:
                await track_event(conn, envelope)
    pending.run()


async def _claim(pool: asyncpg.Pool, **kw: Any) -> uuid.UUID:
    created = await register(pool, refund(**kw))
    assert created.status_code == 201, created.body
    return uuid.UUID(created.body["claim_id"])


def _review(payload: Any, claim_id: uuid.UUID, at: datetime | None = None) -> EventEnvelope:
    return EventEnvelope.wrap(
        payload, claim_id=claim_id, producer="review", occurred_at=at or datetime.now(UTC)
    )


def _payout(payload: Any, claim_id: uuid.UUID) -> EventEnvelope:
    return EventEnvelope.wrap(payload, claim_id=claim_id, producer="payout")


def _decided(decision: str, claim_id: uuid.UUID, at: datetime | None = None) -> EventEnvelope:
    return _review(
        ReviewDecidedV1(
            decision=decision,
            approved_amount_fen=900_000_00 if decision == "approved" else 0,
            claim_kind="vat_refund",
            payee=PAYEE,
            claim_received_at=datetime.now(UTC),
        ),
        claim_id,
        at,
    )


async def _row(pool: asyncpg.Pool, claim_id: uuid.UUID) -> asyncpg.Record:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM claims WHERE claim_id = $1", claim_id)
    assert row is not None
    return row


async def test_a_department_can_ask_again_for_a_critical_document(pool: asyncpg.Pool) -> None:
    """Item 4: vat_returns is critical and was supplied at the window; the tax
    department returns the claim asking for it again. The claim is returned with a
    deadline, the document is 'requested' (its own state), and the window records it."""
    claim_id = await _claim(pool)
    asked = _review(
        ReviewReturnedForDocumentsV1(department="tax", documents=["vat_returns"]), claim_id
    )
    await track(pool, asked)
    row = await _row(pool, claim_id)
    assert row["status"] == "returned_for_documents"
    assert list(row["pending_documents"]) == ["vat_returns"]
    assert row["documents_due_at"] is not None and row["documents_due_at"] > datetime.now(UTC)
    assert list(row["holders"]) == ["enterprise", "review:tax"]
    async with pool.acquire() as conn:
        doc = await conn.fetchrow(
            "SELECT * FROM claim_documents WHERE claim_id = $1 AND document_id = 'vat_returns'",
            claim_id,
        )
        assert doc is not None
        assert (doc["state"], doc["critical"], doc["requested_by"]) == ("requested", True, "tax")
        done = await supply(conn, SupplyDocument(claim_id, "vat_returns", "window-01"))
    assert done["documents_completed"] is True
    row = await _row(pool, claim_id)
    assert row["status"] == "in_review" and row["documents_due_at"] is None


async def test_a_rejection_older_than_a_recorded_document_is_not_lost(
    pool: asyncpg.Pool,
) -> None:
    """Item 6: the claim promised a document; review rejected it (cross-check) at T1;
    the window recorded the document at T2 > T1 before the rejection reached intake."""
    claim_id = await _claim(pool, promised=("input_invoice_list",))
    t1 = datetime.now(UTC)
    async with pool.acquire() as conn:
        await supply(
            conn,
            SupplyDocument(claim_id, "input_invoice_list", "window-01"),
            t1 + timedelta(milliseconds=50),
        )
    assert (await _row(pool, claim_id))["status"] == "in_review"
    await track(pool, _decided("rejected", claim_id, t1))
    row = await _row(pool, claim_id)
    assert row["status"] == "rejected"
    # The enterprise may register a new claim for the period.
    again = await register(pool, refund(uscc=row["uscc"]))
    assert again.status_code == 201, again.body


async def test_finance_corrects_or_closes_a_permanently_failed_payout(
    pool: asyncpg.Pool,
) -> None:
    """Item 7, tracker side: payout_failed is held by finance with a deadline; an
    account correction puts it back in payment; a closure by finance ends the claim
    (status closed) and frees the enterprise's one live claim."""
    claim_id = await _claim(pool)
    payout_id = uuid.uuid4()
    failed = [
        _decided("approved", claim_id),
        _payout(PayoutRequestedV1(payout_id=payout_id, amount_fen=1_00, payee=PAYEE), claim_id),
        _payout(
            PayoutSentV1(payout_id=payout_id, amount_fen=1_00, gateway_reference="g"), claim_id
        ),
        _payout(
            PayoutFailedV1(payout_id=payout_id, reason="account closed", permanent=True), claim_id
        ),
    ]
    await track(pool, *failed)
    row = await _row(pool, claim_id)
    assert row["status"] == "payout_failed"
    assert list(row["holders"]) == ["finance (account correction or closure)"]
    assert row["action_due_at"] is not None and row["action_due_at"] > datetime.now(UTC)
    corrected = _payout(
        PayoutAccountCorrectedV1(
            payout_id=payout_id, payee=PAYEE, next_issue_no=2, corrected_by="fin-01"
        ),
        claim_id,
    )
    await track(pool, corrected)
    assert (await _row(pool, claim_id))["status"] == "payout_requested"
    assert (await _row(pool, claim_id))["action_due_at"] is None
    await track(pool, failed[-1].model_copy(update={"event_id": uuid.uuid4()}))
    assert (await _row(pool, claim_id))["status"] == "payout_failed"
    released = _payout(
        PayoutReleasedV1(
            payout_id=payout_id,
            fund_id="treasury-refund",
            amount_fen=1_00,
            reason="closed by finance: the enterprise was deregistered",
        ),
        claim_id,
    )
    await track(pool, released)
    row = await _row(pool, claim_id)
    assert row["status"] == "closed" and row["action_due_at"] is None
    assert list(row["holders"]) == ["none (final)"]
    again = await register(pool, refund(uscc=row["uscc"]))
    assert again.status_code == 201, again.body


def _count(outcome: str) -> float:
    value = CLAIMS_OUTCOME.labels("vat_refund", "none", outcome)._value.get()
    return float(value)


async def test_outcome_counter_moves_once_after_commit(pool: asyncpg.Pool) -> None:
    """Item 15: a batch with a poison message is rolled back and re-run with savepoints;
    the rejection in it is counted once, after the commit."""
    claim_id = await _claim(pool)
    schema = await pool.fetchval("SELECT current_schema()")
    consumer = IdempotentBatchConsumer(
        service="intake", schema=schema, pool=pool, handlers=HANDLERS
    )
    poison = _review(
        ReviewReturnedForDocumentsV1(department="tax", documents=["x"]), uuid.uuid4()
    )  # a claim intake never registered: the tracker refuses it
    before = _count("rejected")
    await consumer.handle_batch(
        [
            Rec(REVIEW_EVENTS, 0, 1, b"k", _decided("rejected", claim_id).to_bytes()),
            Rec(REVIEW_EVENTS, 0, 2, b"k", poison.to_bytes()),
        ]
    )
    assert (await _row(pool, claim_id))["status"] == "rejected"
    assert _count("rejected") == before + 1
