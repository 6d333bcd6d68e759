"""Issue due payouts: claim them in one short transaction, call the bank with no
transaction open and no row locked, record each answer in a short transaction of its own.

A crash after the claim leaves the payout ``issuing``; the bank's notices move it on if
the bank has it, and after ``claim_lease_s`` the resolver asks the bank.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from services.payout.adapters import funds, hops, payouts, vouchers
from services.payout.adapters.gateway import GatewayUnavailable, PaymentInstruction
from services.payout.domain.model import PayoutStatus, voucher_kind, voucher_no
from services.payout.domain.transitions import move
from services.payout.service_layer import funding
from services.payout.service_layer.payments import Payments
from shared.contracts import BankAccount, PayoutIssuedV1
from shared.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Claimed:
    """A payout claimed for issue (committed as ``issuing``) and what to send."""

    payout_id: uuid.UUID
    claim_kind: str
    instruction: PaymentInstruction


async def dispatch_requested(payments: Payments, limit: int = 100) -> int:
    """Issue requested payouts and due retries; returns how many were claimed."""
    async with payments.unit() as uow:
        claimed = [
            await _claim(uow, row)
            for row in await payouts.lock_due_for_issue(uow.conn, limit, uow.now)
        ]
    for c in claimed:
        await _submit(payments, c)
    return len(claimed)


async def _claim(uow: UnitOfWork, r: asyncpg.Record) -> Claimed:
    """Claim one locked, due payout: issuing, the next attempt, its voucher, committed."""
    pid, issue_no = r["payout_id"], r["issue_no"]
    if r["status"] == PayoutStatus.REQUESTED:
        await funds.commit_reserved(uow.conn, r["fund_id"], r["amount_fen"])
    payee = BankAccount.model_validate_json(r["payee"])
    attempt: int = r["attempts"] + 1
    kind = r["voucher_kind"] or voucher_kind(r["claim_kind"])
    number = voucher_no(kind, pid, issue_no)
    amount = r["amount_fen"]
    await vouchers.insert(uow.conn, pid, issue_no, number, kind, amount, payee, uow.now)
    m = move(r["status"], PayoutStatus.ISSUING)
    await payouts.claim_for_issue(uow.conn, pid, m, attempt, uow.now)
    await hops.add(uow.conn, pid, issue_no, attempt, "issued", uow.now, number)
    funding.count(uow, r["claim_kind"], PayoutStatus.ISSUED)
    instruction = PaymentInstruction(
        payout_id=pid,
        issue_no=issue_no,
        attempt=attempt,
        voucher_no=number,
        voucher_kind=kind,
        amount_fen=amount,
        bank_name=payee.bank_name,
        account_number=payee.account_number,
        account_name=payee.account_name,
    )
    # payout.issued tells what went to the bank: the instruction's fields of that name.
    issued = {name: getattr(instruction, name) for name in PayoutIssuedV1.model_fields}
    funding.emit(uow, PayoutIssuedV1.model_validate(issued), r["claim_id"])
    return Claimed(payout_id=pid, claim_kind=r["claim_kind"], instruction=instruction)


async def _submit(payments: Payments, c: Claimed) -> None:
    """Call the bank (no transaction open), then record its answer."""
    i = c.instruction
    try:
        reference = await payments.gateway.submit(i)
        held = i.attempt
        if i.attempt > 1:
            # A retry: the bank answers "in hand" also when it holds an earlier attempt
            # of this key (one still on its way when the bank was asked): learn which.
            answer = await payments.gateway.status(i.payout_id, i.issue_no)
            held = answer.attempt if answer.attempt is not None else i.attempt
    except GatewayUnavailable as exc:
        # The bank may have taken it before the line went quiet: unknown, not failed.
        await _record_no_answer(payments, c, f"no answer from the bank: {exc}")
    else:
        await _record_taken(payments, c, reference, held)


async def _record_taken(payments: Payments, c: Claimed, reference: str, held: int) -> None:
    """The bank took it. Its notices may have moved the payout on already (another
    instance, or a fast bank): then only the reference is kept. ``held``: the attempt the
    bank holds for the key; an ``issuing`` payout adopts it, so its notices match."""
    i = c.instruction
    async with payments.unit() as uow:
        row = await payouts.lock(uow.conn, payout_id=c.payout_id)
        if row is None or (row["issue_no"], row["attempts"]) != (i.issue_no, i.attempt):
            return
        issuing = row["status"] == PayoutStatus.ISSUING
        attempt = held if issuing else i.attempt
        m = move(row["status"], PayoutStatus.ISSUED) if issuing else None
        await payouts.record_reference(uow.conn, c.payout_id, m, reference, attempt)
        if attempt != i.attempt:
            detail = f"the bank has attempt {attempt}, not {i.attempt}"
            await hops.add(
                uow.conn, c.payout_id, i.issue_no, attempt, "bank_status", uow.now, detail
            )


async def _record_no_answer(payments: Payments, c: Claimed, error: str) -> None:
    """No answer: ``unknown``, the bank to be asked after a backoff."""
    i = c.instruction
    async with payments.unit() as uow:
        row = await payouts.lock(uow.conn, payout_id=c.payout_id)
        if row is None or (row["issue_no"], row["attempts"]) != (i.issue_no, i.attempt):
            return
        if row["status"] != PayoutStatus.ISSUING:
            return  # a notice already told what the bank did with it
        ask_at = uow.now + timedelta(seconds=payments.policy.backoff(i.attempt))
        await payouts.wait_until(
            uow.conn, c.payout_id, move(row["status"], PayoutStatus.UNKNOWN), ask_at
        )
        await hops.add(uow.conn, c.payout_id, i.issue_no, i.attempt, "unknown", uow.now, error)
        funding.count(uow, c.claim_kind, PayoutStatus.UNKNOWN)
