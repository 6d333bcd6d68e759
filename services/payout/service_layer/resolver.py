"""Payouts in doubt, resolved by asking the bank: ``unknown`` ones whose wait is over and
``issuing`` ones older than the claim lease (their instance died mid-call).

The bank has the attempt → issued (its notices follow); it never got it → retrying, or
failed after the last attempt (then, and only then, the commitment goes back). A bank
that cannot be asked leaves the payout in doubt for the next round. Bank queries run
with no transaction open.
"""

from __future__ import annotations

import uuid

from services.payout.adapters import hops, payouts
from services.payout.adapters.gateway import GatewayUnavailable, InstructionStatus
from services.payout.domain.model import PayoutStatus
from services.payout.domain.transitions import move
from services.payout.service_layer import funding
from services.payout.service_layer.payments import Payments
from shared.contracts import PayoutRetryScheduledV1


async def resolve_unknown(payments: Payments, limit: int = 100) -> int:
    """Ask the bank about each payout in doubt; returns how many were resolved."""
    async with payments.pool.acquire() as conn:
        rows = await payouts.in_doubt_due(
            conn, limit, payments.policy.claim_lease_s, payments.uows.now()
        )
    resolved = 0
    for r in rows:
        try:
            answer = await payments.gateway.status(r["payout_id"], r["issue_no"])
        except GatewayUnavailable:
            continue  # ask again on the next round; the payout stays in doubt
        resolved += await _apply_bank_status(
            payments, r["payout_id"], r["issue_no"], r["attempts"], answer
        )
    return resolved


async def _apply_bank_status(
    payments: Payments,
    payout_id: uuid.UUID,
    issue_no: int,
    attempts: int,
    answer: InstructionStatus,
) -> int:
    async with payments.unit() as uow:
        row = await payouts.lock(uow.conn, payout_id=payout_id)
        if (
            row is None
            or row["status"] not in (PayoutStatus.UNKNOWN, PayoutStatus.ISSUING)
            or (row["issue_no"], row["attempts"]) != (issue_no, attempts)
        ):
            return 0  # moved on meanwhile (a notice came)
        now = uow.now
        # Not received: the bank has no such key, or only an earlier attempt it rejected.
        if answer.attempt is not None and not (
            answer.attempt < attempts and answer.state == "rejected"
        ):
            # The bank holds this key: adopt the attempt it has, so its notices match.
            m = move(row["status"], PayoutStatus.ISSUED)
            await payouts.adopt_bank_attempt(
                uow.conn, payout_id, m, answer.attempt, answer.reference
            )
            detail = f"the bank has attempt {answer.attempt} ({answer.state})"
            await hops.add(
                uow.conn, payout_id, issue_no, answer.attempt, "bank_status", now, detail
            )
            return 1
        detail = f"the bank never received attempt {attempts}"
        await hops.add(uow.conn, payout_id, issue_no, attempts, "bank_status", now, detail)
        if attempts >= payments.policy.max_attempts:
            await funding.fail(uow, row, issue_no, now, f"retries exhausted: {detail}")
            return 1
        await payouts.wait_until(
            uow.conn, payout_id, move(row["status"], PayoutStatus.RETRYING), now
        )
        funding.count(uow, row["claim_kind"], PayoutStatus.RETRYING)
        funding.count_failure(uow, row["fund_id"], "transient")
        retry = PayoutRetryScheduledV1(
            payout_id=payout_id, reason=detail, attempt=attempts, next_attempt_at=now
        )
        funding.emit(uow, retry, row["claim_id"], now)
        return 1
