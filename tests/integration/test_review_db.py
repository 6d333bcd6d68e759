"""Joint review on the real PostgreSQL: the deadline scheduler neither loses nor repeats
an escalation across restarts, and segregation of duties holds in the database even
when the Python checks are bypassed."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

import services.review
from services.review.domain.model import CaseStatus, Decision
from services.review.service_layer import arrival, decisions, returns, withdrawal
from services.review.service_layer import deadlines as scheduler
from services.review.service_layer.decisions import DecisionResult
from services.review.service_layer.policy import ReviewPolicy
from shared.contracts import BankAccount, ClaimSubmittedV1
from shared.contracts.topics import REVIEW_EVENTS
from shared.db import DbConnection, create_pool, migrate
from shared.devstack.demo_claims import make_uscc
from shared.devstack.stack import StackConfig
from shared.problems import Forbidden, Invalid, Refusal
from shared.unit_of_work import UnitOfWorkFactory

pytestmark = pytest.mark.integration

MIGRATIONS = Path(services.review.__file__).parent / "migrations"
POLICY = ReviewPolicy()
T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)  # Thursday 10:00 in Beijing


def at(moment: datetime) -> UnitOfWorkFactory:
    """Review's units of work with the clock standing at ``moment``."""
    return UnitOfWorkFactory("review", REVIEW_EVENTS, clock=lambda: moment)


PAYEE = BankAccount(
    bank_name="自贡银行", account_name="测试企业", account_number="6222020200001234567"
)


@pytest.fixture
async def pool(infra: StackConfig) -> AsyncIterator[asyncpg.Pool]:
    """A fresh schema with review's migrations: what a review process would see."""
    name = f"review_it_{uuid.uuid4().hex[:8]}"
    await migrate(infra.dsn, name, MIGRATIONS)
    p = await create_pool(infra.dsn, name)
    try:
        yield p
    finally:
        await p.close()


def claim(*, program_id: str | None = None, amount_fen: int = 500_000_00) -> ClaimSubmittedV1:
    return ClaimSubmittedV1(
        claim_kind="subsidy" if program_id else "vat_refund",
        uscc=make_uscc(random.Random()),  # a fresh enterprise: no duplicate to find
        enterprise_name="自贡测试企业有限公司",
        tax_period="2026-09",
        program_id=program_id,
        requested_amount_fen=amount_fen,
        eligible_amount_fen=amount_fen,
        payee=PAYEE,
        registered_by="window-01",
        received_at=T0,
    )


async def open_case(conn: DbConnection, c: ClaimSubmittedV1) -> uuid.UUID:
    claim_id = uuid.uuid4()
    async with at(T0).begin(conn) as uow:
        status = await arrival.open_review(uow, POLICY, claim_id, c)
    assert status is CaseStatus.DEPARTMENT_REVIEW
    return claim_id


async def outbox_types(conn: DbConnection, claim_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch(
        "SELECT event_type FROM outbox WHERE message_key = $1 ORDER BY id", str(claim_id)
    )
    return [r["event_type"] for r in rows]


async def test_a_restart_neither_loses_nor_repeats_warnings_and_escalations(
    infra: StackConfig, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        claim_id = await open_case(conn, claim())
        deadlines = await conn.fetchval(
            "SELECT count(*) FROM review_deadlines WHERE claim_id = $1", claim_id
        )
        assert deadlines == 3  # tax task, treasury task, the stage
        late = T0 + timedelta(days=14)
        # A run that crashes before its commit leaves nothing behind ...
        with pytest.raises(RuntimeError):
            async with at(late).begin(conn) as uow:
                await scheduler.scan(uow)
                raise RuntimeError("killed before commit")
        assert "review.escalated" not in await outbox_types(conn, claim_id)
    # ... the first run after it emits every warning and escalation once ...
    async with pool.acquire() as conn:
        first = await scheduler.run_deadlines(at(late), conn)
        schema = await conn.fetchval("SELECT current_schema()")
    assert (first.warnings, first.escalations) >= (3, 3)
    # ... and a restarted service (a new pool, as after a SIGKILL) finds nothing to do.
    restarted = await create_pool(infra.dsn, schema)
    try:
        async with restarted.acquire() as conn:
            again = await scheduler.run_deadlines(at(late + timedelta(days=1)), conn)
            assert (again.warnings, again.escalations) == (0, 0)
            types = await outbox_types(conn, claim_id)
    finally:
        await restarted.close()
    assert types.count("review.deadline_warning") == 3
    assert types.count("review.escalated") == 3


async def test_warning_before_the_deadline_escalation_only_at_it_and_concurrent_runs(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        claim_id = await open_case(conn, claim())
        row = await conn.fetchrow(
            """SELECT warn_at, due_at FROM review_deadlines
               WHERE claim_id = $1 AND scope = 'task' LIMIT 1""",
            claim_id,
        )
    assert row is not None
    before_warning = row["warn_at"] - timedelta(seconds=1)
    between = row["warn_at"] + timedelta(seconds=1)
    async with pool.acquire() as conn:
        nothing = await scheduler.run_deadlines(at(before_warning), conn)
        types = await outbox_types(conn, claim_id)
    assert "review.deadline_warning" not in types, nothing
    # Two scheduler processes at the same moment: each deadline is warned exactly once.
    async with pool.acquire() as a, pool.acquire() as b:
        await asyncio.gather(
            scheduler.run_deadlines(at(between), a), scheduler.run_deadlines(at(between), b)
        )
        types = await outbox_types(a, claim_id)
    assert types.count("review.deadline_warning") == 2  # the two department tasks
    assert "review.escalated" not in types
    # Deciding a task closes its clock: no escalation for it later.
    task = await first_task(pool, claim_id, "tax")
    async with pool.acquire() as conn:
        await decide(conn, task, "approve", "tax-r1", "tax")
        await scheduler.run_deadlines(at(row["due_at"] + timedelta(days=3)), conn)
        escalated = await conn.fetch(
            """SELECT department FROM review_deadlines
               WHERE claim_id = $1 AND escalated_at IS NOT NULL""",
            claim_id,
        )
    assert sorted(r["department"] or "stage" for r in escalated) == ["stage", "treasury"]


async def first_task(pool: asyncpg.Pool, claim_id: uuid.UUID, department: str) -> uuid.UUID:
    async with pool.acquire() as conn:
        task_id: uuid.UUID = await conn.fetchval(
            """SELECT task_id FROM review_tasks WHERE claim_id = $1 AND department = $2
               AND status = 'pending'""",
            claim_id,
            department,
        )
    return task_id


async def decide(
    conn: DbConnection,
    task_id: uuid.UUID,
    decision: str,
    user: str,
    department: str | None,
    role: str | None = "reviewer",
    documents: tuple[str, ...] = (),
) -> DecisionResult:
    async with at(T0 + timedelta(hours=1)).begin(conn) as uow:
        return await decisions.decide_task(
            uow,
            POLICY,
            task_id=task_id,
            decision=Decision(decision),
            comment=f"{decision} in test",
            user_id=user,
            department=department,
            role=role,
            documents=documents,
        )


async def test_segregation_is_enforced_by_the_database_when_python_is_bypassed(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        claim_id = await open_case(conn, claim(program_id="stable-growth-relief-2026"))
        tasks = {
            r["department"]: r["task_id"]
            for r in await conn.fetch(
                "SELECT department, task_id FROM review_tasks WHERE claim_id = $1", claim_id
            )
        }
        assert set(tasks) == {"finance", "industry", "tax"}
        decide_sql = """UPDATE review_tasks SET status = 'approved', decided_by = $2,
                            decided_at = now(), decided_role = $3 WHERE task_id = $1"""
        # The registrant cannot decide.
        with pytest.raises(asyncpg.CheckViolationError) as err:
            await conn.execute(decide_sql, tasks["tax"], "window-01", "reviewer")
        assert err.value.constraint_name == "review_segregation_registrant"
        # One person, one department per claim.
        await conn.execute(decide_sql, tasks["tax"], "alice", "reviewer")
        with pytest.raises(asyncpg.CheckViolationError) as err:
            await conn.execute(decide_sql, tasks["finance"], "alice", "reviewer")
        assert err.value.constraint_name == "review_segregation_one_department"
        await conn.execute(decide_sql, tasks["finance"], "bob", "reviewer")
        await conn.execute(decide_sql, tasks["industry"], "carol", "reviewer")
        # The approver at sign-off was none of the reviewers, and has the approver role.
        sign_off = uuid.uuid4()
        await conn.execute(
            """INSERT INTO review_tasks (task_id, claim_id, department, status, stage, due_at)
               VALUES ($1, $2, 'sign_off', 'pending', 'sign_off', now())""",
            sign_off,
            claim_id,
        )
        with pytest.raises(asyncpg.CheckViolationError) as err:
            await conn.execute(decide_sql, sign_off, "bob", "approver")
        assert err.value.constraint_name == "review_segregation_approver"
        with pytest.raises(asyncpg.CheckViolationError) as err:
            await conn.execute(decide_sql, sign_off, "dave", "reviewer")
        assert err.value.constraint_name == "review_tasks_sign_off_by_approver"
        with pytest.raises(asyncpg.CheckViolationError) as err:
            await conn.execute(decide_sql, sign_off, "window-01", "approver")
        assert err.value.constraint_name == "review_segregation_registrant"
        await conn.execute(decide_sql, sign_off, "dave", "approver")
        # A second live task for a department is refused too.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                """INSERT INTO review_tasks (task_id, claim_id, department, status, due_at)
                   VALUES ($1, $2, 'tax', 'pending', now())""",
                uuid.uuid4(),
                claim_id,
            )


async def test_service_answers_segregation_with_403_and_the_db_backs_it(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        claim_id = await open_case(conn, claim(amount_fen=2_000_000_00))
    tax = await first_task(pool, claim_id, "tax")
    treasury = await first_task(pool, claim_id, "treasury")
    async with pool.acquire() as conn:
        with pytest.raises(Forbidden) as err:
            await decide(conn, tax, "approve", "window-01", "tax")
        assert err.value.rule == "segregation_registrant"
        await decide(conn, tax, "approve", "tax-r1", "tax")
        with pytest.raises(Forbidden) as err:
            await decide(conn, treasury, "approve", "tax-r1", "treasury")
        assert err.value.rule == "segregation_one_department"
        result = await decide(conn, treasury, "approve", "treasury-r1", "treasury")
        assert result["claim_status"] == "sign_off"  # 2,000,000 yuan > the threshold
        sign_off = await first_task(pool, claim_id, "sign_off")
        with pytest.raises(Forbidden) as err:
            await decide(conn, sign_off, "approve", "leader-1", None, role="reviewer")
        assert err.value.rule == "approver_role"
        with pytest.raises(Forbidden) as err:
            await decide(conn, sign_off, "approve", "tax-r1", None, role="approver")
        assert err.value.rule == "segregation_approver"
        result = await decide(conn, sign_off, "approve", "leader-1", None, role="approver")
        assert result["claim_status"] == "approved"
        types = await outbox_types(conn, claim_id)
        approved = await conn.fetchval(
            "SELECT approved_amount_fen FROM review_cases WHERE claim_id = $1", claim_id
        )
    assert approved == 2_000_000_00
    assert types.count("review.decided") == 1 and "review.signed_off" in types


async def test_return_for_documents_pauses_and_the_documents_resume_it(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        claim_id = await open_case(conn, claim(program_id="direct-financing-2026"))
    finance = await first_task(pool, claim_id, "finance")
    industry = await first_task(pool, claim_id, "industry")
    async with pool.acquire() as conn:
        await decide(conn, industry, "approve", "ind-r1", "industry")
        with pytest.raises(Invalid):
            await decide(conn, finance, "return", "fin-r1", "finance")
        result = await decide(
            conn, finance, "return", "fin-r1", "finance", documents=("audit_report",)
        )
        assert result["claim_status"] == "returned"
        # Paused: no open clocks, nothing on the worklist can be decided.
        open_clocks = await conn.fetchval(
            "SELECT count(*) FROM review_deadlines WHERE claim_id = $1 AND closed_at IS NULL",
            claim_id,
        )
        assert open_clocks == 0
        async with at(T0).begin(conn) as uow:
            resumed = await returns.documents_arrived(
                uow, POLICY, claim_id, supplied="other_doc", still_pending=[]
            )
        assert not resumed
        async with at(T0).begin(conn) as uow:
            resumed = await returns.documents_arrived(
                uow, POLICY, claim_id, supplied="audit_report", still_pending=[]
            )
        assert resumed
    again = await first_task(pool, claim_id, "finance")
    assert again != finance
    async with pool.acquire() as conn:
        # The same reviewer decides the re-opened task of their own department.
        result = await decide(conn, again, "approve", "fin-r1", "finance")
        assert result["claim_status"] == "approved"
        types = await outbox_types(conn, claim_id)
    assert "review.returned_for_documents" in types
    assert types.count("review.stage_changed") == 4  # → review, → returned, → review, → approved


async def test_withdrawn_claim_cancels_open_tasks_and_refuses_decisions(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        claim_id = await open_case(conn, claim())
    tax = await first_task(pool, claim_id, "tax")
    async with pool.acquire() as conn:
        async with at(T0).begin(conn) as uow:
            assert await withdrawal.end_review(
                uow, claim_id, CaseStatus.WITHDRAWN, "enterprise withdrew"
            )
        with pytest.raises(Refusal) as err:
            await decide(conn, tax, "approve", "tax-r1", "tax")
        assert err.value.status_code == 409
        assert "review.decided" not in await outbox_types(conn, claim_id)


async def test_cross_check_failure_rejects_before_anyone_sees_it(pool: asyncpg.Pool) -> None:
    blacklisted = claim().model_copy(update={"uscc": "91510302793PCF429K"})
    claim_id = uuid.uuid4()
    async with pool.acquire() as conn:
        async with at(T0).begin(conn) as uow:
            status = await arrival.open_review(uow, POLICY, claim_id, blacklisted)
        assert status is CaseStatus.REJECTED
        assert (
            await conn.fetchval("SELECT count(*) FROM review_tasks WHERE claim_id = $1", claim_id)
            == 0
        )
        reason = await conn.fetchval(
            "SELECT decision_reason FROM review_cases WHERE claim_id = $1", claim_id
        )
        assert "blacklist" in reason
        assert await outbox_types(conn, claim_id) == [
            "review.cross_checked",
            "review.stage_changed",
            "review.decided",
        ]


async def test_overdue_tasks_are_counted_in_the_open_tasks_gauge(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        claim_id = await open_case(conn, claim())
        due = await conn.fetchval(
            "SELECT max(due_at) FROM review_tasks WHERE claim_id = $1", claim_id
        )
        on_time = await scheduler.refresh_open_tasks(conn, T0, ["tax", "treasury"])
        overdue = await scheduler.refresh_open_tasks(conn, due + timedelta(seconds=1))
    assert on_time[("tax", "on_time")] >= 1 and ("tax", "overdue") not in on_time
    assert overdue[("tax", "overdue")] >= 1 and overdue[("treasury", "overdue")] >= 1
    from services.review.metrics import TASKS_OPEN

    assert TASKS_OPEN.labels(department="tax", state="overdue")._value.get() >= 1


async def test_the_service_scheduler_loop_killed_and_restarted_emits_each_event_once(
    infra: StackConfig, pool: asyncpg.Pool
) -> None:
    """The real background loop of the service, cancelled at an arbitrary moment (as a
    SIGKILL would stop it) and started again on a new pool, twice over."""
    from services.review.config import ReviewSettings
    from shared.service_app import ServiceRuntime

    async with pool.acquire() as conn:
        ids = [await open_case(conn, claim()) for _ in range(5)]
        schema = await conn.fetchval("SELECT current_schema()")
    late = T0 + timedelta(days=30)
    loop = scheduler.deadline_loop(at(late), POLICY.departments, 0.01)

    async def settled() -> bool:
        async with pool.acquire() as conn:
            for claim_id in ids:
                types = await outbox_types(conn, claim_id)
                if types.count("review.escalated") < 3:
                    return False
        return True

    for run in range(3):
        p = await create_pool(infra.dsn, schema)
        runtime = ServiceRuntime(name="review", settings=ReviewSettings(), pool=p)
        task: asyncio.Future[None] = asyncio.ensure_future(loop(runtime))
        await asyncio.sleep(0.05 * (run + 1))
        if run == 2:
            # The last run is let finish its work (under a loaded machine 0.15 s may not
            # be enough), then killed too: duplicates would still show below.
            for _ in range(200):
                if await settled():
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await p.close()
    async with pool.acquire() as conn:
        for claim_id in ids:
            types = await outbox_types(conn, claim_id)
            assert types.count("review.deadline_warning") == 3, types
            assert types.count("review.escalated") == 3, types
