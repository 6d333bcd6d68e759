"""Payout on the real PostgreSQL: budgets under concurrent approvals, the queue and its
top-up, transient failures, returned payments, holds for pending documents, lapses and
reconciliation. Each test gets its own payout schema; the simulated bank is shared."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from services.payout.adapters import payouts
from services.payout.adapters.gateway import (
    GatewayUnavailable,
    Outcome,
    PaymentInstruction,
    SimulatedGateway,
)
from services.payout.bootstrap import create_app
from services.payout.domain.model import PayoutStatus, RetryPolicy
from services.payout.domain.statements import StatementInvalid
from services.payout.domain.transitions import IllegalTransition, move
from services.payout.gauges import GaugeExporter
from services.payout.service_layer import finance, funding
from services.payout.service_layer.dispatch import dispatch_requested
from services.payout.service_layer.notices import record_notices
from services.payout.service_layer.payments import Payments
from services.payout.service_layer.resolver import resolve_unknown
from services.payout.service_layer.retry import in_unit_of_work
from services.payout.subscriptions import payout_subscriptions, subscriptions
from services.payout.views import fund_views, report_for, stuck_payouts
from shared.audit.chain import audit_hook
from shared.contracts import (
    BankAccount,
    ClaimDocumentsCompletedV1,
    ClaimLapsedV1,
    ClaimSubmittedV1,
    ClaimWithdrawnV1,
    EventEnvelope,
    ReviewDecidedV1,
)
from shared.contracts.topics import PAYOUT_EVENTS
from shared.db import DbConnection, create_pool, migrate
from shared.devstack.stack import StackConfig
from shared.messaging.after_commit import after_commit_scope
from shared.messaging.consumer import IdempotentBatchConsumer, TransientError
from shared.metrics import REGISTRY
from shared.problems import Conflict
from shared.programs import PROGRAMS_FILE, Catalogue, load_catalogue
from shared.unit_of_work import UnitOfWorkFactory
from tests.tokens import finance_clerk, finance_supervisor

pytestmark = pytest.mark.integration

MIGRATIONS = Path(funding.__file__).parents[1] / "migrations"
PROGRAM = "startup-loan-interest-2026"
POLICY = RetryPolicy(base_s=0.05, max_s=0.2, max_attempts=5, claim_lease_s=0.5)
UOWS = UnitOfWorkFactory("payout", PAYOUT_EVENTS)
CONSUME = subscriptions.handlers(UOWS)
"""The consumer's handlers: each opens its unit of work on the connection it is given."""
REVIEW_DECIDED = CONSUME[("review.decided", 1)]
CLIENTS: dict[int, str] = {}
"""Pool → its schema, which is also its name at the simulated bank."""


def payee(account_number: str = "6222020200001234567") -> BankAccount:
    return BankAccount(bank_name="自贡银行", account_name="测试企业", account_number=account_number)


SUBMISSIONS: dict[uuid.UUID, EventEnvelope] = {}
"""Intake's claim.submitted for each approval made by ``approval()`` (issue 12 item 5:
payout pays only what intake received), applied by ``apply`` / ``submit`` first."""


def submission(
    claim_id: uuid.UUID,
    eligible_fen: int,
    *,
    program_id: str | None = PROGRAM,
    account: BankAccount | None = None,
    uscc: str | None = None,
) -> EventEnvelope:
    """Intake's claim.submitted: ``eligible_fen`` eligible, paid to ``account``."""
    return EventEnvelope.wrap(
        ClaimSubmittedV1(
            claim_kind="subsidy" if program_id else "vat_refund",
            uscc=uscc or f"91{uuid.uuid4().hex[:16].upper()}",
            enterprise_name="测试企业",
            tax_period="2026-09",
            program_id=program_id,
            requested_amount_fen=max(eligible_fen, 1),
            eligible_amount_fen=eligible_fen,
            payee=account or payee(),
            registered_by="window-01",
            received_at=datetime.now(UTC),
        ),
        claim_id=claim_id,
        producer="intake",
    )


def approval(
    amount_fen: int,
    *,
    claim_id: uuid.UUID | None = None,
    program_id: str | None = PROGRAM,
    documents_pending: bool = False,
    submitted: bool = True,
    account: BankAccount | None = None,
) -> EventEnvelope:
    """Review's approval; unless ``submitted=False``, intake's matching submission
    (eligible = the approved amount, same payee) is kept to be applied before it."""
    claim_id = claim_id or uuid.uuid4()
    if submitted and claim_id not in SUBMISSIONS:
        SUBMISSIONS[claim_id] = submission(claim_id, amount_fen, program_id=program_id)
    return EventEnvelope.wrap(
        ReviewDecidedV1(
            decision="approved",
            approved_amount_fen=amount_fen,
            claim_kind="subsidy" if program_id else "vat_refund",
            program_id=program_id,
            payee=account or payee(),
            claim_received_at=datetime.now(UTC),
            documents_pending=documents_pending,
        ),
        claim_id=claim_id,
        producer="review",
    )


@pytest.fixture
async def pool(infra: StackConfig) -> AsyncIterator[asyncpg.Pool]:
    schema = f"payout_t_{uuid.uuid4().hex[:8]}"
    await migrate(infra.dsn, schema, MIGRATIONS)
    await SimulatedGateway.prepare(infra.dsn)
    p = await create_pool(infra.dsn, schema, min_size=2, max_size=20)
    CLIENTS[id(p)] = schema
    async with UOWS.acquire(p) as uow:
        await funding.seed_funds(uow, load_catalogue(), None)
    try:
        yield p
    finally:
        await p.close()


def gateway(pool: asyncpg.Pool, planner: Callable[[PaymentInstruction], Outcome]) -> Any:
    # The simulated bank is shared with any payout service running on this database
    # (the e2e stack): the client name keeps each one's notices apart.
    return SimulatedGateway(
        pool, min_delay_s=0, max_delay_s=0.01, planner=planner, client=CLIENTS[id(pool)]
    )


def always(outcome: Outcome) -> Callable[[PaymentInstruction], Outcome]:
    return lambda _: outcome


def payments_of(pool: asyncpg.Pool, gw: Any, policy: RetryPolicy = POLICY) -> Payments:
    return Payments(UOWS, pool, gw, policy)


async def apply(pool: asyncpg.Pool, envelope: EventEnvelope) -> None:
    """Consume one event in a transaction of its own, as the consumer would (an approval
    made by ``approval()`` after intake's matching submission)."""
    if envelope.event_type == "review.decided":
        await submit(pool, envelope)
    async with pool.acquire() as conn:
        await CONSUME[(envelope.event_type, envelope.version)](conn, envelope)


async def submit(pool: asyncpg.Pool, decided: EventEnvelope) -> None:
    """Intake's submission kept for an approval, consumed (a repeat changes nothing)."""
    submitted = SUBMISSIONS.get(decided.claim_id)
    if submitted is not None:
        async with pool.acquire() as conn:
            await CONSUME[("claim.submitted", 1)](conn, submitted)


async def top_up(pool: asyncpg.Pool, fund_id: str, amount_fen: int, actor: str, reason: str) -> Any:
    return await in_unit_of_work(UOWS, pool, finance.top_up, fund_id, amount_fen, actor, reason)


async def correct_account(
    pool: asyncpg.Pool, payout_id: uuid.UUID, payee: BankAccount, actor: str, reason: str
) -> int:
    issue_no, _ = await in_unit_of_work(
        UOWS, pool, finance.correct_account, payout_id, payee, actor, reason
    )
    return issue_no


async def close_payout(pool: asyncpg.Pool, payout_id: uuid.UUID, actor: str, reason: str) -> Any:
    return await in_unit_of_work(UOWS, pool, finance.close_payout, payout_id, actor, reason)


async def import_statement(pool: asyncpg.Pool, text: str, actor: str) -> finance.Imported:
    return await in_unit_of_work(UOWS, pool, finance.import_statement, text, actor)


async def drive(
    pool: asyncpg.Pool, gw: Any, until: Callable[[], Awaitable[bool]], timeout: float = 15
) -> None:
    """Run the payment loop (issue, record notices) until the condition holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await dispatch_requested(payments_of(pool, gw))
        await record_notices(payments_of(pool, gw))
        await resolve_unknown(payments_of(pool, gw))
        if await until():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("payment loop did not reach the condition")


async def status_of(pool: asyncpg.Pool, claim_id: uuid.UUID) -> str | None:
    status: str | None = await pool.fetchval(
        "SELECT status FROM payouts WHERE claim_id = $1", claim_id
    )
    return status


async def one(pool: asyncpg.Pool, sql: str, *args: Any) -> asyncpg.Record:
    row = await pool.fetchrow(sql, *args)
    assert row is not None, sql
    return row


async def fund(pool: asyncpg.Pool, fund_id: str = PROGRAM) -> asyncpg.Record:
    return await one(pool, "SELECT * FROM funds WHERE fund_id = $1", fund_id)


async def test_concurrent_approvals_pay_exactly_k_queue_the_rest_and_drain_on_top_up(
    pool: asyncpg.Pool,
) -> None:
    amount, n, k = 100_000_00, 12, 4
    await pool.execute(
        "UPDATE funds SET budget_fen = $2 WHERE fund_id = $1", PROGRAM, k * amount + 50_00
    )
    envelopes = [approval(amount) for _ in range(n)]
    await asyncio.gather(*(apply(pool, e) for e in envelopes))

    rows = await pool.fetch("SELECT status, count(*) AS c FROM payouts GROUP BY status")
    assert {r["status"]: r["c"] for r in rows} == {"requested": k, "queued": n - k}
    f = await fund(pool)
    assert f["reserved_fen"] == k * amount and f["committed_fen"] == 0
    async with pool.acquire() as conn:
        views = {v["fund_id"]: v for v in await fund_views(conn)}
    assert views[PROGRAM]["waiting_claims"] == n - k
    assert views[PROGRAM]["remaining_fen"] == 50_00

    # The database itself refuses an overspend, whatever the code does.
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "UPDATE funds SET reserved_fen = reserved_fen + $2 WHERE fund_id = $1", PROGRAM, amount
        )

    gw = gateway(pool, always("arrive"))

    async def k_paid() -> bool:
        return bool(
            await pool.fetchval("SELECT count(*) = $1 FROM payouts WHERE status = 'paid'", k)
        )

    await drive(pool, gw, k_paid)
    await asyncio.sleep(0.1)
    await drive(pool, gw, k_paid)  # nothing more moves: the rest waits for budget
    assert await pool.fetchval("SELECT count(*) FROM payouts WHERE status = 'queued'") == n - k

    queue = await pool.fetch(
        "SELECT claim_id FROM payouts WHERE status = 'queued' ORDER BY queue_seq"
    )
    events = await top_up(pool, PROGRAM, 3 * amount, "finance-01", "second tranche")
    assert len(events) == 3
    assert [e.claim_id for e in events] == [r["claim_id"] for r in queue[:3]]  # FIFO
    audit = await one(pool, "SELECT * FROM finance_audit WHERE action = 'top_up'")
    assert audit["actor"] == "finance-01" and audit["amount_fen"] == 3 * amount

    async def k3_paid() -> bool:
        return bool(
            await pool.fetchval("SELECT count(*) = $1 FROM payouts WHERE status = 'paid'", k + 3)
        )

    await drive(pool, gw, k3_paid)
    f = await fund(pool)
    assert f["committed_fen"] == f["paid_fen"] == (k + 3) * amount
    assert f["reserved_fen"] == 0
    assert f["committed_fen"] + f["reserved_fen"] <= f["budget_fen"]
    assert await pool.fetchval("SELECT count(*) FROM payouts WHERE status = 'queued'") == n - k - 3
    # Each claim paid once at the bank.
    settled = await pool.fetchval(
        """SELECT count(*) FROM bank_sim.instructions
           WHERE payout_id IN (SELECT payout_id FROM payouts) AND status = 'settled'"""
    )
    assert settled == k + 3


async def test_same_approval_twice_reserves_once(pool: asyncpg.Pool) -> None:
    envelope = approval(500_00)
    await apply(pool, envelope)
    await apply(pool, approval(500_00, claim_id=envelope.claim_id))
    assert await pool.fetchval("SELECT count(*) FROM payouts") == 1
    assert (await fund(pool))["reserved_fen"] == 500_00


async def test_transient_failure_is_retried_with_the_same_key_and_paid_once(
    pool: asyncpg.Pool,
) -> None:
    def planner(i: PaymentInstruction) -> Outcome:
        return "transient" if i.attempt == 1 else "arrive"

    gw = gateway(pool, planner)
    envelope = approval(1_234_56, program_id=None)
    await apply(pool, envelope)

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)
    row = await one(pool, "SELECT * FROM payouts WHERE claim_id = $1", envelope.claim_id)
    assert row["attempts"] == 2 and row["paid_amount_fen"] == 1_234_56
    hops = [
        (h["attempt"], h["hop"])
        for h in await pool.fetch(
            "SELECT * FROM payout_hops WHERE payout_id = $1 ORDER BY id", row["payout_id"]
        )
    ]
    assert (1, "failed_transient") in hops and (2, "arrived") in hops
    assert [h for _, h in hops].count("arrived") == 1
    bank = await pool.fetch(
        "SELECT * FROM bank_sim.instructions WHERE payout_id = $1", row["payout_id"]
    )
    assert len(bank) == 1 and bank[0]["status"] == "settled" and bank[0]["attempt"] == 2
    # Submitting the same key again (a crash replay) pays nothing more.
    await gw.submit(
        PaymentInstruction(
            payout_id=row["payout_id"],
            issue_no=1,
            attempt=2,
            voucher_no="x",
            voucher_kind="tax_refund_voucher",
            amount_fen=1_234_56,
            bank_name="b",
            account_number="6222020200001234567",
            account_name="n",
        )
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM bank_sim.notices WHERE payout_id = $1 AND hop = 'arrived'",
            row["payout_id"],
        )
        == 1
    )
    # The treasury refund fund is tracked without a cap.
    refund = await fund(pool, "treasury-refund")
    assert refund["budget_fen"] is None and refund["paid_fen"] == 1_234_56


async def test_permanent_failure_releases_the_commitment(pool: asyncpg.Pool) -> None:
    gw = gateway(pool, always("permanent"))
    envelope = approval(700_00)
    await apply(pool, envelope)

    async def failed() -> bool:
        return await status_of(pool, envelope.claim_id) == "failed"

    await drive(pool, gw, failed)
    f = await fund(pool)
    assert f["reserved_fen"] == f["committed_fen"] == f["paid_fen"] == 0
    reason = await pool.fetchval(
        "SELECT failure_reason FROM payouts WHERE claim_id = $1", envelope.claim_id
    )
    assert "closed" in reason


async def test_returned_payment_is_reissued_after_correction_and_paid_the_approved_amount(
    pool: asyncpg.Pool,
) -> None:
    def planner(i: PaymentInstruction) -> Outcome:
        return "return" if i.issue_no == 1 else "arrive"

    gw = gateway(pool, planner)
    envelope = approval(88_888_88)
    await apply(pool, envelope)

    async def returned() -> bool:
        return await status_of(pool, envelope.claim_id) == "returned"

    await drive(pool, gw, returned)
    payout_id = await pool.fetchval(
        "SELECT payout_id FROM payouts WHERE claim_id = $1", envelope.claim_id
    )
    # Nothing is released while the money waits for a corrected account.
    f = await fund(pool)
    assert f["committed_fen"] == 88_888_88 and f["paid_fen"] == 0
    await asyncio.sleep(0.1)
    await dispatch_requested(payments_of(pool, gw))
    assert await status_of(pool, envelope.claim_id) == "returned"

    corrected = BankAccount(
        bank_name="自贡银行", account_name="测试企业有限公司", account_number="6222020200007654321"
    )
    issue_no = await correct_account(
        pool, payout_id, corrected, "finance-02", "name per business licence"
    )
    assert issue_no == 2

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)
    row = await one(pool, "SELECT * FROM payouts WHERE payout_id = $1", payout_id)
    assert row["paid_amount_fen"] == row["approved_amount_fen"] == 88_888_88
    vouchers = await pool.fetch(
        "SELECT * FROM vouchers WHERE payout_id = $1 ORDER BY issue_no", payout_id
    )
    assert [v["outcome"] for v in vouchers] == ["returned", "arrived"]
    assert vouchers[1]["account_number"] == "6222020200007654321"
    settled = await pool.fetchval(
        "SELECT count(*) FROM bank_sim.instructions WHERE payout_id = $1 AND status = 'settled'",
        payout_id,
    )
    assert settled == 1
    f = await fund(pool)
    assert f["committed_fen"] == f["paid_fen"] == 88_888_88
    audit = await one(
        pool,
        "SELECT * FROM finance_audit WHERE action = 'account_correction' AND payout_id = $1",
        payout_id,
    )
    assert audit["actor"] == "finance-02"
    # A paid payout cannot be corrected (and so never re-issued).
    with pytest.raises(Conflict):
        await correct_account(pool, payout_id, corrected, "finance-02", "again")
    # The database refuses a second live voucher and more than the approved amount.
    with pytest.raises(asyncpg.UniqueViolationError):
        await pool.execute(
            """INSERT INTO vouchers (payout_id, issue_no, voucher_no, voucher_kind, amount_fen,
                   bank_name, account_name, account_number, issued_at)
               VALUES ($1, 3, 'DP-X-3', 'direct_payment_voucher', 1, 'b', 'n', '1', now())""",
            payout_id,
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "UPDATE payouts SET paid_amount_fen = paid_amount_fen + 1 WHERE payout_id = $1",
            payout_id,
        )


async def test_pending_documents_claim_is_held_then_paid(pool: asyncpg.Pool) -> None:
    gw = gateway(pool, always("arrive"))
    envelope = approval(300_00, documents_pending=True)
    await apply(pool, envelope)
    assert await status_of(pool, envelope.claim_id) == "held"
    assert (await fund(pool))["reserved_fen"] == 300_00
    await dispatch_requested(payments_of(pool, gw))
    assert await status_of(pool, envelope.claim_id) == "held"  # not paid while held

    completed = EventEnvelope.wrap(
        ClaimDocumentsCompletedV1(completed_at=datetime.now(UTC)),
        claim_id=envelope.claim_id,
        producer="intake",
    )
    await apply(pool, completed)
    assert await status_of(pool, envelope.claim_id) == "requested"

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)

    # Documents completed before the approval arrives: recorded, so no hold.
    early = uuid.uuid4()
    await apply(
        pool,
        EventEnvelope.wrap(
            ClaimDocumentsCompletedV1(completed_at=datetime.now(UTC)), claim_id=early, producer="i"
        ),
    )
    await apply(pool, approval(100_00, claim_id=early, documents_pending=True))
    assert await status_of(pool, early) == "requested"


async def test_lapse_releases_a_held_claim_and_never_unpays_a_paid_one(
    pool: asyncpg.Pool,
) -> None:
    def lapsed(claim_id: uuid.UUID) -> EventEnvelope:
        return EventEnvelope.wrap(
            ClaimLapsedV1(missing_documents=["audit_report"], due_by=datetime.now(UTC).date()),
            claim_id=claim_id,
            producer="intake",
        )

    held = approval(400_00, documents_pending=True)
    await apply(pool, held)
    await apply(pool, lapsed(held.claim_id))
    assert await status_of(pool, held.claim_id) == "released"
    assert (await fund(pool))["reserved_fen"] == 0

    # A lapse recorded before the approval: the approval reserves nothing.
    early = uuid.uuid4()
    await apply(pool, lapsed(early))
    await apply(pool, approval(100_00, claim_id=early))
    assert await status_of(pool, early) == "released"
    assert (await fund(pool))["reserved_fen"] == 0

    gw = gateway(pool, always("arrive"))
    paid = approval(200_00)
    await apply(pool, paid)

    async def is_paid() -> bool:
        return await status_of(pool, paid.claim_id) == "paid"

    await drive(pool, gw, is_paid)
    await apply(pool, lapsed(paid.claim_id))
    row = await one(pool, "SELECT * FROM payouts WHERE claim_id = $1", paid.claim_id)
    assert row["status"] == "paid" and "lapsed" in row["late_cancellation"]
    assert (await fund(pool))["paid_fen"] == 200_00


async def test_reconciliation_reports_each_kind_of_mismatch(pool: asyncpg.Pool) -> None:
    gw = gateway(pool, always("arrive"))
    claims = [approval(amount) for amount in (100_00, 200_00, 300_00)]
    for e in claims:
        await apply(pool, e)

    async def all_paid() -> bool:
        return bool(await pool.fetchval("SELECT count(*) = 3 FROM payouts WHERE status = 'paid'"))

    await drive(pool, gw, all_paid)
    vouchers = await pool.fetch(
        """SELECT voucher_no, amount_fen, account_number,
                  (sent_at AT TIME ZONE 'Asia/Shanghai')::date AS day
           FROM vouchers ORDER BY amount_fen"""
    )
    day = vouchers[0]["day"]
    v1, v2, _v3 = vouchers
    suffix = uuid.uuid4().hex[:6]
    csv_text = (
        "value_date,bank_reference,end_to_end_id,amount,account_number,direction\n"
        f"{day},BK-{suffix}-1,{v1['voucher_no']},100.00,{v1['account_number']},debit\n"
        f"{day},BK-{suffix}-2,{v2['voucher_no']},199.99,{v2['account_number']},debit\n"
        f"{day},BK-{suffix}-3,DP-UNKNOWN-1,50.00,6222020200000000000,debit\n"
    )
    _, imported, duplicates, reports = await import_statement(pool, csv_text, "fin")
    assert (imported, duplicates) == (3, 0)
    report = reports[0]
    assert report.mismatch_counts() == {
        "missing_statement_line": 1,
        "unknown_statement_line": 1,
        "amount_mismatch": 1,
    }
    assert [m["end_to_end_id"] for m in report.matched] == [v1["voucher_no"]]
    assert report.amount_mismatch[0]["expected_amount_fen"] == 200_00
    assert report.missing_statement_line[0]["expected_amount_fen"] == 300_00
    # Importing the same statement again adds nothing; the report is the same.
    _, again, dup, _ = await import_statement(pool, csv_text, "fin")
    assert (again, dup) == (0, 3)
    async with pool.acquire() as conn:
        assert (await report_for(conn, day)).mismatch_counts() == report.mismatch_counts()

    with pytest.raises(StatementInvalid) as bad:
        await import_statement(
            pool,
            "value_date,bank_reference,end_to_end_id,amount,account_number,direction\n"
            "2026-13-01,BK-x,DP-1,12.345,1,sideways\n",
            "fin",
        )
    assert {e.field for e in bad.value.errors} == {"value_date", "amount", "direction"}


class CrashAfterSubmit:
    """The bank takes the voucher, then payout dies before its commit (once)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.crashed = False

    async def submit(self, instruction: PaymentInstruction) -> str:
        reference: str = await self.inner.submit(instruction)
        if not self.crashed:
            self.crashed = True
            raise ConnectionResetError("payout killed before commit")
        return reference

    async def due_notices(self, limit: int) -> Any:
        return await self.inner.due_notices(limit)

    async def acknowledge(self, notice_ids: list[int]) -> None:
        await self.inner.acknowledge(notice_ids)

    async def status(self, payout_id: uuid.UUID, issue_no: int) -> Any:
        return await self.inner.status(payout_id, issue_no)


async def test_crash_between_bank_and_commit_resubmits_the_same_key_and_pays_once(
    pool: asyncpg.Pool,
) -> None:
    gw = CrashAfterSubmit(gateway(pool, always("arrive")))
    envelope = approval(250_00)
    await apply(pool, envelope)
    with pytest.raises(ConnectionResetError):
        await dispatch_requested(payments_of(pool, gw))
    # The claim committed before the bank was called (item 2): the payout is issuing,
    # committed, its voucher written; the bank has the instruction; its outcome was lost.
    assert await status_of(pool, envelope.claim_id) == "issuing"
    f = await fund(pool)
    assert f["reserved_fen"] == 0 and f["committed_fen"] == 250_00
    assert await pool.fetchval("SELECT count(*) FROM vouchers") == 1

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)
    payout_id = await pool.fetchval(
        "SELECT payout_id FROM payouts WHERE claim_id = $1", envelope.claim_id
    )
    bank = await pool.fetch("SELECT * FROM bank_sim.instructions WHERE payout_id = $1", payout_id)
    assert [b["status"] for b in bank] == ["settled"]
    arrived = await pool.fetchval(
        "SELECT count(*) FROM bank_sim.notices WHERE payout_id = $1 AND hop = 'arrived'", payout_id
    )
    assert arrived == 1
    f = await fund(pool)
    assert f["reserved_fen"] == 0 and f["committed_fen"] == f["paid_fen"] == 250_00


PAYMENT_LOOP = """
import asyncio, random, sys
from services.payout.adapters.gateway import SimulatedGateway
from services.payout.domain.model import RetryPolicy
from services.payout.service_layer.dispatch import dispatch_requested
from services.payout.service_layer.notices import record_notices
from services.payout.service_layer.payments import Payments
from shared.contracts.topics import PAYOUT_EVENTS
from shared.db import create_pool
from shared.unit_of_work import UnitOfWorkFactory

async def main(dsn, schema, seed):
    pool = await create_pool(dsn, schema)
    gw = SimulatedGateway(pool, min_delay_s=0.05, max_delay_s=0.4, transient_failure_rate=0.3,
                          permanent_failure_rate=0.1, rng=random.Random(seed), client=schema)
    policy = RetryPolicy(base_s=0.02, max_s=0.1, max_attempts=6)
    payments = Payments(UnitOfWorkFactory("payout", PAYOUT_EVENTS), pool, gw, policy)
    while True:
        await dispatch_requested(payments, limit=5)
        await record_notices(payments, limit=5)
        await asyncio.sleep(0.005)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def money_path_dump(pool: asyncpg.Pool, payout_ids: set[uuid.UUID]) -> str:
    """Everything both books hold about some payouts, for a failure message: the payout
    row, its hops, and the bank simulator's instructions and notices for it."""
    lines: list[str] = []
    for pid in sorted(payout_ids):
        lines.append(f"=== payout {pid}")
        queries = [
            ("payout", "SELECT * FROM payouts WHERE payout_id = $1"),
            ("hops", "SELECT * FROM payout_hops WHERE payout_id = $1 ORDER BY at, hop"),
            (
                "bank instructions",
                "SELECT * FROM bank_sim.instructions WHERE payout_id = $1 ORDER BY issue_no",
            ),
            ("bank notices", "SELECT * FROM bank_sim.notices WHERE payout_id = $1 ORDER BY id"),
        ]
        for title, sql in queries:
            lines.append(f"--- {title}")
            lines += [repr(dict(r)) for r in await pool.fetch(sql, pid)]
    return "\n".join(lines)


async def test_sigkill_of_the_payment_loop_at_any_moment_pays_each_claim_once(
    pool: asyncpg.Pool, infra: StackConfig
) -> None:
    schema = await pool.fetchval("SELECT current_schema()")
    amounts = [random.randrange(1_00, 5_000_00) for _ in range(30)]
    await pool.execute(
        "UPDATE funds SET budget_fen = $2 WHERE fund_id = $1", PROGRAM, sum(amounts[:20])
    )
    envelopes = [approval(a) for a in amounts]
    for e in envelopes:
        await apply(pool, e)
    repo = Path(__file__).parents[2]
    kills = 0
    for round_no in range(6):
        if not await pool.fetchval(
            """SELECT count(*) FROM payouts
               WHERE status IN ('requested', 'issued', 'accepted', 'sent', 'retrying')"""
        ):
            break  # nothing left to move
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PAYMENT_LOOP, infra.dsn, schema, str(round_no), cwd=repo
        )
        # Kill it at a random moment once it is moving money (it may be slow to start
        # on a busy machine: its imports alone took 12 s at a load of 14); a loop with
        # nothing left to do is killed after 30 s.
        before = await pool.fetchval("SELECT count(*) FROM payout_hops")
        started = time.monotonic()
        while time.monotonic() - started < 30:
            if await pool.fetchval("SELECT count(*) FROM payout_hops") > before:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(random.uniform(0, 0.4))
        child.send_signal(signal.SIGKILL)
        await child.wait()
        kills += 1
    # The killed loops did move money (this is not a test of the last, clean loop alone).
    moved = await pool.fetchval("SELECT count(*) FROM payout_hops WHERE hop = 'issued'")
    print(f"issued by the killed loops: {moved}; loops killed: {kills}")
    assert moved > 0

    gw = gateway(pool, always("arrive"))

    async def settled() -> bool:
        return bool(
            await pool.fetchval(
                """SELECT count(*) = 0 FROM payouts
                   WHERE status NOT IN ('paid', 'failed', 'queued')"""
            )
        )

    await drive(pool, gw, settled, timeout=30)
    await asyncio.sleep(0.2)
    await drive(pool, gw, settled)
    rows = await pool.fetch("SELECT * FROM payouts")
    paid = [r for r in rows if r["status"] == "paid"]
    assert all(r["paid_amount_fen"] == r["approved_amount_fen"] for r in paid)
    settled_at_bank = await pool.fetch(
        """SELECT payout_id, count(*) AS n FROM bank_sim.instructions
           WHERE status = 'settled' AND payout_id = ANY($1::uuid[]) GROUP BY payout_id""",
        [r["payout_id"] for r in rows],
    )
    settled_ids = {s["payout_id"] for s in settled_at_bank}
    paid_ids = {r["payout_id"] for r in paid}
    assert settled_ids == paid_ids, await money_path_dump(pool, settled_ids ^ paid_ids)
    assert all(s["n"] == 1 for s in settled_at_bank)
    f = await fund(pool)
    assert f["paid_fen"] == f["committed_fen"] == sum(r["amount_fen"] for r in paid)
    assert f["reserved_fen"] == 0
    assert f["committed_fen"] <= f["budget_fen"]
    # Money freed by failures went to the queue in order: nothing waits that would fit.
    queued = [r for r in rows if r["status"] == "queued"]
    if queued:
        head = min(queued, key=lambda r: r["queue_seq"])
        assert head["amount_fen"] > f["budget_fen"] - f["committed_fen"]


class LosesFirstAcknowledge(CrashAfterSubmit):
    """Payout dies after committing the bank's notices and before acknowledging them
    (once): the bank delivers them again."""

    lost = False

    async def submit(self, instruction: PaymentInstruction) -> str:
        reference: str = await self.inner.submit(instruction)
        return reference

    async def acknowledge(self, notice_ids: list[int]) -> None:
        if not self.lost:
            self.lost = True
            return
        await self.inner.acknowledge(notice_ids)


async def test_a_redelivered_failure_of_an_earlier_attempt_leaves_the_retry_settled_at_the_bank(
    pool: asyncpg.Pool,
) -> None:
    """Seen once under SIGKILL: payout paid, the bank's book said 'rejected'. The bank
    re-sent attempt 1's transient failure (never acknowledged) after attempt 2 of the same
    key had been taken, and that old notice marked attempt 2 rejected; attempt 2's arrival
    then found no 'accepted' instruction to settle."""
    gw = LosesFirstAcknowledge(gateway(pool, lambda i: "transient" if i.attempt == 1 else "arrive"))
    envelope = approval(330_00)
    await apply(pool, envelope)
    await dispatch_requested(payments_of(pool, gw))
    await asyncio.sleep(0.05)
    await record_notices(payments_of(pool, gw))
    assert await status_of(pool, envelope.claim_id) == "retrying"
    assert gw.lost  # the failure of attempt 1 is still due at the bank
    # The next loop starts late (as a restarted one does): the retry is due, so attempt 2
    # is submitted before the bank delivers attempt 1's failure again.
    await asyncio.sleep(POLICY.max_s + 0.1)
    assert await dispatch_requested(payments_of(pool, gw)) == 1
    await asyncio.sleep(0.05)

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)
    payout_id = await pool.fetchval(
        "SELECT payout_id FROM payouts WHERE claim_id = $1", envelope.claim_id
    )
    dump = await money_path_dump(pool, {payout_id})
    redelivered = await pool.fetchval(
        """SELECT notified FROM bank_sim.notices
           WHERE payout_id = $1 AND attempt = 1 AND hop = 'failed'""",
        payout_id,
    )
    assert redelivered, dump  # delivered again and acknowledged the second time
    bank = await pool.fetch("SELECT * FROM bank_sim.instructions WHERE payout_id = $1", payout_id)
    assert [(b["attempt"], b["status"]) for b in bank] == [(2, "settled")], dump
    answer = await gw.status(payout_id, 1)
    assert (answer.attempt, answer.state) == (2, "settled")
    f = await fund(pool)
    assert f["reserved_fen"] == 0 and f["committed_fen"] == f["paid_fen"] == 330_00


async def test_withdrawal_of_a_returned_payout_releases_the_commitment(
    pool: asyncpg.Pool,
) -> None:
    gw = gateway(pool, always("return"))
    envelope = approval(650_00)
    await apply(pool, envelope)

    async def returned() -> bool:
        return await status_of(pool, envelope.claim_id) == "returned"

    await drive(pool, gw, returned)
    assert (await fund(pool))["committed_fen"] == 650_00
    withdrawn = EventEnvelope.wrap(
        ClaimWithdrawnV1(reason="enterprise withdrew", withdrawn_by="window-01"),
        claim_id=envelope.claim_id,
        producer="intake",
    )
    await apply(pool, withdrawn)
    row = await one(pool, "SELECT * FROM payouts WHERE claim_id = $1", envelope.claim_id)
    assert row["status"] == "released" and row["paid_amount_fen"] == 0
    f = await fund(pool)
    assert f["committed_fen"] == f["reserved_fen"] == f["paid_fen"] == 0


# --- issue 9 item 1: the bank ahead of the payout row --------------------------------


class TimeoutAfterSubmit(CrashAfterSubmit):
    """The bank takes the voucher, then the call times out on the way back (once)."""

    async def submit(self, instruction: PaymentInstruction) -> str:
        reference: str = await self.inner.submit(instruction)
        if not self.crashed:
            self.crashed = True
            raise GatewayUnavailable("read timeout after 30 s")
        return reference


async def notices_of(pool: asyncpg.Pool, payout_id: uuid.UUID) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM bank_sim.notices WHERE payout_id = $1 ORDER BY id", payout_id
    )


async def test_gateway_timeout_after_the_bank_took_the_voucher_is_unknown_never_released(
    pool: asyncpg.Pool,
) -> None:
    gw = TimeoutAfterSubmit(gateway(pool, always("arrive")))
    envelope = approval(420_00)
    await apply(pool, envelope)
    await dispatch_requested(payments_of(pool, gw))
    # Nobody knows whether the bank has it: unknown, still committed.
    assert await status_of(pool, envelope.claim_id) == "unknown"
    assert (await fund(pool))["committed_fen"] == 420_00
    # The bank's notices about that attempt are applied, not thrown away.
    await asyncio.sleep(0.05)
    await record_notices(payments_of(pool, gw))
    assert await status_of(pool, envelope.claim_id) in ("accepted", "sent", "paid")
    payout_id = await pool.fetchval(
        "SELECT payout_id FROM payouts WHERE claim_id = $1", envelope.claim_id
    )

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)
    f = await fund(pool)
    assert f["committed_fen"] == f["paid_fen"] == 420_00
    bank = await pool.fetch("SELECT * FROM bank_sim.instructions WHERE payout_id = $1", payout_id)
    assert [(b["status"], b["attempt"]) for b in bank] == [("settled", 1)]


async def test_unknown_payout_is_not_released_by_a_lapse_and_is_resolved_by_asking_the_bank(
    pool: asyncpg.Pool,
) -> None:
    gw = TimeoutAfterSubmit(gateway(pool, always("arrive")))
    envelope = approval(510_00)
    await apply(pool, envelope)
    await dispatch_requested(payments_of(pool, gw))
    assert await status_of(pool, envelope.claim_id) == "unknown"
    lapsed = EventEnvelope.wrap(
        ClaimLapsedV1(missing_documents=["audit_report"], due_by=datetime.now(UTC).date()),
        claim_id=envelope.claim_id,
        producer="intake",
    )
    await apply(pool, lapsed)
    row = await one(pool, "SELECT * FROM payouts WHERE claim_id = $1", envelope.claim_id)
    # The money may have left: never released, the commitment stays.
    assert row["status"] == "unknown" and "lapsed" in row["late_cancellation"]
    assert (await fund(pool))["committed_fen"] == 510_00
    # After the backoff the resolver asks the bank (before any notice is read): it has
    # attempt 1 in hand.
    await asyncio.sleep(POLICY.max_s + 0.05)
    assert await resolve_unknown(payments_of(pool, gw)) == 1
    assert await status_of(pool, envelope.claim_id) == "issued"
    hops = await pool.fetch(
        "SELECT hop, attempt FROM payout_hops WHERE payout_id = $1 ORDER BY id", row["payout_id"]
    )
    assert ("unknown", 1) in [(h["hop"], h["attempt"]) for h in hops]

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)
    assert (await fund(pool))["paid_fen"] == 510_00


class UnreachableBank(CrashAfterSubmit):
    """The call never reaches the bank: it times out before the bank sees it (once)."""

    async def submit(self, instruction: PaymentInstruction) -> str:
        if not self.crashed:
            self.crashed = True
            raise GatewayUnavailable("connect timeout")
        reference: str = await self.inner.submit(instruction)
        return reference


async def test_unknown_payout_the_bank_never_received_is_retried_as_the_next_attempt(
    pool: asyncpg.Pool,
) -> None:
    gw = UnreachableBank(gateway(pool, always("arrive")))
    envelope = approval(130_00)
    await apply(pool, envelope)
    await dispatch_requested(payments_of(pool, gw))
    assert await status_of(pool, envelope.claim_id) == "unknown"
    # The bank is asked after a backoff, not at once.
    waits = await pool.fetchval(
        "SELECT next_attempt_at IS NOT NULL FROM payouts WHERE claim_id = $1", envelope.claim_id
    )
    assert waits is True
    await asyncio.sleep(POLICY.max_s + 0.05)
    assert await resolve_unknown(payments_of(pool, gw)) == 1
    assert await status_of(pool, envelope.claim_id) == "retrying"

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)
    payout_id = await pool.fetchval(
        "SELECT payout_id FROM payouts WHERE claim_id = $1", envelope.claim_id
    )
    bank = await pool.fetch("SELECT * FROM bank_sim.instructions WHERE payout_id = $1", payout_id)
    assert [(b["status"], b["attempt"]) for b in bank] == [("settled", 2)]


class LateArrival(CrashAfterSubmit):
    """Attempt 1 times out while still on its way: the bank, asked, has not got it; it
    lands at the bank just before attempt 2, which the bank then answers "in hand"."""

    def __init__(self, inner: Any, pool: asyncpg.Pool) -> None:
        super().__init__(inner)
        self.pool = pool
        self.on_its_way: PaymentInstruction | None = None

    async def submit(self, instruction: PaymentInstruction) -> str:
        if self.on_its_way is None and not self.crashed:
            self.crashed = True
            self.on_its_way = instruction
            raise GatewayUnavailable("read timeout")
        if self.on_its_way is not None:
            await self.inner.submit(self.on_its_way)  # lands now
            self.on_its_way = None
            await asyncio.sleep(0.05)  # and its notices come due
            await record_notices(payments_of(self.pool, self.inner))
        reference: str = await self.inner.submit(instruction)
        return reference


async def test_an_earlier_attempt_landing_late_at_the_bank_is_followed_not_dropped(
    pool: asyncpg.Pool,
) -> None:
    gw = LateArrival(gateway(pool, always("arrive")), pool)
    envelope = approval(61_00)
    await apply(pool, envelope)
    await dispatch_requested(payments_of(pool, gw))
    assert await status_of(pool, envelope.claim_id) == "unknown"
    await asyncio.sleep(POLICY.max_s + 0.05)
    assert await resolve_unknown(payments_of(pool, gw)) == 1  # "never received"
    assert await status_of(pool, envelope.claim_id) == "retrying"

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    # Attempt 2 finds attempt 1 in hand at the bank: the payout follows attempt 1.
    await drive(pool, gw, paid)
    payout_id = await pool.fetchval(
        "SELECT payout_id FROM payouts WHERE claim_id = $1", envelope.claim_id
    )
    bank = await pool.fetch("SELECT * FROM bank_sim.instructions WHERE payout_id = $1", payout_id)
    assert [(b["status"], b["attempt"]) for b in bank] == [("settled", 1)]
    assert (await fund(pool))["paid_fen"] == 61_00


class OtherInstanceThenCrash(CrashAfterSubmit):
    """The bank takes the voucher; a second payout instance reads and records the bank's
    notices; then this instance dies before recording the outcome (once)."""

    def __init__(self, inner: Any, pool: asyncpg.Pool) -> None:
        super().__init__(inner)
        self.pool = pool

    async def submit(self, instruction: PaymentInstruction) -> str:
        reference: str = await self.inner.submit(instruction)
        if not self.crashed:
            self.crashed = True
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                await record_notices(payments_of(self.pool, self.inner))
                done = await self.pool.fetchval(
                    """SELECT count(*) = 0 FROM bank_sim.notices
                       WHERE payout_id = $1 AND NOT notified""",
                    instruction.payout_id,
                )
                if done:
                    break
                await asyncio.sleep(0.02)
            raise ConnectionResetError("payout killed before recording the outcome")
        return reference


async def test_outcome_lost_while_another_instance_records_the_notices_still_pays_once(
    pool: asyncpg.Pool,
) -> None:
    gw = OtherInstanceThenCrash(gateway(pool, always("arrive")), pool)
    envelope = approval(333_00)
    await apply(pool, envelope)
    with pytest.raises(ConnectionResetError):
        await dispatch_requested(payments_of(pool, gw))

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid, timeout=5)
    f = await fund(pool)
    assert f["reserved_fen"] == 0 and f["committed_fen"] == f["paid_fen"] == 333_00


async def test_a_notice_ahead_of_the_payout_row_is_kept_until_the_row_catches_up(
    pool: asyncpg.Pool,
) -> None:
    gw = gateway(pool, always("arrive"))
    envelope = approval(271_00)
    await apply(pool, envelope)
    row = await one(pool, "SELECT * FROM payouts WHERE claim_id = $1", envelope.claim_id)
    # An earlier process got the voucher to the bank and lost its own record of it.
    await gw.submit(
        PaymentInstruction(
            payout_id=row["payout_id"],
            issue_no=1,
            attempt=1,
            voucher_no="DP-X-1",
            voucher_kind="direct_payment_voucher",
            amount_fen=271_00,
            bank_name="自贡银行",
            account_number="6222020200001234567",
            account_name="测试企业",
        )
    )
    await asyncio.sleep(0.05)
    await record_notices(payments_of(pool, gw))
    # The row (attempt 0, requested) is behind those notices: they are kept, not dropped.
    assert await status_of(pool, envelope.claim_id) == "requested"
    assert [n["notified"] for n in await notices_of(pool, row["payout_id"])] == [False] * 3

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)
    assert all(n["notified"] for n in await notices_of(pool, row["payout_id"]))
    f = await fund(pool)
    assert f["committed_fen"] == f["paid_fen"] == 271_00


async def test_notices_behind_the_row_are_discarded(pool: asyncpg.Pool) -> None:
    def planner(i: PaymentInstruction) -> Outcome:
        return "return" if i.issue_no == 1 else "arrive"

    gw = gateway(pool, planner)
    envelope = approval(64_00)
    await apply(pool, envelope)

    async def returned() -> bool:
        return await status_of(pool, envelope.claim_id) == "returned"

    await drive(pool, gw, returned)
    payout_id = await pool.fetchval(
        "SELECT payout_id FROM payouts WHERE claim_id = $1", envelope.claim_id
    )
    await correct_account(pool, payout_id, payee("6222020200007777777"), "fin", "name")
    # A late copy of issue 1's "returned" notice is behind the row (now issue 2): discarded.
    await pool.execute(
        """INSERT INTO bank_sim.notices (payout_id, issue_no, attempt, hop, due_at, reason,
               bank_reference, client)
           VALUES ($1, 1, 1, 'returned', now(), 'late copy', 'SIM-X-1', $2)""",
        payout_id,
        CLIENTS[id(pool)],
    )

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)
    assert all(n["notified"] for n in await notices_of(pool, payout_id))


async def test_payouts_stuck_in_issued_or_unknown_are_counted(pool: asyncpg.Pool) -> None:
    gw = TimeoutAfterSubmit(gateway(pool, always("arrive")))
    envelope = approval(77_00)
    await apply(pool, envelope)
    await dispatch_requested(payments_of(pool, gw))
    assert await status_of(pool, envelope.claim_id) == "unknown"
    async with pool.acquire() as conn:
        assert (await stuck_payouts(conn, stuck_after_s=3600)) == {}
        await conn.execute("UPDATE payouts SET status_at = now() - interval '2 hours'")
        assert (await stuck_payouts(conn, stuck_after_s=3600)) == {"unknown": 1}


# --- issue 9 item 2: no bank call inside a database transaction -----------------------


class SlowBank(CrashAfterSubmit):
    """The bank answers only when the test lets it."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def submit(self, instruction: PaymentInstruction) -> str:
        self.entered.set()
        await self.release.wait()
        reference: str = await self.inner.submit(instruction)
        return reference


async def test_a_slow_bank_holds_no_lock_on_the_payout_or_the_fund(pool: asyncpg.Pool) -> None:
    gw = SlowBank(gateway(pool, always("arrive")))
    envelope = approval(90_00)
    await apply(pool, envelope)
    dispatch = asyncio.create_task(dispatch_requested(payments_of(pool, gw)))
    try:
        await asyncio.wait_for(gw.entered.wait(), 5)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '300ms'")
            await conn.execute("SELECT 1 FROM funds WHERE fund_id = $1 FOR UPDATE", PROGRAM)
            await conn.execute(
                "SELECT 1 FROM payouts WHERE claim_id = $1 FOR UPDATE", envelope.claim_id
            )
        # Meanwhile the consumer can still reserve on the same fund.
        other = approval(10_00)
        await submit(pool, other)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '300ms'")
            with after_commit_scope():
                await REVIEW_DECIDED(conn, other)
        assert await status_of(pool, other.claim_id) == "requested"
    finally:
        gw.release.set()
        await dispatch
    assert await status_of(pool, envelope.claim_id) == "issued"


# --- issue 9 item 7: a permanently failed payout ------------------------------------


async def test_failed_payout_is_corrected_and_reissued_or_closed_by_finance(
    pool: asyncpg.Pool,
) -> None:
    def planner(i: PaymentInstruction) -> Outcome:
        return "permanent" if i.issue_no == 1 else "arrive"

    gw = gateway(pool, planner)
    first, second = approval(500_00), approval(700_00)
    for e in (first, second):
        await apply(pool, e)

    async def both_failed() -> bool:
        return bool(await pool.fetchval("SELECT count(*) = 2 FROM payouts WHERE status = 'failed'"))

    await drive(pool, gw, both_failed)
    assert (await fund(pool))["committed_fen"] == 0  # given back at the failure
    ids = {r["claim_id"]: r["payout_id"] for r in await pool.fetch("SELECT * FROM payouts")}
    # Correct the account of the first: it is reserved again and re-issued as issue 2.
    issue_no = await correct_account(
        pool, ids[first.claim_id], payee("6222020200005555555"), "finance-02", "new account"
    )
    assert issue_no == 2
    assert await status_of(pool, first.claim_id) == "requested"
    assert (await fund(pool))["reserved_fen"] == 500_00
    # Close the second with a reason: released, the event names finance's reason.
    await close_payout(pool, ids[second.claim_id], "finance-02", "enterprise dissolved")
    row = await one(pool, "SELECT * FROM payouts WHERE payout_id = $1", ids[second.claim_id])
    assert row["status"] == "released"
    assert row["release_reason"] == "closed by finance: enterprise dissolved"
    released = await pool.fetch("SELECT payload FROM outbox WHERE event_type = 'payout.released'")
    assert [json.loads(r["payload"])["payload"]["reason"] for r in released] == [
        "closed by finance: enterprise dissolved"
    ]
    audit = await pool.fetch("SELECT action FROM finance_audit ORDER BY id")
    assert [a["action"] for a in audit] == ["account_correction", "close"]
    with pytest.raises(Conflict):
        await close_payout(pool, ids[second.claim_id], "finance-02", "again")

    async def paid() -> bool:
        return await status_of(pool, first.claim_id) == "paid"

    await drive(pool, gw, paid)
    f = await fund(pool)
    assert f["committed_fen"] == f["paid_fen"] == 500_00 and f["reserved_fen"] == 0
    vouchers = await pool.fetch(
        "SELECT outcome FROM vouchers WHERE payout_id = $1 ORDER BY issue_no", ids[first.claim_id]
    )
    assert [v["outcome"] for v in vouchers] == ["failed", "arrived"]


async def test_closing_a_returned_payout_releases_its_commitment(pool: asyncpg.Pool) -> None:
    gw = gateway(pool, always("return"))
    envelope = approval(45_00)
    await apply(pool, envelope)

    async def returned() -> bool:
        return await status_of(pool, envelope.claim_id) == "returned"

    await drive(pool, gw, returned)
    assert (await fund(pool))["committed_fen"] == 45_00
    payout_id = await pool.fetchval(
        "SELECT payout_id FROM payouts WHERE claim_id = $1", envelope.claim_id
    )
    await close_payout(pool, payout_id, "finance-03", "payee refuses the subsidy")
    f = await fund(pool)
    assert f["committed_fen"] == f["reserved_fen"] == 0
    assert await status_of(pool, envelope.claim_id) == "released"


# --- issue 9 item 15: business counters only after commit ------------------------------


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def counter(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return value or 0.0


async def test_payout_counters_move_once_per_committed_change(pool: asyncpg.Pool) -> None:
    schema = await pool.fetchval("SELECT current_schema()")

    async def poison(conn: DbConnection, envelope: EventEnvelope) -> None:
        raise ValueError("cannot apply")

    consumer = IdempotentBatchConsumer(
        service="payout",
        schema=schema,
        pool=pool,
        handlers={"review.decided": REVIEW_DECIDED, "claim.lapsed": poison},
        retry_backoff_s=0.01,
    )
    labels = {"claim_kind": "subsidy", "status": "requested"}
    before = counter("claimflow_payouts_total", **labels)
    good = approval(12_00)
    await submit(pool, good)
    bad = EventEnvelope.wrap(
        ClaimLapsedV1(missing_documents=["x"], due_by=datetime.now(UTC).date()),
        claim_id=uuid.uuid4(),
        producer="intake",
    )
    records = [
        FakeRecord("t", 0, i, None, e.model_dump_json().encode()) for i, e in enumerate([good, bad])
    ]
    # The poison event makes the consumer run the batch a second time, isolated.
    await consumer.handle_batch(records)
    assert await status_of(pool, good.claim_id) == "requested"
    assert counter("claimflow_payouts_total", **labels) == before + 1

    # A batch rolled back (the database refuses) counts nothing.
    async def refused(conn: DbConnection, envelope: EventEnvelope) -> None:
        await REVIEW_DECIDED(conn, envelope)
        raise TransientError("database busy")

    consumer.handlers["review.decided"] = refused
    again = approval(13_00)
    with pytest.raises(TransientError):
        await consumer.handle_batch([FakeRecord("t", 0, 9, None, again.model_dump_json().encode())])
    assert await status_of(pool, again.claim_id) is None
    assert counter("claimflow_payouts_total", **labels) == before + 1


async def test_whole_table_gauges_are_exported_by_one_instance_only(
    pool: asyncpg.Pool, infra: StackConfig
) -> None:
    schema = await pool.fetchval("SELECT current_schema()")
    # Named after the test's schema: no payout service on this database holds the lock.
    first = GaugeExporter(f"payout.{schema}")
    second = GaugeExporter(f"payout.{schema}")
    try:
        assert await first.refresh(pool, stuck_after_s=60) is True
        assert REGISTRY.get_sample_value("claimflow_fund_reserved_yuan", {"fund": PROGRAM}) == 0
        # The second instance does not export them (its copies are removed).
        assert await second.refresh(pool, stuck_after_s=60) is False
        assert REGISTRY.get_sample_value("claimflow_fund_reserved_yuan", {"fund": PROGRAM}) is None
        # When the first goes away, the second takes over.
        await first.release()
        assert await second.refresh(pool, stuck_after_s=60) is True
        assert REGISTRY.get_sample_value("claimflow_fund_reserved_yuan", {"fund": PROGRAM}) == 0
    finally:
        await first.release()
        await second.release()


# --- issue 9 item 3: finance POSTs are idempotent ---------------------------------------


@pytest.fixture
async def finance_api(pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """The payout service's HTTP app (routes, error handlers) on this test's schema,
    without its consumer and loops."""
    app = create_app()
    app.state.runtime.pool = pool
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://payout") as client:
        yield client


FINANCE = finance_clerk("finance-01")
SUPERVISOR = finance_supervisor("finance-02")


async def approve(
    api: httpx.AsyncClient, request_id: str, who: Mapping[str, str], key: str
) -> httpx.Response:
    return await api.post(
        f"/finance/requests/{request_id}/approve",
        json={"comment": "checked"},
        headers={**who, "Idempotency-Key": key},
    )


async def test_top_up_repeated_with_the_same_idempotency_key_adds_the_budget_once(
    pool: asyncpg.Pool, finance_api: httpx.AsyncClient
) -> None:
    budget = (await fund(pool))["budget_fen"]
    url = f"/funds/{PROGRAM}/top-ups"
    body = {"amount": "1000.00", "reason": "second tranche"}
    headers = {**SUPERVISOR, "Idempotency-Key": "top-up-2026-11-27-1"}
    first = await finance_api.post(url, json=body, headers=headers)
    again = await finance_api.post(url, json=body, headers=headers)
    assert first.status_code == again.status_code == 202, first.text
    assert again.json() == first.json()
    assert first.json()["status"] == "pending"
    # Only a request so far (dual control): the budget moves when another approves.
    assert (await fund(pool))["budget_fen"] == budget
    assert await pool.fetchval("SELECT count(*) FROM finance_requests") == 1
    request_id = first.json()["request_id"]
    approved = await approve(finance_api, request_id, FINANCE, "approve-1")
    approved_again = await approve(finance_api, request_id, FINANCE, "approve-1")
    assert approved.status_code == approved_again.status_code == 200, approved.text
    assert approved.json() == approved_again.json()
    assert approved.json()["status"] == "approved"
    assert approved.json()["decided_by"] == "finance-01"
    assert (await fund(pool))["budget_fen"] == budget + 1000_00
    # The same key with another body is refused, naming the header.
    other = await finance_api.post(url, json={**body, "amount": "5.00"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["errors"][0]["field"] == "header.Idempotency-Key"
    # Without a key a money-moving POST is refused: a retry could not be recognised.
    bare = await finance_api.post(url, json=body, headers=SUPERVISOR)
    assert bare.status_code == 428
    assert bare.json()["errors"][0]["field"] == "header.Idempotency-Key"
    bare = await finance_api.post(f"/finance/requests/{request_id}/approve", headers=FINANCE)
    assert bare.status_code == 428
    assert (await fund(pool))["budget_fen"] == budget + 1000_00


async def test_a_failure_after_the_top_up_committed_never_claims_nothing_changed(
    pool: asyncpg.Pool, finance_api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def database_gone(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionResetError("connection lost after COMMIT")

    # What the route did with the database after its transaction (refresh the gauges)
    # fails; a route that does nothing after its commit is not affected.
    monkeypatch.setattr(finance, "refresh_gauges", database_gone, raising=False)
    budget = (await fund(pool))["budget_fen"]
    headers = {**SUPERVISOR, "Idempotency-Key": "top-up-after-commit"}
    body = {"amount": "200.00", "reason": "tranche"}
    first = await finance_api.post(f"/funds/{PROGRAM}/top-ups", json=body, headers=headers)
    assert first.status_code == 202, first.text
    approved = await approve(finance_api, first.json()["request_id"], FINANCE, "after-commit")
    assert (await fund(pool))["budget_fen"] == budget + 200_00  # it did commit
    assert "nothing was changed" not in approved.text
    retry = await approve(finance_api, first.json()["request_id"], FINANCE, "after-commit")
    assert retry.status_code == 200
    assert (await fund(pool))["budget_fen"] == budget + 200_00


# --- issue 11 item 4: dual control (maker-checker) on top-ups and corrections ------------


async def test_the_requester_cannot_approve_their_own_top_up_another_person_can(
    pool: asyncpg.Pool, finance_api: httpx.AsyncClient
) -> None:
    budget = (await fund(pool))["budget_fen"]
    body = {"amount": "300.00", "reason": "tranche 3"}
    asked = await finance_api.post(
        f"/funds/{PROGRAM}/top-ups", json=body, headers={**FINANCE, "Idempotency-Key": "t3"}
    )
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["request_id"]
    own = await approve(finance_api, request_id, FINANCE, "own")
    assert own.status_code == 403, own.text
    assert own.json()["errors"][0]["rule"] == "four_eyes"
    assert (await fund(pool))["budget_fen"] == budget
    assert (
        await pool.fetchval(
            "SELECT status FROM finance_requests WHERE request_id = $1", uuid.UUID(request_id)
        )
        == "pending"
    )
    other = await approve(finance_api, request_id, SUPERVISOR, "other")
    assert other.status_code == 200, other.text
    assert (await fund(pool))["budget_fen"] == budget + 300_00
    # Decided once: approving again (another key) is refused and changes nothing.
    twice = await approve(finance_api, request_id, SUPERVISOR, "other-2")
    assert twice.status_code == 409
    assert twice.json()["errors"][0]["rule"] == "pending_only"
    assert (await fund(pool))["budget_fen"] == budget + 300_00
    actions = await pool.fetch("SELECT actor, action FROM finance_audit ORDER BY id")
    assert [(r["actor"], r["action"]) for r in actions] == [
        ("finance-01", "top_up_requested"),
        ("finance-02", "request_approved"),
        ("finance-01", "top_up"),
    ]
    listed = await finance_api.get(
        "/finance/requests", params={"status": "pending"}, headers=FINANCE
    )
    assert listed.status_code == 200 and listed.json() == []


async def test_a_large_top_up_needs_a_supervisor_and_a_rejection_changes_nothing(
    pool: asyncpg.Pool, finance_api: httpx.AsyncClient
) -> None:
    budget = (await fund(pool))["budget_fen"]
    clerk2 = finance_clerk("finance-03")
    body = {"amount": "1000000.01", "reason": "large tranche"}
    asked = await finance_api.post(
        f"/funds/{PROGRAM}/top-ups", json=body, headers={**FINANCE, "Idempotency-Key": "big"}
    )
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["request_id"]
    pending = await finance_api.get("/finance/requests?status=pending", headers=clerk2)
    assert [r["request_id"] for r in pending.json()] == [request_id]
    by_clerk = await approve(finance_api, request_id, clerk2, "big-clerk")
    assert by_clerk.status_code == 403, by_clerk.text
    assert by_clerk.json()["errors"][0]["rule"] == "supervisor_required"
    assert (await fund(pool))["budget_fen"] == budget
    by_supervisor = await approve(finance_api, request_id, SUPERVISOR, "big-sup")
    assert by_supervisor.status_code == 200, by_supervisor.text
    assert (await fund(pool))["budget_fen"] == budget + 1_000_000_01
    # A rejected request changes nothing but itself.
    small = await finance_api.post(
        f"/funds/{PROGRAM}/top-ups",
        json={"amount": "5.00", "reason": "no"},
        headers={**FINANCE, "Idempotency-Key": "small"},
    )
    rejected = await finance_api.post(
        f"/finance/requests/{small.json()['request_id']}/reject",
        json={"comment": "no basis"},
        headers={**clerk2, "Idempotency-Key": "reject-small"},
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert (await fund(pool))["budget_fen"] == budget + 1_000_000_01


async def test_a_top_up_above_the_maximum_is_refused_naming_the_field(
    pool: asyncpg.Pool, finance_api: httpx.AsyncClient
) -> None:
    budget = (await fund(pool))["budget_fen"]
    body = {"amount": "10000000.01", "reason": "too much"}
    asked = await finance_api.post(
        f"/funds/{PROGRAM}/top-ups", json=body, headers={**SUPERVISOR, "Idempotency-Key": "max"}
    )
    assert asked.status_code == 422, asked.text
    error = asked.json()["errors"][0]
    assert (error["field"], error["rule"]) == ("body.amount", "max_top_up")
    assert await pool.fetchval("SELECT count(*) FROM finance_requests") == 0
    assert (await fund(pool))["budget_fen"] == budget


async def test_the_database_refuses_a_request_decided_by_its_requester(
    pool: asyncpg.Pool, finance_api: httpx.AsyncClient
) -> None:
    asked = await finance_api.post(
        f"/funds/{PROGRAM}/top-ups",
        json={"amount": "1.00", "reason": "x"},
        headers={**FINANCE, "Idempotency-Key": "db-check"},
    )
    request_id = uuid.UUID(asked.json()["request_id"])
    with pytest.raises(asyncpg.CheckViolationError, match="four_eyes"):
        await pool.execute(
            """UPDATE finance_requests SET status = 'approved', decided_by = requested_by,
                      decided_at = now() WHERE request_id = $1""",
            request_id,
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "UPDATE finance_requests SET amount_fen = 1000000000001 WHERE request_id = $1",
            request_id,
        )


async def test_account_correction_and_close_over_http_are_idempotent(
    pool: asyncpg.Pool, finance_api: httpx.AsyncClient
) -> None:
    gw = gateway(pool, always("permanent"))
    envelope = approval(88_00)
    await apply(pool, envelope)

    async def failed() -> bool:
        return await status_of(pool, envelope.claim_id) == "failed"

    await drive(pool, gw, failed)
    payout_id = await pool.fetchval(
        "SELECT payout_id FROM payouts WHERE claim_id = $1", envelope.claim_id
    )
    close = {"reason": "enterprise deregistered"}
    headers = {**FINANCE, "Idempotency-Key": f"close-{payout_id}"}
    first = await finance_api.post(f"/payouts/{payout_id}/close", json=close, headers=headers)
    again = await finance_api.post(f"/payouts/{payout_id}/close", json=close, headers=headers)
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json()
    assert first.json()["status"] == "released"
    assert await pool.fetchval("SELECT count(*) FROM finance_audit WHERE action = 'close'") == 1
    # Closed: no more corrections.
    fix = {"payee": payee("6222020200001111111").model_dump(), "reason": "too late"}
    late = await finance_api.post(
        f"/payouts/{payout_id}/account-correction",
        json=fix,
        headers={**FINANCE, "Idempotency-Key": "fix-late"},
    )
    assert late.status_code == 409
    assert late.json()["errors"][0]["rule"] == "returned_or_failed_only"


# --- issue 10: the catalogue's rules, and status writes only from a legal move ------------


def catalogue_with(tmp_path: Path, change: Callable[[dict[str, Any]], None]) -> Catalogue:
    data = yaml.safe_load(PROGRAMS_FILE.read_text(encoding="utf-8"))
    change(data)
    path = tmp_path / "programs.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return load_catalogue(path)


async def test_a_new_program_in_the_catalogue_gets_its_fund_and_pays_from_it(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A new program is a YAML edit: payout seeds its fund with its budget and reserves
    an approval under it from that fund (none of the shipped funds moves)."""

    def new(data: dict[str, Any]) -> None:
        data["programs"].append(
            {
                "id": "green-transition-2027",
                "name": "绿色转型补贴",
                "fund": "green-fund-2027",
                "budget": "1000.00",
                "per_enterprise_cap": "800.00",
                "opens": "2027-01-01",
                "closes": "2027-12-31",
                "departments": ["finance", "ecology"],
                "documents_due_working_days": 5,
                "documents": [{"id": "application_form", "name": "申请表", "critical": True}],
            }
        )

    catalogue = catalogue_with(tmp_path, new)
    async with UOWS.acquire(pool) as uow:
        assert await funding.seed_funds(uow, catalogue, None) == 1
    green = await fund(pool, "green-fund-2027")
    assert (green["budget_fen"], green["claim_kind"]) == (1000_00, "subsidy")
    consume = payout_subscriptions(catalogue).handlers(UOWS)
    first, second = (
        approval(700_00, program_id="green-transition-2027"),
        approval(500_00, program_id="green-transition-2027"),
    )
    for e in (first, second):
        await submit(pool, e)
        async with pool.acquire() as conn:
            await consume[("review.decided", 1)](conn, e)
    assert await status_of(pool, first.claim_id) == "requested"
    assert await status_of(pool, second.claim_id) == "queued"  # the budget is the program's
    assert (await fund(pool, "green-fund-2027"))["reserved_fen"] == 700_00
    assert await pool.fetchval("SELECT sum(reserved_fen) FROM funds") == 700_00


async def test_a_status_write_needs_the_row_in_the_moves_source_status(
    pool: asyncpg.Pool,
) -> None:
    envelope = approval(40_00)
    await apply(pool, envelope)
    row = await one(pool, "SELECT * FROM payouts WHERE claim_id = $1", envelope.claim_id)
    assert row["status"] == "requested"
    # A move from another status than the row's is refused before anything changes.
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(payouts.StaleStatus):
            await payouts.release(
                conn,
                row["payout_id"],
                move(PayoutStatus.QUEUED, PayoutStatus.RELEASED),
                datetime.now(UTC),
                "wrong source",
            )
    # And a move the table does not hold cannot even be made.
    with pytest.raises(IllegalTransition):
        move(PayoutStatus.REQUESTED, PayoutStatus.PAID)
    assert await status_of(pool, envelope.claim_id) == "requested"


# --- issue 12 item 5: payout checks what it pays ------------------------------------------

AUDITED = subscriptions.handlers(UnitOfWorkFactory("payout", PAYOUT_EVENTS, hooks=(audit_hook,)))
"""The handlers with the service's audit hook (``bootstrap.create_app``)."""
CAP_FEN = 300_000_00
"""startup-loan-interest-2026's per-enterprise cap (shared/reference/programs.yaml)."""


async def payout_row(pool: asyncpg.Pool, claim_id: uuid.UUID) -> asyncpg.Record:
    return await one(pool, "SELECT * FROM payouts WHERE claim_id = $1", claim_id)


async def at_the_bank(pool: asyncpg.Pool, claim_id: uuid.UUID) -> int:
    """How many instructions the simulated bank holds for the claim's payout."""
    n: int = await pool.fetchval(
        """SELECT count(*) FROM bank_sim.instructions
           WHERE payout_id = (SELECT payout_id FROM payouts WHERE claim_id = $1)""",
        claim_id,
    )
    return n


async def run_payment_loop(pool: asyncpg.Pool, gw: Any, rounds: int = 5) -> None:
    """Give the payment loop every chance to issue what it would issue."""
    for _ in range(rounds):
        await dispatch_requested(payments_of(pool, gw))
        await record_notices(payments_of(pool, gw))
        await asyncio.sleep(0.02)


async def withheld_events(pool: asyncpg.Pool, claim_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        """SELECT payload FROM outbox WHERE event_type = 'payout.withheld'
           AND message_key = $1 ORDER BY id""",
        str(claim_id),
    )
    return [json.loads(r["payload"])["payload"] for r in rows]


async def test_an_approval_above_intakes_eligible_amount_is_withheld_and_never_paid(
    pool: asyncpg.Pool, finance_api: httpx.AsyncClient
) -> None:
    before = counter("claimflow_payouts_withheld_total", reason="above_eligible")
    claim_id = uuid.uuid4()
    await apply(pool, submission(claim_id, 1_000_00))
    decided = approval(500_000_000_000, claim_id=claim_id, submitted=False)
    async with pool.acquire() as conn:  # as the service runs it: events chained (audit)
        await AUDITED[("review.decided", 1)](conn, decided)
    row = await payout_row(pool, claim_id)
    assert (row["status"], row["withheld_reason"]) == ("withheld", "above_eligible")
    assert "1000.00 yuan eligible" in row["withheld_detail"]
    # Nothing reserved, nothing queued, nothing issued.
    f = await fund(pool)
    assert f["reserved_fen"] == f["committed_fen"] == 0
    await run_payment_loop(pool, gateway(pool, always("arrive")))
    assert await status_of(pool, claim_id) == "withheld"
    assert await at_the_bank(pool, claim_id) == 0
    assert await pool.fetchval("SELECT count(*) FROM vouchers") == 0
    # payout.withheld, with its reason, chained in the claim's audit history.
    assert [e["reason"] for e in await withheld_events(pool, claim_id)] == ["above_eligible"]
    chained = await pool.fetch(
        "SELECT action FROM audit_log WHERE chain_id = $1 ORDER BY seq", str(claim_id)
    )
    assert "payout.withheld" in [r["action"] for r in chained]
    assert counter("claimflow_payouts_withheld_total", reason="above_eligible") == before + 1
    # Finance sees it: GET /payouts?status=withheld, with the reason.
    listed = await finance_api.get("/payouts", params={"status": "withheld"}, headers=FINANCE)
    assert listed.status_code == 200, listed.text
    assert [(p["claim_id"], p["withheld_reason"]) for p in listed.json()] == [
        (str(claim_id), "above_eligible")
    ]
    # The database refuses a withheld payout without its reason.
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "UPDATE payouts SET withheld_reason = NULL WHERE claim_id = $1", claim_id
        )


async def test_an_approval_to_another_account_than_intake_registered_is_withheld(
    pool: asyncpg.Pool,
) -> None:
    claim_id = uuid.uuid4()
    await apply(pool, submission(claim_id, 800_00))
    other = payee("6222020200009999999")
    await apply(pool, approval(800_00, claim_id=claim_id, submitted=False, account=other))
    row = await payout_row(pool, claim_id)
    assert (row["status"], row["withheld_reason"]) == ("withheld", "payee_mismatch")
    assert "9999999" not in row["withheld_detail"]  # masked: ****9999
    await run_payment_loop(pool, gateway(pool, always("arrive")))
    assert await at_the_bank(pool, claim_id) == 0
    # Kind or program other than intake's: withheld too.
    claim_b = uuid.uuid4()
    await apply(pool, submission(claim_b, 800_00, program_id=None))
    await apply(pool, approval(800_00, claim_id=claim_b, submitted=False))
    assert (await payout_row(pool, claim_b))["withheld_reason"] == "claim_mismatch"


async def test_an_approval_before_intakes_event_waits_then_is_paid_once(
    pool: asyncpg.Pool,
) -> None:
    gw = gateway(pool, always("arrive"))
    claim_id = uuid.uuid4()
    decided = approval(640_00, claim_id=claim_id, submitted=False)
    await apply(pool, decided)
    row = await payout_row(pool, claim_id)
    assert (row["status"], row["withheld_reason"]) == ("withheld", "awaiting_intake")
    await run_payment_loop(pool, gw)
    assert await at_the_bank(pool, claim_id) == 0
    # Intake's event arrives (another topic, later): checked again, admitted, paid.
    submitted = submission(claim_id, 640_00)
    await apply(pool, submitted)
    assert await status_of(pool, claim_id) == "requested"
    assert (await fund(pool))["reserved_fen"] == 640_00

    async def paid() -> bool:
        return await status_of(pool, claim_id) == "paid"

    await drive(pool, gw, paid)
    # Redelivered (at least once), both events change nothing: paid once.
    await apply(pool, submitted)
    await apply(pool, decided)
    await run_payment_loop(pool, gw)
    assert await at_the_bank(pool, claim_id) == 1
    row = await payout_row(pool, claim_id)
    assert (row["status"], row["paid_amount_fen"]) == ("paid", 640_00)
    assert await pool.fetchval("SELECT count(*) FROM vouchers") == 1


async def test_an_approval_before_intakes_event_is_withheld_with_the_real_reason(
    pool: asyncpg.Pool,
) -> None:
    claim_id = uuid.uuid4()
    await apply(pool, approval(640_00, claim_id=claim_id, submitted=False))
    await apply(pool, submission(claim_id, 600_00))  # intake computed less
    row = await payout_row(pool, claim_id)
    assert (row["status"], row["withheld_reason"]) == ("withheld", "above_eligible")
    assert [e["reason"] for e in await withheld_events(pool, claim_id)] == [
        "awaiting_intake",
        "above_eligible",
    ]
    assert (await fund(pool))["reserved_fen"] == 0
    await run_payment_loop(pool, gateway(pool, always("arrive")))
    assert await at_the_bank(pool, claim_id) == 0


async def test_two_claims_of_one_enterprise_cannot_together_exceed_the_program_cap(
    pool: asyncpg.Pool,
) -> None:
    uscc = "91510300MA6XYZ0001"
    first, second = uuid.uuid4(), uuid.uuid4()
    for claim_id in (first, second):
        await apply(pool, submission(claim_id, 200_000_00, uscc=uscc))
    # Both in one batch of the consumer, concurrently on two connections.
    await asyncio.gather(
        apply(pool, approval(200_000_00, claim_id=first, submitted=False)),
        apply(pool, approval(200_000_00, claim_id=second, submitted=False)),
    )
    rows = await pool.fetch("SELECT * FROM payouts ORDER BY withheld_reason NULLS FIRST")
    assert [(r["status"], r["withheld_reason"]) for r in rows] == [
        ("requested", None),
        ("withheld", "above_cap"),
    ]
    ledger = await one(pool, "SELECT * FROM enterprise_cap_ledger WHERE uscc = $1", uscc)
    assert (ledger["used_fen"], ledger["cap_fen"]) == (200_000_00, CAP_FEN)
    # A smaller claim that fits is admitted; the database refuses going past the cap.
    third = uuid.uuid4()
    await apply(pool, submission(third, 100_000_00, uscc=uscc))
    await apply(pool, approval(100_000_00, claim_id=third, submitted=False))
    assert await status_of(pool, third) == "requested"
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "UPDATE enterprise_cap_ledger SET used_fen = used_fen + 1 WHERE uscc = $1", uscc
        )
    # A withdrawal gives its part of the cap back.
    withdrawn = EventEnvelope.wrap(
        ClaimWithdrawnV1(reason="changed mind", withdrawn_by="window-01"),
        claim_id=third,
        producer="intake",
    )
    await apply(pool, withdrawn)
    assert await status_of(pool, third) == "released"
    ledger = await one(pool, "SELECT * FROM enterprise_cap_ledger WHERE uscc = $1", uscc)
    assert ledger["used_fen"] == 200_000_00


async def request_hold(
    api: httpx.AsyncClient,
    payout_id: uuid.UUID,
    who: Mapping[str, str],
    key: str,
    **body: Any,
) -> httpx.Response:
    return await api.post(
        f"/payouts/{payout_id}/hold-release",
        json={"reason": "checked with the enterprise", **body},
        headers={**who, "Idempotency-Key": key},
    )


async def test_a_withheld_payout_is_released_by_two_finance_people_and_paid_once(
    pool: asyncpg.Pool, finance_api: httpx.AsyncClient
) -> None:
    gw = gateway(pool, always("arrive"))
    claim_id = uuid.uuid4()
    registered = payee("6222020200001111111")
    await apply(pool, submission(claim_id, 420_00, account=registered))
    await apply(pool, approval(420_00, claim_id=claim_id, submitted=False))  # other account
    row = await payout_row(pool, claim_id)
    assert row["withheld_reason"] == "payee_mismatch"
    asked = await request_hold(finance_api, row["payout_id"], FINANCE, "rel-1", action="release")
    assert asked.status_code == 202, asked.text
    assert asked.json()["kind"] == "hold_release" and asked.json()["status"] == "pending"
    request_id = asked.json()["request_id"]
    own = await approve(finance_api, request_id, FINANCE, "rel-own")
    assert own.status_code == 403 and own.json()["errors"][0]["rule"] == "four_eyes"
    assert await status_of(pool, claim_id) == "withheld"
    other = await approve(finance_api, request_id, SUPERVISOR, "rel-other")
    assert other.status_code == 200, other.text
    assert other.json()["applied"]["status"] == "requested"
    # Paid to the account intake registered, once.
    row = await payout_row(pool, claim_id)
    assert json.loads(row["payee"])["account_number"] == registered.account_number

    async def paid() -> bool:
        return await status_of(pool, claim_id) == "paid"

    await drive(pool, gw, paid)
    again = await approve(finance_api, request_id, SUPERVISOR, "rel-again")
    assert again.status_code == 409
    await run_payment_loop(pool, gw)
    assert await at_the_bank(pool, claim_id) == 1
    instruction = await one(
        pool, "SELECT * FROM bank_sim.instructions WHERE payout_id = $1", row["payout_id"]
    )
    assert instruction["account_number"] == registered.account_number
    actions = await pool.fetch(
        "SELECT actor, action FROM finance_audit WHERE payout_id = $1 ORDER BY id",
        row["payout_id"],
    )
    assert [(r["actor"], r["action"]) for r in actions] == [
        ("finance-01", "hold_release_requested"),
        ("finance-02", "request_approved"),
        ("finance-01", "hold_release"),
    ]


async def test_a_release_re_checks_the_amount_and_a_cancel_releases(
    pool: asyncpg.Pool, finance_api: httpx.AsyncClient
) -> None:
    claim_id = uuid.uuid4()
    await apply(pool, submission(claim_id, 100_00))
    await apply(pool, approval(900_00, claim_id=claim_id, submitted=False))
    payout_id = (await payout_row(pool, claim_id))["payout_id"]
    asked = await request_hold(finance_api, payout_id, FINANCE, "r-1", action="release")
    assert asked.status_code == 202, asked.text
    refused = await approve(finance_api, asked.json()["request_id"], SUPERVISOR, "r-2")
    # Above what intake found eligible: no two people can make payout pay it.
    assert refused.status_code == 409, refused.text
    assert refused.json()["errors"][0]["rule"] == "above_eligible"
    assert await status_of(pool, claim_id) == "withheld"
    rejected = await finance_api.post(
        f"/finance/requests/{asked.json()['request_id']}/reject",
        json={"comment": "cannot pay more than eligible"},
        headers={**SUPERVISOR, "Idempotency-Key": "r-3"},
    )
    assert rejected.status_code == 200, rejected.text
    cancel = await request_hold(finance_api, payout_id, FINANCE, "c-1", action="cancel")
    assert cancel.status_code == 202, cancel.text
    done = await approve(finance_api, cancel.json()["request_id"], SUPERVISOR, "c-2")
    assert done.status_code == 200, done.text
    row = await payout_row(pool, claim_id)
    assert row["status"] == "released"
    assert row["release_reason"].startswith("withheld payout cancelled by finance: ")
    # Only a withheld payout can be released or cancelled this way.
    again = await request_hold(finance_api, payout_id, FINANCE, "c-3", action="cancel")
    assert again.status_code == 409 and again.json()["errors"][0]["rule"] == "withheld_only"
    bad = await request_hold(finance_api, payout_id, FINANCE, "c-4", action="pay-twice")
    assert bad.status_code == 422
