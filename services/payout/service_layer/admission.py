"""Payout checks what it pays (issue 12 item 5): an approval is admitted for payment
(reserved or queued, as before) only when it is what intake received; anything else is
withheld with its reason, never reserved, never issued. Runs in the caller's unit of
work under the claim's fund lock (lock order: fund, cap ledger row, payouts)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from services.payout.adapters import funds, hops, intake_facts, payouts, queue
from services.payout.domain import admission
from services.payout.domain.admission import Approval, Withhold
from services.payout.domain.model import PayoutStatus
from services.payout.domain.transitions import move
from services.payout.metrics import WITHHELD
from services.payout.service_layer import funding
from shared.contracts import BankAccount, PayoutWithheldV1
from shared.programs import Catalogue
from shared.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Verdict:
    """Admit (``withhold`` None; ``charged_fen`` taken of the enterprise's cap) or not."""

    withhold: Withhold | None
    uscc: str | None
    charged_fen: int = 0


async def judge(
    uow: UnitOfWork,
    claim_id: uuid.UUID,
    approval: Approval,
    catalogue: Catalogue,
    *,
    payee_chosen_by_finance: bool = False,
) -> Verdict:
    """Check an approval against intake's facts and, when it passes, take its amount of
    the enterprise's per-program cap (the ledger refuses what would exceed it)."""
    submitted = await intake_facts.get(uow.conn, claim_id)
    cap_fen = catalogue.rules_for(approval.claim_kind, approval.program_id).cap_fen
    withhold = admission.check(
        submitted, approval, cap_fen, payee_chosen_by_finance=payee_chosen_by_finance
    )
    uscc = submitted.uscc if submitted else None
    if withhold is not None or cap_fen is None or approval.program_id is None:
        return Verdict(withhold, uscc)
    assert uscc is not None
    charged = await intake_facts.charge_cap(
        uow.conn, approval.program_id, uscc, cap_fen, approval.amount_fen
    )
    if charged is None:
        used = await intake_facts.used(uow.conn, approval.program_id, uscc)
        return Verdict(admission.above_cap(approval.amount_fen, cap_fen, used), uscc)
    return Verdict(None, uscc, approval.amount_fen)


def approval_of(row: asyncpg.Record) -> Approval:
    """What a payout row says was approved (its current payee)."""
    return Approval(
        claim_kind=row["claim_kind"],
        program_id=row["program_id"],
        amount_fen=row["amount_fen"],
        payee=BankAccount.model_validate_json(row["payee"]),
    )


async def announce_withheld(uow: UnitOfWork, row: asyncpg.Record, w: Withhold) -> None:
    """The withheld hop, ``payout.withheld`` (chained in the audit log by the unit of
    work) and the counters, after commit."""
    pid = row["payout_id"]
    await hops.add(uow.conn, pid, row["issue_no"], 0, "withheld", uow.now, w.detail)
    funding.count(uow, row["claim_kind"], PayoutStatus.WITHHELD)
    reason = w.reason
    uow.after_commit(lambda: WITHHELD.labels(reason).inc())
    withheld = PayoutWithheldV1(
        payout_id=pid,
        fund_id=row["fund_id"],
        amount_fen=row["amount_fen"],
        reason=w.reason,
        detail=w.detail,
    )
    funding.emit(uow, withheld, row["claim_id"])


async def admit(uow: UnitOfWork, row: asyncpg.Record) -> None:
    """A payout admitted for payment, new (queued) or withheld until now: reserved (held
    or requested) when the fund covers it and nobody waits, else queued behind the
    others (first come, first served). The caller holds the fund's lock."""
    fund_id, pid = row["fund_id"], row["payout_id"]
    someone_waiting = await queue.queued_exists(uow.conn, fund_id, other_than=pid)
    if not someone_waiting and await funds.try_reserve(uow.conn, fund_id, row["amount_fen"]):
        await funding.after_reserved(uow, row)
        return
    if row["status"] == PayoutStatus.QUEUED:
        seq = await queue.enqueue(uow.conn, pid, uow.now)
    else:
        m = move(row["status"], PayoutStatus.QUEUED)
        seq = await payouts.admit_to_queue(uow.conn, pid, m, uow.now)
    await funding.announce_queued(uow, row, row["issue_no"], seq)


async def admit_withheld(uow: UnitOfWork, row: asyncpg.Record, verdict: Verdict) -> None:
    """A withheld payout (locked, fund locked) that now passes: admitted, and it keeps
    what it took of the cap so a release gives it back."""
    assert verdict.withhold is None and verdict.uscc is not None
    pid = row["payout_id"]
    await hops.add(uow.conn, pid, row["issue_no"], 0, "admitted", uow.now)
    await admit(uow, row)
    await payouts.admitted(uow.conn, pid, verdict.uscc, verdict.charged_fen)


async def recheck_awaiting(uow: UnitOfWork, claim_id: uuid.UUID, catalogue: Catalogue) -> None:
    """Intake's claim.submitted arrived: a payout withheld while waiting for it is
    checked again, admitted or withheld with the real reason."""
    row = await payouts.lock(uow.conn, claim_id=claim_id)
    if (
        row is None
        or row["status"] != PayoutStatus.WITHHELD
        or row["withheld_reason"] != "awaiting_intake"
    ):
        return
    verdict = await judge(uow, claim_id, approval_of(row), catalogue)
    if verdict.withhold is None:
        await admit_withheld(uow, row, verdict)
        return
    await payouts.withhold_again(
        uow.conn, row["payout_id"], verdict.withhold, verdict.uscc, uow.now
    )
    await announce_withheld(uow, row, verdict.withhold)
