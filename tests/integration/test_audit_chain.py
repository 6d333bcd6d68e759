"""The audit chain on the real PostgreSQL (issue 12 item 1): hashes, the unit-of-work
hook, concurrent writers on one chain, and the append-only trigger."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from shared.audit.chain import (
    GENESIS,
    acting_as,
    append,
    append_finance,
    audit_hook,
    fund_chain,
    payout_chain,
)
from shared.contracts import BankAccount, ReviewDecidedV1, ReviewTaskDecidedV1
from shared.contracts.topics import REVIEW_EVENTS
from shared.db import create_pool, migrate
from shared.devstack.stack import StackConfig
from shared.unit_of_work import UnitOfWorkFactory

pytestmark = pytest.mark.integration

FIXED = datetime(2026, 11, 27, 8, 0, 0, 123456, tzinfo=UTC)
PAYEE = BankAccount(
    bank_name="自贡银行", account_name="测试企业", account_number="6222020200001234567"
)


@pytest.fixture
async def audit_pool(infra: StackConfig, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    name = f"a_{uuid.uuid4().hex[:10]}"
    await migrate(infra.dsn, name, tmp_path)  # the shared migrations only
    p = await create_pool(infra.dsn, name, min_size=2, max_size=12)
    try:
        yield p
    finally:
        await p.close()


async def chain_rows(pool: asyncpg.Pool, chain_id: str) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM audit_log WHERE chain_id = $1 ORDER BY seq", chain_id)


def recompute(rows: list[asyncpg.Record]) -> None:
    """The auditor's rule, written out independently of shared.audit."""
    prev = GENESIS
    for n, r in enumerate(rows, start=1):
        assert r["seq"] == n and r["prev_hash"] == prev
        assert r["hash"] == hashlib.sha256((prev + r["body"]).encode()).hexdigest()
        body = json.loads(r["body"])
        assert (body["chain"], body["seq"]) == (r["chain_id"], n)
        # Canonical: sorted keys, no spaces (RFC 8785 for this ASCII-keyed JSON).
        assert r["body"] == json.dumps(
            body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        prev = r["hash"]


async def test_entries_chain_by_hash_with_money_as_strings_and_one_time_format(
    audit_pool: asyncpg.Pool,
) -> None:
    chain = str(uuid.uuid4())
    async with audit_pool.acquire() as conn, conn.transaction():
        first = await append(
            conn,
            chain,
            "clerk-01",
            "claim.submitted",
            {"requested_amount_fen": 500_000_000_000},
            occurred_at=FIXED,
        )
        second = await append(conn, chain, "reviewer-07", "review.decided", {"note": "好"})
    rows = await chain_rows(audit_pool, chain)
    assert [r["seq"] for r in rows] == [1, 2]
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    recompute(rows)
    body = json.loads(rows[0]["body"])
    assert body["data"] == {"requested_amount_fen": "500000000000"}
    assert body["at"] == "2026-11-27T08:00:00.123456Z"
    assert body["actor"] == "clerk-01" and rows[0]["actor"] == "clerk-01"
    head = await audit_pool.fetchrow("SELECT seq, hash FROM audit_heads WHERE chain_id = $1", chain)
    assert head is not None and (head["seq"], head["hash"]) == (2, second.hash)


async def test_money_as_a_float_and_appending_outside_a_transaction_are_refused(
    audit_pool: asyncpg.Pool,
) -> None:
    async with audit_pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="transaction"):
            await append(conn, "x", "a", "b", {})
        with pytest.raises(TypeError, match="float"):
            async with conn.transaction():
                await append(conn, "x", "a", "b", {"amount": 1.5})
        async with conn.transaction():
            entry = await append(conn, "x", "a", "b", {"time_to_payment_seconds": 0.1})
        assert '"time_to_payment_seconds":"0.1"' in entry.body
    assert await audit_pool.fetchval("SELECT count(*) FROM audit_log") == 1


async def test_the_unit_of_work_hook_appends_every_emitted_event_to_its_claims_chain(
    audit_pool: asyncpg.Pool,
) -> None:
    uows = UnitOfWorkFactory("review", REVIEW_EVENTS, clock=lambda: FIXED, hooks=(audit_hook,))
    claim = uuid.uuid4()
    async with uows.acquire(audit_pool) as uow:
        uow.emit(
            ReviewTaskDecidedV1(
                task_id=uuid.uuid4(), department="tax", decision="approve", decided_by="rev-7"
            ),
            claim_id=claim,
        )
        uow.emit(
            ReviewDecidedV1(
                decision="approved",
                approved_amount_fen=123_45,
                claim_kind="vat_refund",
                payee=PAYEE,
                claim_received_at=FIXED,
            ),
            claim_id=claim,
        )
    with acting_as("token-subject-42"):
        async with uows.acquire(audit_pool) as uow:
            uow.emit(
                ReviewDecidedV1(
                    decision="rejected",
                    approved_amount_fen=0,
                    claim_kind="vat_refund",
                    payee=PAYEE,
                    claim_received_at=FIXED,
                ),
                claim_id=claim,
            )
    rows = await chain_rows(audit_pool, str(claim))
    assert [(r["action"], r["actor"]) for r in rows] == [
        ("review.task_decided", "rev-7"),
        ("review.decided", "system:review"),
        ("review.decided", "token-subject-42"),
    ]
    recompute(rows)
    outbox = await audit_pool.fetch("SELECT event_id FROM outbox ORDER BY id")
    data = [json.loads(r["body"])["data"] for r in rows]
    assert [d["event_id"] for d in data] == [str(r["event_id"]) for r in outbox]
    assert data[1]["payload"]["approved_amount_fen"] == "12345"
    # A unit of work that fails leaves no entry (same transaction).
    with pytest.raises(RuntimeError):
        async with uows.acquire(audit_pool) as uow:
            uow.emit(
                ReviewTaskDecidedV1(
                    task_id=uuid.uuid4(), department="tax", decision="reject", decided_by="x"
                ),
                claim_id=claim,
            )
            raise RuntimeError("refused")
    assert len(await chain_rows(audit_pool, str(claim))) == 3


async def test_finance_actions_chain_per_fund_and_per_payout(audit_pool: asyncpg.Pool) -> None:
    payout = uuid.uuid4()
    async with audit_pool.acquire() as conn, conn.transaction():
        await append_finance(
            conn, actor="fin-1", action="fund.topped_up", body={"amount_fen": 100}, program_id="p1"
        )
        await append_finance(
            conn,
            actor="fin-2",
            action="payout.account_corrected",
            body={"account": "6222"},
            program_id="p1",
            payout_id=payout,
        )
    fund_rows = await chain_rows(audit_pool, fund_chain("p1"))
    assert [r["action"] for r in fund_rows] == ["fund.topped_up", "payout.account_corrected"]
    recompute(fund_rows)
    payout_rows = await chain_rows(audit_pool, payout_chain(payout))
    assert [r["seq"] for r in payout_rows] == [1]
    recompute(payout_rows)


async def test_concurrent_writers_on_one_chain_serialise_and_never_fork(
    audit_pool: asyncpg.Pool,
) -> None:
    chain = str(uuid.uuid4())
    writers, each = 10, 5

    async def writer(n: int) -> None:
        for i in range(each):
            async with audit_pool.acquire() as conn, conn.transaction():
                await append(conn, chain, f"w{n}", "x", {"i": i})
                await asyncio.sleep(0.001)  # hold the lock a moment: others must wait

    await asyncio.gather(*(writer(n) for n in range(writers)))
    rows = await chain_rows(audit_pool, chain)
    assert len(rows) == writers * each
    recompute(rows)  # one line: seq 1..N, each prev_hash the hash before it


async def test_a_writer_that_bypasses_the_lock_fails_loudly_instead_of_forking(
    audit_pool: asyncpg.Pool,
) -> None:
    chain = str(uuid.uuid4())
    async with audit_pool.acquire() as conn, conn.transaction():
        first = await append(conn, chain, "a", "x", {})
    with pytest.raises(asyncpg.UniqueViolationError):
        await audit_pool.execute(
            """INSERT INTO audit_log (chain_id, seq, occurred_at, actor, action, body,
                   prev_hash, hash) VALUES ($1, 1, now(), 'b', 'x', '{}', $2, $3)""",
            chain,
            GENESIS,
            first.hash,
        )


async def test_update_delete_and_truncate_of_the_log_are_refused(audit_pool: asyncpg.Pool) -> None:
    chain = str(uuid.uuid4())
    async with audit_pool.acquire() as conn, conn.transaction():
        await append(conn, chain, "a", "x", {"amount_fen": 1})
    for statement in (
        "UPDATE audit_log SET body = replace(body, '\"1\"', '\"10\"')",
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "DELETE FROM audit_heads",
        "UPDATE audit_heads SET seq = 0",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="refused"):
            await audit_pool.execute(statement)
    rows = await chain_rows(audit_pool, chain)
    assert len(rows) == 1 and json.loads(rows[0]["body"])["data"] == {"amount_fen": "1"}
