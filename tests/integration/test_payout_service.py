"""Payout on the real PostgreSQL: budgets under concurrent approvals, the queue and its
top-up, transient failures, returned payments, holds for pending documents, lapses and
reconciliation. Each test gets its own payout schema; the simulated bank is shared."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.payout.adapters.gateway import Outcome, PaymentInstruction, SimulatedGateway
from services.payout.domain.model import StatementInvalid
from services.payout.service_layer import handlers
from services.payout.service_layer.handlers import RetryPolicy
from services.payout.service_layer.reconciliation import import_statement, report_for
from shared.contracts import (
    BankAccount,
    ClaimDocumentsCompletedV1,
    ClaimLapsedV1,
    ClaimWithdrawnV1,
    EventEnvelope,
    ReviewDecidedV1,
)
from shared.db import DbConnection, create_pool, migrate
from shared.devstack.stack import StackConfig
from shared.programs import load_catalogue

pytestmark = pytest.mark.integration

MIGRATIONS = Path(handlers.__file__).parents[1] / "migrations"
PROGRAM = "startup-loan-interest-2026"
POLICY = RetryPolicy(base_s=0.05, max_s=0.2, max_attempts=5)
CLIENTS: dict[int, str] = {}
"""Pool → its schema, which is also its name at the simulated bank."""


def payee(account_number: str = "6222020200001234567") -> BankAccount:
    return BankAccount(bank_name="自贡银行", account_name="测试企业", account_number=account_number)


def approval(
    amount_fen: int,
    *,
    claim_id: uuid.UUID | None = None,
    program_id: str | None = PROGRAM,
    documents_pending: bool = False,
) -> EventEnvelope:
    return EventEnvelope.wrap(
        ReviewDecidedV1(
            decision="approved",
            approved_amount_fen=amount_fen,
            claim_kind="subsidy" if program_id else "vat_refund",
            program_id=program_id,
            payee=payee(),
            claim_received_at=datetime.now(UTC),
            documents_pending=documents_pending,
        ),
        claim_id=claim_id or uuid.uuid4(),
        producer="review",
    )


@pytest.fixture
async def pool(infra: StackConfig) -> AsyncIterator[asyncpg.Pool]:
    schema = f"payout_t_{uuid.uuid4().hex[:8]}"
    await migrate(infra.dsn, schema, MIGRATIONS)
    await SimulatedGateway.prepare(infra.dsn)
    p = await create_pool(infra.dsn, schema, min_size=2, max_size=20)
    CLIENTS[id(p)] = schema
    async with p.acquire() as conn:
        await handlers.seed_funds(conn, load_catalogue(), None)
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


async def apply(
    pool: asyncpg.Pool,
    handler: Callable[[DbConnection, EventEnvelope], Awaitable[None]],
    envelope: EventEnvelope,
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await handler(conn, envelope)


async def drive(
    pool: asyncpg.Pool, gw: Any, until: Callable[[], Awaitable[bool]], timeout: float = 15
) -> None:
    """Run the payment loop (issue, record notices) until the condition holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await handlers.dispatch_requested(pool, gw, POLICY)
        await handlers.record_notices(pool, gw, POLICY)
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
    await asyncio.gather(*(apply(pool, handlers.on_review_decided, e) for e in envelopes))

    rows = await pool.fetch("SELECT status, count(*) AS c FROM payouts GROUP BY status")
    assert {r["status"]: r["c"] for r in rows} == {"requested": k, "queued": n - k}
    f = await fund(pool)
    assert f["reserved_fen"] == k * amount and f["committed_fen"] == 0
    async with pool.acquire() as conn:
        views = {v["fund_id"]: v for v in await handlers.fund_views(conn)}
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
    events = await handlers.top_up(pool, PROGRAM, 3 * amount, "finance-01", "second tranche")
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
    await apply(pool, handlers.on_review_decided, envelope)
    await apply(pool, handlers.on_review_decided, approval(500_00, claim_id=envelope.claim_id))
    assert await pool.fetchval("SELECT count(*) FROM payouts") == 1
    assert (await fund(pool))["reserved_fen"] == 500_00


async def test_transient_failure_is_retried_with_the_same_key_and_paid_once(
    pool: asyncpg.Pool,
) -> None:
    def planner(i: PaymentInstruction) -> Outcome:
        return "transient" if i.attempt == 1 else "arrive"

    gw = gateway(pool, planner)
    envelope = approval(1_234_56, program_id=None)
    await apply(pool, handlers.on_review_decided, envelope)

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
    await apply(pool, handlers.on_review_decided, envelope)

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
    await apply(pool, handlers.on_review_decided, envelope)

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
    await handlers.dispatch_requested(pool, gw, POLICY)
    assert await status_of(pool, envelope.claim_id) == "returned"

    corrected = BankAccount(
        bank_name="自贡银行", account_name="测试企业有限公司", account_number="6222020200007654321"
    )
    issue_no = await handlers.correct_account(
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
    with pytest.raises(handlers.Conflict):
        await handlers.correct_account(pool, payout_id, corrected, "finance-02", "again")
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
    await apply(pool, handlers.on_review_decided, envelope)
    assert await status_of(pool, envelope.claim_id) == "held"
    assert (await fund(pool))["reserved_fen"] == 300_00
    await handlers.dispatch_requested(pool, gw, POLICY)
    assert await status_of(pool, envelope.claim_id) == "held"  # not paid while held

    completed = EventEnvelope.wrap(
        ClaimDocumentsCompletedV1(completed_at=datetime.now(UTC)),
        claim_id=envelope.claim_id,
        producer="intake",
    )
    await apply(pool, handlers.on_documents_completed, completed)
    assert await status_of(pool, envelope.claim_id) == "requested"

    async def paid() -> bool:
        return await status_of(pool, envelope.claim_id) == "paid"

    await drive(pool, gw, paid)

    # Documents completed before the approval arrives: recorded, so no hold.
    early = uuid.uuid4()
    await apply(
        pool,
        handlers.on_documents_completed,
        EventEnvelope.wrap(
            ClaimDocumentsCompletedV1(completed_at=datetime.now(UTC)), claim_id=early, producer="i"
        ),
    )
    await apply(
        pool, handlers.on_review_decided, approval(100_00, claim_id=early, documents_pending=True)
    )
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
    await apply(pool, handlers.on_review_decided, held)
    await apply(pool, handlers.on_claim_lapsed, lapsed(held.claim_id))
    assert await status_of(pool, held.claim_id) == "released"
    assert (await fund(pool))["reserved_fen"] == 0

    # A lapse recorded before the approval: the approval reserves nothing.
    early = uuid.uuid4()
    await apply(pool, handlers.on_claim_lapsed, lapsed(early))
    await apply(pool, handlers.on_review_decided, approval(100_00, claim_id=early))
    assert await status_of(pool, early) == "released"
    assert (await fund(pool))["reserved_fen"] == 0

    gw = gateway(pool, always("arrive"))
    paid = approval(200_00)
    await apply(pool, handlers.on_review_decided, paid)

    async def is_paid() -> bool:
        return await status_of(pool, paid.claim_id) == "paid"

    await drive(pool, gw, is_paid)
    await apply(pool, handlers.on_claim_lapsed, lapsed(paid.claim_id))
    row = await one(pool, "SELECT * FROM payouts WHERE claim_id = $1", paid.claim_id)
    assert row["status"] == "paid" and "lapsed" in row["late_cancellation"]
    assert (await fund(pool))["paid_fen"] == 200_00


async def test_reconciliation_reports_each_kind_of_mismatch(pool: asyncpg.Pool) -> None:
    gw = gateway(pool, always("arrive"))
    claims = [approval(amount) for amount in (100_00, 200_00, 300_00)]
    for e in claims:
        await apply(pool, handlers.on_review_decided, e)

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


async def test_crash_between_bank_and_commit_resubmits_the_same_key_and_pays_once(
    pool: asyncpg.Pool,
) -> None:
    gw = CrashAfterSubmit(gateway(pool, always("arrive")))
    envelope = approval(250_00)
    await apply(pool, handlers.on_review_decided, envelope)
    with pytest.raises(ConnectionResetError):
        await handlers.dispatch_requested(pool, gw, POLICY)
    # Rolled back: still requested and reserved, no voucher; the bank has the instruction.
    assert await status_of(pool, envelope.claim_id) == "requested"
    f = await fund(pool)
    assert f["reserved_fen"] == 250_00 and f["committed_fen"] == 0
    assert await pool.fetchval("SELECT count(*) FROM vouchers") == 0

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
from services.payout.service_layer import handlers
from shared.db import create_pool

async def main(dsn, schema, seed):
    pool = await create_pool(dsn, schema)
    gw = SimulatedGateway(pool, min_delay_s=0.05, max_delay_s=0.4, transient_failure_rate=0.3,
                          permanent_failure_rate=0.1, rng=random.Random(seed), client=schema)
    policy = handlers.RetryPolicy(base_s=0.02, max_s=0.1, max_attempts=6)
    while True:
        await handlers.dispatch_requested(pool, gw, policy, limit=5)
        await handlers.record_notices(pool, gw, policy, limit=5)
        await asyncio.sleep(0.005)

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


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
        await apply(pool, handlers.on_review_decided, e)
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
        # on a busy machine); a loop with nothing left to do is killed after 3 s.
        before = await pool.fetchval("SELECT count(*) FROM payout_hops")
        started = time.monotonic()
        while time.monotonic() - started < 3:
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
    assert {s["payout_id"] for s in settled_at_bank} == {r["payout_id"] for r in paid}
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


async def test_withdrawal_of_a_returned_payout_releases_the_commitment(
    pool: asyncpg.Pool,
) -> None:
    gw = gateway(pool, always("return"))
    envelope = approval(650_00)
    await apply(pool, handlers.on_review_decided, envelope)

    async def returned() -> bool:
        return await status_of(pool, envelope.claim_id) == "returned"

    await drive(pool, gw, returned)
    assert (await fund(pool))["committed_fen"] == 650_00
    withdrawn = EventEnvelope.wrap(
        ClaimWithdrawnV1(reason="enterprise withdrew", withdrawn_by="window-01"),
        claim_id=envelope.claim_id,
        producer="intake",
    )
    await apply(pool, handlers.on_claim_withdrawn, withdrawn)
    row = await one(pool, "SELECT * FROM payouts WHERE claim_id = $1", envelope.claim_id)
    assert row["status"] == "released" and row["paid_amount_fen"] == 0
    f = await fund(pool)
    assert f["committed_fen"] == f["reserved_fen"] == f["paid_fen"] == 0
