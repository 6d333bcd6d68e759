"""What payout does with review's and intake's events: an approval becomes a payout
(reserved → requested or held, or queued), completed documents release a hold, a lapse
or withdrawal releases what has not reached the bank."""

from __future__ import annotations

import uuid

from services.payout.adapters import claim_documents, funds, hops, payouts, queue
from services.payout.adapters.claim_documents import Ending
from services.payout.domain.model import CANCELLABLE, PayoutStatus, fund_of, voucher_kind
from services.payout.domain.transitions import move
from services.payout.service_layer import funding
from shared.contracts import (
    ClaimDocumentsCompletedV1,
    ClaimLapsedV1,
    ClaimWithdrawnV1,
    EventEnvelope,
    ReviewDecidedV1,
)
from shared.messaging.consumer import TransientError
from shared.programs import Catalogue
from shared.unit_of_work import UnitOfWork


async def review_decided(
    uow: UnitOfWork, decided: ReviewDecidedV1, envelope: EventEnvelope, catalogue: Catalogue
) -> None:
    if decided.decision != "approved" or decided.approved_amount_fen <= 0:
        return
    fund_id = fund_of(decided.claim_kind, decided.program_id, catalogue)
    # The fund's row lock serialises every reservation on the fund (taken before the
    # payout row, whose foreign key would otherwise share-lock the fund first).
    if await funds.lock(uow.conn, fund_id) is None:
        # Funds are seeded when the service starts; read the batch again shortly.
        raise TransientError(f"fund {fund_id!r} not seeded yet")
    new = payouts.NewPayout(
        payout_id=uuid.uuid4(),
        claim_id=envelope.claim_id,
        claim_kind=decided.claim_kind,
        amount_fen=decided.approved_amount_fen,
        payee_json=decided.payee.model_dump_json(),
        claim_received_at=decided.claim_received_at,
        requested_at=uow.now,
        fund_id=fund_id,
        program_id=decided.program_id,
        voucher_kind=voucher_kind(decided.claim_kind),
        documents_pending=decided.documents_pending,
    )
    row = await payouts.insert(uow.conn, new, move(None, PayoutStatus.QUEUED))
    if row is None:
        return  # a second approval for a claim already in payout pays nothing more
    docs = await claim_documents.get(uow.conn, envelope.claim_id)
    if docs and (docs["lapsed_at"] or docs["withdrawn_at"]):
        reason = "lapsed" if docs["lapsed_at"] else "withdrawn"
        await funding.release(uow, row, f"claim {reason} before approval")
        return
    # A claim that finds others waiting joins the queue behind them (first come, first
    # served), even when it would fit.
    someone_waiting = await queue.queued_exists(uow.conn, fund_id, other_than=new.payout_id)
    if not someone_waiting and await funds.try_reserve(uow.conn, fund_id, new.amount_fen):
        await funding.after_reserved(uow, row)
    else:
        seq = await queue.enqueue(uow.conn, new.payout_id, uow.now)
        await funding.announce_queued(uow, row, row["issue_no"], seq)


async def documents_completed(
    uow: UnitOfWork, _: ClaimDocumentsCompletedV1, envelope: EventEnvelope
) -> None:
    await claim_documents.record_completed(uow.conn, envelope.claim_id, envelope.occurred_at)
    row = await payouts.lock(uow.conn, claim_id=envelope.claim_id)
    if row is None:
        return  # recorded: the approval, when it comes, will find the documents complete
    if row["status"] == PayoutStatus.QUEUED:
        await payouts.documents_complete(uow.conn, row["payout_id"], None)
        return
    if row["status"] != PayoutStatus.HELD:
        return
    m = move(row["status"], PayoutStatus.REQUESTED)
    await payouts.documents_complete(uow.conn, row["payout_id"], m)
    funding.count(uow, row["claim_kind"], PayoutStatus.REQUESTED)
    funding.emit(uow, funding.requested(row), row["claim_id"])


async def claim_lapsed(uow: UnitOfWork, _: ClaimLapsedV1, envelope: EventEnvelope) -> None:
    await _claim_ended(uow, envelope, "lapsed")


async def claim_withdrawn(uow: UnitOfWork, _: ClaimWithdrawnV1, envelope: EventEnvelope) -> None:
    await _claim_ended(uow, envelope, "withdrawn")


async def _claim_ended(uow: UnitOfWork, envelope: EventEnvelope, ending: Ending) -> None:
    await claim_documents.record_ended(uow.conn, envelope.claim_id, ending, envelope.occurred_at)
    row = await payouts.lock(uow.conn, claim_id=envelope.claim_id)
    if row is None:
        return  # recorded: a later approval releases at once
    status = PayoutStatus(row["status"])
    if status in CANCELLABLE:
        await funding.release(uow, row, f"claim {ending}")
        await funding.drain_queue(uow, row["fund_id"])
    elif status is not PayoutStatus.RELEASED:
        # Payment has started or finished, or the bank may have the money (issuing,
        # unknown): never un-pay; record and surface it.
        note = f"claim {ending} at {envelope.occurred_at.isoformat()} while payout {status}"
        await payouts.note_late_cancellation(uow.conn, row["payout_id"], note)
        pid, issue_no, attempt = row["payout_id"], row["issue_no"], row["attempts"]
        await hops.add(uow.conn, pid, issue_no, attempt, "late_cancellation", uow.now, note)
