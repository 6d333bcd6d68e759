"""Intake's use cases: register a claim, and keep the tracker from every event."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from services.intake.adapters.repository import ClaimRepository
from services.intake.domain.commands import RegisterVatRefund
from services.intake.domain.model import ClaimStatus, compute_vat_refund
from shared.contracts import (
    ClaimSubmittedV1,
    EventEnvelope,
    PayoutFailedV1,
    ReviewDecidedV1,
)
from shared.contracts.topics import INTAKE_EVENTS
from shared.db import DbConnection
from shared.messaging.outbox import stage_events

SERVICE = "intake"


class DuplicateClaim(Exception):
    def __init__(self, existing: uuid.UUID) -> None:
        super().__init__(f"enterprise already has live claim {existing} for this period")
        self.existing = existing


async def register_vat_refund(
    conn: DbConnection, cmd: RegisterVatRefund, *, policy_year: int
) -> uuid.UUID:
    refund = compute_vat_refund(
        end_credit_fen=cmd.end_credit_fen,
        base_credit_fen=cmd.base_credit_fen,
        input_ratio=cmd.input_ratio,
        rating=cmd.tax_credit_rating,
        policy_year=policy_year,
    )
    note = refund.note
    if note is None and refund.eligible_fen != cmd.requested_amount_fen:
        note = (
            f"requested {cmd.requested_amount_fen} fen differs from eligible "
            f"{refund.eligible_fen} fen under the {policy_year} rule"
        )
    claim_id = uuid.uuid4()
    received_at = datetime.now(UTC)
    repo = ClaimRepository(conn)
    async with conn.transaction():
        existing = await repo.find_live(cmd.uscc, "vat_refund", cmd.tax_period)
        if existing is not None:
            raise DuplicateClaim(existing)
        try:
            await repo.add(
                {
                    "claim_id": claim_id,
                    "kind": "vat_refund",
                    "uscc": cmd.uscc,
                    "enterprise_name": cmd.enterprise_name,
                    "tax_period": cmd.tax_period,
                    "requested_amount_fen": cmd.requested_amount_fen,
                    "eligible_amount_fen": refund.eligible_fen,
                    "amount_note": note,
                    "details": {
                        "end_credit_fen": cmd.end_credit_fen,
                        "base_credit_fen": cmd.base_credit_fen,
                        "incremental_credit_fen": refund.incremental_credit_fen,
                        "stock_credit_fen": refund.stock_credit_fen,
                        "input_ratio": str(cmd.input_ratio),
                        "tax_credit_rating": cmd.tax_credit_rating,
                        "policy_year": policy_year,
                    },
                    "payee": cmd.payee.model_dump(),
                    "registered_by": cmd.registered_by,
                    "received_at": received_at,
                    "status": ClaimStatus.SUBMITTED.value,
                }
            )
        except asyncpg.UniqueViolationError:
            # Lost a race with an identical registration: the index decided.
            other = await ClaimRepository(conn).find_live(cmd.uscc, "vat_refund", cmd.tax_period)
            raise DuplicateClaim(other or claim_id) from None
        envelope = EventEnvelope.wrap(
            ClaimSubmittedV1(
                claim_kind="vat_refund",
                uscc=cmd.uscc,
                enterprise_name=cmd.enterprise_name,
                tax_period=cmd.tax_period,
                requested_amount_fen=cmd.requested_amount_fen,
                eligible_amount_fen=refund.eligible_fen,
                payee=cmd.payee,
                registered_by=cmd.registered_by,
                received_at=received_at,
            ),
            claim_id=claim_id,
            producer=SERVICE,
            occurred_at=received_at,
        )
        await repo.record_event(envelope)
        await stage_events(conn, SERVICE, INTAKE_EVENTS, [envelope])
    return claim_id


def _status_after(envelope: EventEnvelope) -> ClaimStatus | None:
    payload = envelope.parse_payload()
    match envelope.event_type:
        case "review.task_decided":
            return ClaimStatus.IN_REVIEW
        case "review.decided":
            assert isinstance(payload, ReviewDecidedV1)
            return ClaimStatus.APPROVED if payload.decision == "approved" else ClaimStatus.REJECTED
        case "payout.requested":
            return ClaimStatus.PAYOUT_REQUESTED
        case "payout.sent":
            return ClaimStatus.PAYOUT_SENT
        case "payout.confirmed":
            return ClaimStatus.PAID
        case "payout.failed":
            assert isinstance(payload, PayoutFailedV1)
            return ClaimStatus.PAYOUT_FAILED
    return None


async def track_event(conn: DbConnection, envelope: EventEnvelope) -> None:
    """Tracker: every event from review and payout goes on the claim's timeline."""
    repo = ClaimRepository(conn)
    if await repo.get(envelope.claim_id) is None:
        # An event for a claim intake never registered is a contract breach, not noise.
        raise LookupError(f"unknown claim {envelope.claim_id}")
    if not await repo.record_event(envelope):
        return
    status = _status_after(envelope)
    if status is not None:
        await repo.advance_status(envelope.claim_id, status.value, envelope.occurred_at)


TRACKED_EVENTS = (
    "review.task_decided",
    "review.decided",
    "payout.requested",
    "payout.sent",
    "payout.confirmed",
    "payout.failed",
)
