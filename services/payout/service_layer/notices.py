"""The bank's notices (accepted, sent, arrived, failed, returned), applied in order.

Notices behind the payout (an issue or attempt it has left) and repeats change nothing
and are acknowledged; notices ahead of it (an attempt it has not recorded yet) are kept,
unacknowledged, until it catches up (``domain.transitions.apply_notice``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import asyncpg

from services.payout.adapters import funds, hops, payouts, vouchers
from services.payout.adapters.gateway import Notice
from services.payout.adapters.vouchers import Stamp
from services.payout.domain.model import PayoutStatus, voucher_kind, voucher_no
from services.payout.domain.transitions import Advance, apply_notice
from services.payout.metrics import HOP_SECONDS, PAID_YUAN, TIME_TO_PAYMENT
from services.payout.service_layer import funding
from services.payout.service_layer.payments import Payments
from shared.contracts import (
    PayoutAcceptedV1,
    PayoutConfirmedV1,
    PayoutRetryScheduledV1,
    PayoutReturnedV1,
    PayoutSentV1,
)
from shared.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


async def record_notices(payments: Payments, limit: int = 500) -> int:
    """Apply the bank's due notices in one short transaction, then acknowledge those
    that are settled. Returns how many notices were acknowledged."""
    notices = await payments.gateway.due_notices(limit)
    if not notices:
        return 0
    kept: set[int] = set()
    async with payments.unit() as uow:
        await payouts.lock_many(uow.conn, sorted({n.payout_id for n in notices}))
        for n in notices:
            if not await _apply(uow, n, payments):
                kept.add(n.notice_id)
    done = [n.notice_id for n in notices if n.notice_id not in kept]
    if done:
        await payments.gateway.acknowledge(done)
    if kept:
        log.info("%d bank notices ahead of their payouts kept for later", len(kept))
    return len(done)


async def _apply(uow: UnitOfWork, n: Notice, payments: Payments) -> bool:
    """Apply one notice; False when it is to be kept (delivered again later)."""
    row = await payouts.locked(uow.conn, n.payout_id)
    if row is None:
        return True  # not ours (the bank's books are shared with other clients' tests)
    verdict = apply_notice(
        row["status"],
        row["issue_no"],
        row["attempts"],
        n,
        max_attempts=payments.policy.max_attempts,
    )
    if verdict == "keep":
        return False
    if isinstance(verdict, Advance):
        await hops.add(uow.conn, n.payout_id, n.issue_no, n.attempt, verdict.hop, n.at, n.reason)
        await _ADVANCE[verdict.move.target](uow, row, n, verdict, payments)
    return True


Step = Callable[[UnitOfWork, asyncpg.Record, Notice, Advance, Payments], Awaitable[None]]
"""What a notice that moves a payout to one status does besides the status."""


def _number(row: asyncpg.Record, n: Notice) -> str:
    return voucher_no(
        row["voucher_kind"] or voucher_kind(row["claim_kind"]), row["payout_id"], n.issue_no
    )


def _observe_hop(
    uow: UnitOfWork, hop: str, voucher: asyncpg.Record | None, since: str, at: datetime
) -> None:
    """claimflow_payout_hop_seconds from the voucher's ``since`` time, once committed."""
    start: datetime | None = voucher[since] if voucher is not None else None
    if start is not None:
        seconds = (at - start).total_seconds()
        uow.after_commit(lambda: HOP_SECONDS.labels(hop).observe(seconds))


async def _bank_took(
    uow: UnitOfWork, row: asyncpg.Record, n: Notice, v: Advance, _: Payments
) -> None:
    """Accepted by the treasury, or sent by the agency bank."""
    column: Stamp = "accepted_at" if v.move.target is PayoutStatus.ACCEPTED else "sent_at"
    voucher = await vouchers.get(uow.conn, n.payout_id, n.issue_no)
    await payouts.stamp_hop(uow.conn, n.payout_id, v.move, column, n.at, n.bank_reference)
    await vouchers.stamp(uow.conn, n.payout_id, n.issue_no, column, n.at)
    funding.count(uow, row["claim_kind"], v.move.target)
    if column == "accepted_at":
        _observe_hop(uow, "issued_to_accepted", voucher, "issued_at", n.at)
        accepted = PayoutAcceptedV1(
            payout_id=n.payout_id, voucher_no=_number(row, n), accepted_at=n.at
        )
        funding.emit(uow, accepted, row["claim_id"], n.at)
    else:
        _observe_hop(uow, "accepted_to_sent", voucher, "accepted_at", n.at)
        sent = PayoutSentV1(
            payout_id=n.payout_id, amount_fen=row["amount_fen"], gateway_reference=n.bank_reference
        )
        funding.emit(uow, sent, row["claim_id"], n.at)


async def _arrived(
    uow: UnitOfWork, row: asyncpg.Record, n: Notice, v: Advance, _: Payments
) -> None:
    """Funds arrived (到账): paid, once; the fund's paid grows; time to payment counted."""
    kind, amount = row["claim_kind"], row["amount_fen"]
    voucher = await vouchers.get(uow.conn, n.payout_id, n.issue_no)
    await payouts.pay(uow.conn, n.payout_id, v.move, n.at)
    await vouchers.stamp(uow.conn, n.payout_id, n.issue_no, "arrived_at", n.at)
    await funds.add_paid(uow.conn, row["fund_id"], amount)
    funding.count(uow, kind, v.move.target)
    ttp = max(0.0, (n.at - row["claim_received_at"]).total_seconds())
    uow.after_commit(lambda: PAID_YUAN.labels(kind).inc(amount / 100))
    uow.after_commit(lambda: TIME_TO_PAYMENT.labels(kind).observe(ttp))
    _observe_hop(uow, "sent_to_arrived", voucher, "sent_at", n.at)
    confirmed = PayoutConfirmedV1(
        payout_id=n.payout_id, amount_fen=amount, arrived_at=n.at, time_to_payment_seconds=ttp
    )
    funding.emit(uow, confirmed, row["claim_id"], n.at)


async def _retry(uow: UnitOfWork, row: asyncpg.Record, n: Notice, v: Advance, p: Payments) -> None:
    """A transient failure: the same voucher again after a backoff."""
    next_at = uow.now + timedelta(seconds=p.policy.backoff(n.attempt))
    await payouts.wait_until(uow.conn, n.payout_id, v.move, next_at)
    funding.count(uow, row["claim_kind"], v.move.target)
    funding.count_failure(uow, row["fund_id"], "transient")
    retry = PayoutRetryScheduledV1(
        payout_id=n.payout_id,
        reason=n.reason or "transient failure",
        attempt=n.attempt,
        next_attempt_at=next_at,
    )
    funding.emit(uow, retry, row["claim_id"], n.at)


async def _failed(uow: UnitOfWork, row: asyncpg.Record, n: Notice, v: Advance, _: Payments) -> None:
    """Failed for good (account closed, or the last attempt failed)."""
    reason = n.reason or "failed at the bank"
    if not n.permanent:
        reason = f"retries exhausted after {n.attempt} attempts: {reason}"
    await funding.fail(uow, row, n.issue_no, n.at, reason)


async def _returned(
    uow: UnitOfWork, row: asyncpg.Record, n: Notice, v: Advance, _: Payments
) -> None:
    """The money came back: the commitment is kept until finance corrects or closes."""
    reason = n.reason or "returned by the bank"
    await payouts.end_issue(uow.conn, n.payout_id, v.move, n.at, reason)
    await vouchers.end(uow.conn, n.payout_id, n.issue_no, "returned", n.at, reason)
    funding.count(uow, row["claim_kind"], v.move.target)
    funding.count_failure(uow, row["fund_id"], "returned")
    returned = PayoutReturnedV1(
        payout_id=n.payout_id,
        voucher_no=_number(row, n),
        amount_fen=row["amount_fen"],
        reason=reason,
    )
    funding.emit(uow, returned, row["claim_id"], n.at)


_ADVANCE: dict[PayoutStatus, Step] = {
    PayoutStatus.ACCEPTED: _bank_took,
    PayoutStatus.SENT: _bank_took,
    PayoutStatus.PAID: _arrived,
    PayoutStatus.RETRYING: _retry,
    PayoutStatus.FAILED: _failed,
    PayoutStatus.RETURNED: _returned,
}
