"""Payout's use cases: create a payout on approval, send it, record the bank's outcome."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from services.payout.adapters.gateway import PaymentGateway, PaymentInstruction
from services.payout.domain.model import PayoutStatus
from services.payout.metrics import PAID_YUAN, PAYOUTS, TIME_TO_PAYMENT
from shared.contracts import (
    BankAccount,
    EventEnvelope,
    PayoutConfirmedV1,
    PayoutFailedV1,
    PayoutRequestedV1,
    PayoutSentV1,
    ReviewDecidedV1,
)
from shared.contracts.topics import PAYOUT_EVENTS
from shared.db import DbConnection
from shared.messaging.outbox import stage_events

SERVICE = "payout"


async def on_review_decided(conn: DbConnection, envelope: EventEnvelope) -> None:
    decided = envelope.parse_payload()
    assert isinstance(decided, ReviewDecidedV1)
    if decided.decision != "approved":
        return
    payout_id = uuid.uuid4()
    now = datetime.now(UTC)
    inserted = await conn.fetchval(
        """INSERT INTO payouts (payout_id, claim_id, claim_kind, amount_fen,
               approved_amount_fen, payee, status, claim_received_at, requested_at)
           VALUES ($1, $2, $3, $4, $4, $5::jsonb, 'requested', $6, $7)
           ON CONFLICT (claim_id) DO NOTHING RETURNING true""",
        payout_id,
        envelope.claim_id,
        decided.claim_kind,
        decided.approved_amount_fen,
        decided.payee.model_dump_json(),
        decided.claim_received_at,
        now,
    )
    if not inserted:
        return  # a second approval for a paid-or-paying claim pays nothing more
    await stage_events(
        conn,
        SERVICE,
        PAYOUT_EVENTS,
        [
            EventEnvelope.wrap(
                PayoutRequestedV1(
                    payout_id=payout_id, amount_fen=decided.approved_amount_fen, payee=decided.payee
                ),
                claim_id=envelope.claim_id,
                producer=SERVICE,
                correlation_id=envelope.correlation_id,
                causation_id=envelope.event_id,
                occurred_at=now,
            )
        ],
    )
    PAYOUTS.labels(decided.claim_kind, PayoutStatus.REQUESTED.value).inc()


async def dispatch_requested(pool: asyncpg.Pool, gateway: PaymentGateway, limit: int = 100) -> int:
    """Send requested payouts to the gateway. A crash after the bank accepted and before
    the commit re-sends the same payout id next time, which the bank ignores."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT payout_id, claim_id, claim_kind, amount_fen, payee FROM payouts
               WHERE status = 'requested' ORDER BY requested_at LIMIT $1
               FOR UPDATE SKIP LOCKED""",
            limit,
        )
        events = []
        now = datetime.now(UTC)
        for r in rows:
            payee = BankAccount.model_validate_json(r["payee"])
            reference = await gateway.submit(
                PaymentInstruction(
                    payout_id=r["payout_id"],
                    amount_fen=r["amount_fen"],
                    account_number=payee.account_number,
                    account_name=payee.account_name,
                )
            )
            await conn.execute(
                """UPDATE payouts SET status = 'sent', sent_at = $2, gateway_reference = $3
                   WHERE payout_id = $1""",
                r["payout_id"],
                now,
                reference,
            )
            events.append(
                EventEnvelope.wrap(
                    PayoutSentV1(
                        payout_id=r["payout_id"],
                        amount_fen=r["amount_fen"],
                        gateway_reference=reference,
                    ),
                    claim_id=r["claim_id"],
                    producer=SERVICE,
                    occurred_at=now,
                )
            )
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    for r in rows:
        PAYOUTS.labels(r["claim_kind"], PayoutStatus.SENT.value).inc()
    return len(rows)


async def record_confirmations(
    pool: asyncpg.Pool, gateway: PaymentGateway, limit: int = 500
) -> int:
    confirmations = await gateway.due_confirmations(limit)
    if not confirmations:
        return 0
    observed: list[tuple[str, PayoutStatus, int, float]] = []
    async with pool.acquire() as conn, conn.transaction():
        events = []
        for c in confirmations:
            row = await conn.fetchrow(
                """SELECT payout_id, claim_id, claim_kind, amount_fen, claim_received_at
                   FROM payouts WHERE payout_id = $1 AND status = 'sent' FOR UPDATE""",
                c.payout_id,
            )
            if row is None:
                continue  # already recorded: the bank re-sent an outcome
            if c.outcome == "settled":
                await conn.execute(
                    "UPDATE payouts SET status = 'paid', paid_at = $2 WHERE payout_id = $1",
                    c.payout_id,
                    c.at,
                )
                ttp = max(0.0, (c.at - row["claim_received_at"]).total_seconds())
                payload: PayoutConfirmedV1 | PayoutFailedV1 = PayoutConfirmedV1(
                    payout_id=c.payout_id,
                    amount_fen=row["amount_fen"],
                    arrived_at=c.at,
                    time_to_payment_seconds=ttp,
                )
                observed.append((row["claim_kind"], PayoutStatus.PAID, row["amount_fen"], ttp))
            else:
                reason = c.reason or "failed at the bank"
                await conn.execute(
                    """UPDATE payouts SET status = 'failed', failed_at = $2, failure_reason = $3
                       WHERE payout_id = $1""",
                    c.payout_id,
                    c.at,
                    reason,
                )
                payload = PayoutFailedV1(payout_id=c.payout_id, reason=reason, permanent=True)
                observed.append((row["claim_kind"], PayoutStatus.FAILED, 0, 0.0))
            events.append(
                EventEnvelope.wrap(
                    payload, claim_id=row["claim_id"], producer=SERVICE, occurred_at=c.at
                )
            )
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    await gateway.acknowledge([c.payout_id for c in confirmations])
    for kind, status, amount_fen, ttp in observed:
        PAYOUTS.labels(kind, status.value).inc()
        if status is PayoutStatus.PAID:
            PAID_YUAN.labels(kind).inc(amount_fen / 100)
            TIME_TO_PAYMENT.labels(kind).observe(ttp)
    return len(confirmations)
