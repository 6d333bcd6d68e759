"""The steps several use cases share: reserve (held or requested), queue, hand freed
money to the queue, release, fail an issue for good. Each runs inside the caller's unit
of work, under the fund's lock the caller took (lock order: fund, then payouts)."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from services.payout.adapters import (
    claim_documents,
    funds,
    hops,
    intake_facts,
    payouts,
    queue,
    vouchers,
)
from services.payout.domain.model import COMMITTED, RESERVED, PayoutStatus, after_approval
from services.payout.domain.transitions import move
from services.payout.metrics import FAILURES, PAYOUTS
from shared.contracts import (
    BankAccount,
    EventPayload,
    PayoutFailedV1,
    PayoutHeldV1,
    PayoutQueuedV1,
    PayoutReleasedV1,
    PayoutRequestedV1,
)
from shared.programs import Catalogue
from shared.unit_of_work import UnitOfWork


def count(uow: UnitOfWork, claim_kind: str, status: PayoutStatus) -> None:
    """claimflow_payouts_total, once the unit of work has committed."""
    label = status.value
    uow.after_commit(lambda: PAYOUTS.labels(claim_kind, label).inc())


def count_failure(uow: UnitOfWork, fund_id: str, kind: str) -> None:
    uow.after_commit(lambda: FAILURES.labels(fund_id, kind).inc())


def emit(
    uow: UnitOfWork, payload: EventPayload, claim_id: uuid.UUID, at: datetime | None = None
) -> None:
    """Emit an event about ``claim_id``. An event about another claim than the one the
    consumed event was about (the queue moving on) starts that claim's own conversation."""
    other = uow.cause is not None and uow.cause.claim_id != claim_id
    uow.emit(payload, claim_id=claim_id, correlation_id=claim_id if other else None, occurred_at=at)


def requested(row: asyncpg.Record) -> PayoutRequestedV1:
    return PayoutRequestedV1(
        payout_id=row["payout_id"],
        amount_fen=row["amount_fen"],
        payee=BankAccount.model_validate_json(row["payee"]),
    )


async def after_reserved(uow: UnitOfWork, row: asyncpg.Record) -> None:
    """Move a payout whose amount was just reserved to held or requested."""
    docs = await claim_documents.get(uow.conn, row["claim_id"])
    pending = bool(row["documents_pending"]) and not (docs and docs["documents_completed_at"])
    status = after_approval(reserved=True, documents_pending=pending)
    pid, issue_no = row["payout_id"], row["issue_no"]
    await payouts.reserve(uow.conn, pid, move(row["status"], status), uow.now, pending)
    await hops.add(uow.conn, pid, issue_no, 0, "reserved", uow.now)
    count(uow, row["claim_kind"], status)
    if status is PayoutStatus.HELD:
        await hops.add(uow.conn, pid, issue_no, 0, "held", uow.now, "documents pending (容缺)")
        held = PayoutHeldV1(payout_id=pid, fund_id=row["fund_id"], amount_fen=row["amount_fen"])
        emit(uow, held, row["claim_id"])
    else:
        emit(uow, requested(row), row["claim_id"])


async def announce_queued(
    uow: UnitOfWork, row: asyncpg.Record, issue_no: int, queue_seq: int
) -> None:
    """The queued hop and ``payout.queued`` with the payout's place in its fund's queue."""
    fund_id, pid = row["fund_id"], row["payout_id"]
    position = await queue.queue_position(uow.conn, fund_id, queue_seq)
    await hops.add(uow.conn, pid, issue_no, 0, "queued", uow.now, f"position {position}")
    count(uow, row["claim_kind"], PayoutStatus.QUEUED)
    queued = PayoutQueuedV1(
        payout_id=pid, fund_id=fund_id, amount_fen=row["amount_fen"], position=position
    )
    emit(uow, queued, row["claim_id"])


async def drain_queue(uow: UnitOfWork, fund_id: str) -> int:
    """Reserve for queued payouts of a fund, first come first served, until one does not
    fit (it stays at the head). Call inside the unit of work that freed the money.
    Returns how many left the queue."""
    await funds.lock(uow.conn, fund_id)
    drained = 0
    for row in await queue.lock_queue(uow.conn, fund_id):
        if not await funds.try_reserve(uow.conn, fund_id, row["amount_fen"]):
            break
        await after_reserved(uow, row)
        drained += 1
    return drained


async def release(uow: UnitOfWork, row: asyncpg.Record, reason: str) -> None:
    """A cancellable (or finance-closed) payout → released, its reservation or its
    commitment back in the fund."""
    status = PayoutStatus(row["status"])
    fund_id, amount = row["fund_id"], row["amount_fen"]
    if status in RESERVED:
        await funds.unreserve(uow.conn, fund_id, amount)
    elif status in COMMITTED:  # retrying or returned: no money is with the bank
        await funds.uncommit(uow.conn, fund_id, amount)
    # What it took of its enterprise's per-program cap is free again (issue 12 item 5).
    await intake_facts.give_back(uow.conn, row)
    pid = row["payout_id"]
    await payouts.release(uow.conn, pid, move(status, PayoutStatus.RELEASED), uow.now, reason)
    await hops.add(uow.conn, pid, row["issue_no"], row["attempts"], "released", uow.now, reason)
    count(uow, row["claim_kind"], PayoutStatus.RELEASED)
    released = PayoutReleasedV1(payout_id=pid, fund_id=fund_id, amount_fen=amount, reason=reason)
    emit(uow, released, row["claim_id"])


async def fail(
    uow: UnitOfWork, row: asyncpg.Record, issue_no: int, at: datetime, reason: str
) -> None:
    """Final failure of the current issue: the commitment goes back to the fund, and the
    money freed goes to the queue."""
    pid, fund_id = row["payout_id"], row["fund_id"]
    await payouts.end_issue(uow.conn, pid, move(row["status"], PayoutStatus.FAILED), at, reason)
    await vouchers.end(uow.conn, pid, issue_no, "failed", at, reason)
    await funds.uncommit(uow.conn, fund_id, row["amount_fen"])
    count(uow, row["claim_kind"], PayoutStatus.FAILED)
    count_failure(uow, fund_id, "permanent")
    emit(uow, PayoutFailedV1(payout_id=pid, reason=reason, permanent=True), row["claim_id"], at)
    await drain_queue(uow, fund_id)


async def seed_funds(uow: UnitOfWork, catalogue: Catalogue, treasury_cap_fen: int | None) -> int:
    """Create the catalogue's funds that do not exist yet; existing budgets are kept
    (they change only by audited top-ups). A fund without a budget in the catalogue (the
    treasury refund fund) gets the configured cap, or none. Returns how many were created."""
    rows = [
        (r.fund, r.kind, r.name, treasury_cap_fen if r.budget_fen is None else r.budget_fen)
        for r in catalogue.all_rules()
    ]
    return await funds.create_missing(uow.conn, rows)
