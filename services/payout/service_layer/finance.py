"""Finance staff's actions: top up a fund, correct the account of a returned or failed
payout (re-issue), close one with a reason, import a bank statement. Each runs in the
caller's unit of work (the HTTP routes' also stores the Idempotency-Key's answer) and
refuses with ``shared.problems`` refusals that name the field and the rule."""

from __future__ import annotations

import json
import uuid

import asyncpg

from services.payout.adapters import (
    audit,
    funds,
    hops,
    intake_facts,
    payouts,
    queue,
    statements,
)
from services.payout.domain.model import CORRECTABLE, PayoutStatus
from services.payout.domain.statements import ReconciliationReport, parse_statement_csv
from services.payout.domain.transitions import move
from services.payout.metrics import RECONCILIATION_MISMATCHES
from services.payout.service_layer import admission, funding
from shared.contracts import BankAccount, EventEnvelope, PayoutAccountCorrectedV1
from shared.problems import Conflict, NotFound
from shared.programs import Catalogue
from shared.unit_of_work import UnitOfWork

CLOSED_BY_FINANCE = "closed by finance: "
"""Prefix of the ``payout.released`` reason when finance closes a payout (intake's
tracker reads a release of a claim whose payout failed as closed)."""


async def lock_capped_fund(uow: UnitOfWork, fund_id: str) -> asyncpg.Record:
    """The fund's row, locked; refused unless it exists and has a budget to add to."""
    fund = await funds.lock(uow.conn, fund_id)
    if fund is None:
        raise NotFound(f"no fund {fund_id!r}", field="path.fund_id")
    if fund["budget_fen"] is None:
        raise Conflict(
            f"fund {fund_id!r} has no cap; there is nothing to top up",
            field="path.fund_id",
            rule="capped_fund",
        )
    return fund


async def top_up(
    uow: UnitOfWork, fund_id: str, amount_fen: int, actor: str, reason: str
) -> list[EventEnvelope]:
    """Add to a fund's budget (audited) and pay the queue from it; returns the events of
    the payouts that left the queue."""
    fund = await lock_capped_fund(uow, fund_id)
    await funds.add_budget(uow.conn, fund_id, amount_fen)
    detail = {"budget_before_fen": fund["budget_fen"]}
    await audit.record(
        uow.conn,
        actor,
        "top_up",
        fund_id=fund_id,
        amount_fen=amount_fen,
        reason=reason,
        detail=detail,
    )
    before = len(uow.events)
    await funding.drain_queue(uow, fund_id)
    return list(uow.events[before:])


async def correctable(uow: UnitOfWork, payout_id: uuid.UUID, action: str) -> asyncpg.Record:
    """The payout, locked, if finance may correct or close it."""
    row = await payouts.lock(uow.conn, payout_id=payout_id)
    if row is None:
        raise NotFound(f"no payout {payout_id}", field="path.payout_id")
    if PayoutStatus(row["status"]) not in CORRECTABLE:
        raise Conflict(
            f"payout is {row['status']}; only a returned or permanently failed payout is {action}",
            field="path.payout_id",
            rule="returned_or_failed_only",
        )
    return row


async def correct_account(
    uow: UnitOfWork, payout_id: uuid.UUID, payee: BankAccount, actor: str, reason: str
) -> tuple[int, PayoutStatus]:
    """A returned or permanently failed payout gets the corrected account and is issued
    again as the next issue number, same amount. Returned: the money came back and the
    commitment was kept, so it is re-issued at once (retrying). Failed: the commitment
    went back to the fund at the failure, so it is reserved again (requested) or, when
    the fund cannot cover it or others wait, joins the queue. Returns (issue, status)."""
    row = await correctable(uow, payout_id, "corrected")
    status = PayoutStatus(row["status"])
    issue_no: int = row["issue_no"] + 1
    await payouts.start_new_issue(uow.conn, payout_id, payee.model_dump_json(), issue_no)
    detail = {"before": json.loads(row["payee"]), "after": payee.model_dump(), "was": status}
    await audit.payout_action(uow.conn, actor, "account_correction", row, reason, detail)
    await hops.add(uow.conn, payout_id, issue_no, 0, "account_corrected", uow.now, reason)
    corrected = PayoutAccountCorrectedV1(
        payout_id=payout_id, payee=payee, next_issue_no=issue_no, corrected_by=actor
    )
    funding.emit(uow, corrected, row["claim_id"])
    target = await _reissue(uow, row, issue_no)
    if target is not PayoutStatus.QUEUED:  # announce_queued counts its own
        funding.count(uow, row["claim_kind"], target)
    return issue_no, target


async def _reissue(uow: UnitOfWork, row: asyncpg.Record, issue_no: int) -> PayoutStatus:
    """Returned → retrying at once; failed → reserved again (requested), or queued."""
    pid, fund_id, status = row["payout_id"], row["fund_id"], row["status"]
    if status == PayoutStatus.RETURNED:
        await payouts.wait_until(uow.conn, pid, move(status, PayoutStatus.RETRYING), uow.now)
        return PayoutStatus.RETRYING
    if not await queue.queued_exists(uow.conn, fund_id) and await funds.try_reserve(
        uow.conn, fund_id, row["amount_fen"]
    ):
        await payouts.reserve_again(uow.conn, pid, move(status, PayoutStatus.REQUESTED), uow.now)
        await hops.add(uow.conn, pid, issue_no, 0, "reserved", uow.now)
        return PayoutStatus.REQUESTED
    seq = await payouts.requeue(uow.conn, pid, move(status, PayoutStatus.QUEUED), uow.now)
    await funding.announce_queued(uow, row, issue_no, seq)
    return PayoutStatus.QUEUED


async def close_payout(
    uow: UnitOfWork, payout_id: uuid.UUID, actor: str, reason: str
) -> asyncpg.Record:
    """Finance gives up on a returned or permanently failed payout, with a reason: it is
    released (a returned one's commitment goes back to the fund; a failed one's went back
    at the failure) and the queue may move. Returns the released row."""
    row = await correctable(uow, payout_id, "closed")
    await funding.release(uow, row, CLOSED_BY_FINANCE + reason)
    await audit.payout_action(uow.conn, actor, "close", row, reason, {"was": row["status"]})
    await funding.drain_queue(uow, row["fund_id"])
    closed = await payouts.get(uow.conn, payout_id)
    assert closed is not None
    return closed


# --- issue 12 item 5: withheld payouts, released or cancelled under dual control -------

CANCELLED_BY_FINANCE = "withheld payout cancelled by finance: "


async def withheld(uow: UnitOfWork, payout_id: uuid.UUID) -> asyncpg.Record:
    """The payout, locked, if it is withheld."""
    row = await payouts.lock(uow.conn, payout_id=payout_id)
    if row is None:
        raise NotFound(f"no payout {payout_id}", field="path.payout_id")
    if row["status"] != PayoutStatus.WITHHELD:
        raise Conflict(
            f"payout is {row['status']}; only a withheld payout is released or cancelled",
            field="path.payout_id",
            rule="withheld_only",
        )
    return row


async def release_withheld(
    uow: UnitOfWork,
    payout_id: uuid.UUID,
    payee: BankAccount | None,
    actor: str,
    reason: str,
    catalogue: Catalogue,
) -> PayoutStatus:
    """Two finance people release a withheld payout: it is checked again against what
    intake received, except the payee, which is the one they chose (``payee``) or the
    account intake registered; then reserved or queued like any admitted approval.
    Refused (409, the rule is the reason) when it still cannot be paid: intake never
    reported the claim, another kind or program, above eligible, above the cap."""
    row = await withheld(uow, payout_id)
    submitted = await intake_facts.get(uow.conn, row["claim_id"])
    chosen = payee or (submitted.payee if submitted else None)
    if chosen is not None and chosen != BankAccount.model_validate_json(row["payee"]):
        await payouts.set_payee(uow.conn, payout_id, chosen.model_dump_json())
        again = await payouts.locked(uow.conn, payout_id)
        assert again is not None
        row = again
    verdict = await admission.judge(
        uow, row["claim_id"], admission.approval_of(row), catalogue, payee_chosen_by_finance=True
    )
    if verdict.withhold is not None:
        raise Conflict(
            f"still cannot be paid: {verdict.withhold.detail}",
            field="path.request_id",
            rule=verdict.withhold.reason,
        )
    detail = {"was": row["withheld_reason"], "payee": json.loads(row["payee"])}
    await audit.payout_action(uow.conn, actor, "hold_release", row, reason, detail)
    await admission.admit_withheld(uow, row, verdict)
    status: str = await uow.conn.fetchval(
        "SELECT status FROM payouts WHERE payout_id = $1", payout_id
    )
    return PayoutStatus(status)


async def cancel_withheld(uow: UnitOfWork, payout_id: uuid.UUID, actor: str, reason: str) -> None:
    """Two finance people cancel a withheld payout: released with their reason."""
    row = await withheld(uow, payout_id)
    await funding.release(uow, row, CANCELLED_BY_FINANCE + reason)
    detail = {"was": row["withheld_reason"]}
    await audit.payout_action(uow.conn, actor, "hold_cancel", row, reason, detail)


Imported = tuple[uuid.UUID, int, int, list[ReconciliationReport]]


async def import_statement(uow: UnitOfWork, text: str, actor: str) -> Imported:
    """Store the statement's lines (a line already imported, same bank reference, is
    skipped) and return the reports of the dates it covers: (statement id, lines new,
    lines skipped, reports). Mismatches of those reports are counted in
    ``claimflow_reconciliation_mismatches_total`` once committed."""
    lines = parse_statement_csv(text)
    statement_id = uuid.uuid4()
    inserted = await statements.store(uow.conn, statement_id, actor, lines)
    days = sorted({line.value_date for line in lines})
    reports = [await statements.report_for(uow.conn, day) for day in days]
    mismatches = [report.mismatch_counts() for report in reports]

    def count() -> None:
        for counts in mismatches:
            for kind, n in counts.items():
                if n:
                    RECONCILIATION_MISMATCHES.labels(kind).inc(n)

    uow.after_commit(count)
    return statement_id, inserted, len(lines) - inserted, reports
