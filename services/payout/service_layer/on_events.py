"""What payout does with review's and intake's events: an approval becomes a payout
(reserved → requested or held, or queued; withheld when it is not what intake received),
intake's claim.submitted is kept (and re-checks an approval that waited for it),
completed documents release a hold, a lapse or withdrawal releases what has not reached
the bank."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence

from services.payout.adapters import claim_documents, funds, hops, intake_facts, payouts
from services.payout.adapters.claim_documents import Ending
from services.payout.domain.admission import Approval
from services.payout.domain.model import CANCELLABLE, PayoutStatus, fund_of, voucher_kind
from services.payout.domain.transitions import move
from services.payout.service_layer import admission, funding
from shared.contracts import (
    ClaimDocumentsCompletedV1,
    ClaimLapsedV1,
    ClaimSubmittedV1,
    ClaimWithdrawnV1,
    EventEnvelope,
    ReviewDecidedV1,
)
from shared.db import DbConnection
from shared.messaging.consumer import PrepareBatch, TransientError
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
    # Issue 12 item 5: pay only what intake received. Checked (and the enterprise's cap
    # taken) before the payout row is written, so it is written queued or withheld.
    approval = Approval(
        claim_kind=decided.claim_kind,
        program_id=decided.program_id,
        amount_fen=decided.approved_amount_fen,
        payee=decided.payee,
    )
    verdict = await admission.judge(uow, envelope.claim_id, approval, catalogue)
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
        uscc=verdict.uscc,
        cap_charged_fen=verdict.charged_fen,
        withheld=verdict.withhold,
    )
    status = PayoutStatus.QUEUED if verdict.withhold is None else PayoutStatus.WITHHELD
    row = await payouts.insert(uow.conn, new, move(None, status))
    if row is None:
        # A second approval for a claim already in payout pays nothing more (and takes
        # nothing of the cap).
        if verdict.charged_fen:
            await intake_facts.give_back(uow.conn, _charge(new))
        return
    docs = await claim_documents.get(uow.conn, envelope.claim_id)
    if docs and (docs["lapsed_at"] or docs["withdrawn_at"]):
        reason = "lapsed" if docs["lapsed_at"] else "withdrawn"
        await funding.release(uow, row, f"claim {reason} before approval")
        return
    if verdict.withhold is not None:
        await admission.announce_withheld(uow, row, verdict.withhold)
        return
    await admission.admit(uow, row)


def _charge(new: payouts.NewPayout) -> dict[str, object]:
    """What ``give_back`` reads of a payout, for an approval whose row was not written."""
    return {
        "payout_id": new.payout_id,
        "program_id": new.program_id,
        "uscc": new.uscc,
        "cap_charged_fen": new.cap_charged_fen,
    }


async def claim_submitted(
    uow: UnitOfWork, submitted: ClaimSubmittedV1, envelope: EventEnvelope, catalogue: Catalogue
) -> None:
    """Keep what intake received (same transaction as the inbox row); an approval that
    arrived first (another topic) and waits for it is checked again now."""
    await intake_facts.record(uow.conn, envelope.claim_id, envelope.event_id, submitted, uow.now)
    await admission.recheck_awaiting(uow, envelope.claim_id, catalogue)


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


def batch_fund_locks(catalogue: Catalogue) -> PrepareBatch:
    """The consumer's ``prepare_batch``: every fund a batch's events will lock, taken
    first and in fund order. Without it a batch locked each approval's fund in the order
    of its events, after payout rows of the events before — two payout instances' batches
    (or a batch and the payment loop) then deadlocked (docs/performance.md)."""

    async def lock_batch_funds(conn: DbConnection, envelopes: Sequence[EventEnvelope]) -> None:
        new_funds: set[str] = set()
        for envelope in envelopes:
            if envelope.event_type in ("review.decided", "claim.submitted"):
                # An unknown program: the event's handler refuses it.
                with contextlib.suppress(LookupError):
                    kind, program = (
                        envelope.payload.get("claim_kind"),
                        envelope.payload.get("program_id"),
                    )
                    new_funds.add(fund_of(str(kind), program, catalogue))
        await funds.lock_for_claims(
            conn, sorted(new_funds), sorted({e.claim_id for e in envelopes})
        )

    return lock_batch_funds
