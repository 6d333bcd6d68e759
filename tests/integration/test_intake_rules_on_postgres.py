"""Intake's rules on the real PostgreSQL: duplicates and Idempotency-Key under
concurrency, documents and the once-only lapse, withdrawal, and the tracker."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.intake import subscriptions
from services.intake.domain.commands import (
    RegisterClaim,
    RegisterSubsidy,
    RegisterVatRefund,
    SupplyDocument,
    WithdrawClaim,
)
from services.intake.service_layer import documents, lapse, registration, tracker, withdrawal
from services.intake.service_layer.policy import default_policy
from services.intake.service_layer.refusals import Invalid, Refusal
from shared.contracts import BankAccount, EventEnvelope, ReviewReturnedForDocumentsV1
from shared.contracts.topics import INTAKE_EVENTS
from shared.db import DbConnection, create_pool, migrate
from shared.devstack.demo_claims import make_uscc
from shared.devstack.stack import StackConfig
from shared.idempotency import Response, respond_in_unit_of_work
from shared.unit_of_work import UnitOfWork, UnitOfWorkFactory

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).parents[2] / "services" / "intake" / "migrations"
PAYEE = BankAccount(
    bank_name="自贡银行", account_name="测试企业", account_number="6222020200001234567"
)
POLICY = default_policy()
UOWS = UnitOfWorkFactory("intake", INTAKE_EVENTS)
HANDLERS = subscriptions.build(POLICY).handlers(UOWS)
_rng = random.Random()


@pytest.fixture
async def pool(infra: StackConfig) -> AsyncIterator[asyncpg.Pool]:
    name = f"intake_t_{uuid.uuid4().hex[:8]}"
    await migrate(infra.dsn, name, MIGRATIONS)
    p = await create_pool(infra.dsn, name, min_size=2, max_size=6)
    try:
        yield p
    finally:
        await p.close()


def refund(uscc: str | None = None, promised: tuple[str, ...] = (), **kw: Any) -> RegisterVatRefund:
    docs = ("refund_application", "vat_returns", "input_invoice_list", "bank_account_proof")
    return RegisterVatRefund(
        uscc=uscc or make_uscc(_rng),
        enterprise_name="自贡测试储能科技有限公司",
        tax_period="2026-09",
        end_credit_fen=1_000_000_00,
        base_credit_fen=400_000_00,
        input_ratio=Decimal("0.9"),
        tax_credit_rating="A",
        payee=PAYEE,
        registered_by="window-01",
        documents_supplied=tuple(d for d in docs if d not in promised),
        documents_promised=promised,
        **{"requested_amount_fen": 900_000_00, **kw},
    )


def subsidy(uscc: str, program_id: str = "startup-loan-interest-2026") -> RegisterSubsidy:
    return RegisterSubsidy(
        uscc=uscc,
        enterprise_name="自贡测试精密机械有限公司",
        program_id=program_id,
        requested_amount_fen=120_000_00,
        payee=PAYEE,
        registered_by="window-02",
        documents_supplied=("application_form", "loan_contract", "interest_statements")
        if program_id == "startup-loan-interest-2026"
        else ("application_form", "listing_or_bond_proof", "audit_report", "tax_clearance"),
    )


def uows_at(now: datetime | None) -> UnitOfWorkFactory:
    """The unit-of-work factory, its clock stopped at ``now`` (the real clock: None)."""
    return UOWS if now is None else UnitOfWorkFactory("intake", INTAKE_EVENTS, clock=lambda: now)


async def register(
    pool: asyncpg.Pool, cmd: RegisterClaim, key: str | None = None, fingerprint: str = "f"
) -> Response:
    async def work(uow: UnitOfWork) -> tuple[int, dict[str, Any]]:
        done = await registration.register_claim(uow, cmd, POLICY)
        return 201, {"claim_id": str(done.claim_id), "status": done.status.value}

    return await respond_in_unit_of_work(
        UOWS, pool, work, idempotency_key=key, fingerprint=fingerprint
    )


async def register_at(
    conn: DbConnection, cmd: RegisterClaim, now: datetime | None = None
) -> registration.Registered:
    async with uows_at(now).begin(conn) as uow:
        return await registration.register_claim(uow, cmd, POLICY)


async def supply(
    conn: DbConnection, cmd: SupplyDocument, now: datetime | None = None
) -> dict[str, Any]:
    async with uows_at(now).begin(conn) as uow:
        return await documents.supply_document(uow, cmd, POLICY)


async def withdraw(conn: DbConnection, cmd: WithdrawClaim) -> dict[str, Any]:
    async with UOWS.begin(conn) as uow:
        return await withdrawal.withdraw_claim(uow, cmd, POLICY)


async def lapse_overdue(conn: DbConnection, *, as_of: datetime) -> list[uuid.UUID]:
    async with UOWS.begin(conn) as uow:
        return await lapse.lapse_overdue(uow, as_of=as_of)


async def track_event(conn: DbConnection, envelope: EventEnvelope) -> None:
    """As the consumer applies an event (intake's subscriptions); a type no contract
    names goes through the tracker itself (the timeline records it)."""
    handler = HANDLERS.get((envelope.event_type, envelope.version))
    if handler is not None:
        await handler(conn, envelope)
        return
    async with UOWS.begin(conn, cause=envelope) as uow:
        await tracker.track(uow, envelope, POLICY)


async def outbox_types(pool: asyncpg.Pool, claim_id: str | uuid.UUID) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT event_type, payload FROM outbox ORDER BY id")
    return [r["event_type"] for r in rows if json.loads(r["payload"])["claim_id"] == str(claim_id)]


async def test_two_identical_claims_at_once_create_one(pool: asyncpg.Pool) -> None:
    cmd = refund()
    first, second = await asyncio.gather(register(pool, cmd), register(pool, cmd))
    codes = sorted([first.status_code, second.status_code])
    assert codes == [201, 409]
    created = first if first.status_code == 201 else second
    conflict = second if created is first else first
    assert conflict.body["existing_claim_id"] == created.body["claim_id"]
    assert conflict.body["errors"][0]["rule"] == "one_live_claim"
    assert conflict.body["errors"][0]["field"] == "tax_period"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM claims WHERE uscc = $1", cmd.uscc) == 1
    assert await outbox_types(pool, created.body["claim_id"]) == ["claim.submitted"]


async def test_same_idempotency_key_at_once_returns_the_first_response(pool: asyncpg.Pool) -> None:
    cmd = refund()
    key = f"k-{uuid.uuid4()}"
    answers = await asyncio.gather(*(register(pool, cmd, key, "hash-a") for _ in range(4)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.body["claim_id"] for a in answers}) == 1
    assert sum(not a.replayed for a in answers) == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM claims WHERE uscc = $1", cmd.uscc) == 1
    # The same key with another body is refused, and nothing is stored.
    other = await register(pool, refund(), key, "hash-b")
    assert other.status_code == 422
    assert other.body["errors"][0]["rule"] == "idempotency_key_reused"


async def test_a_refusal_is_replayed_for_the_same_key(pool: asyncpg.Pool) -> None:
    cmd = refund()
    assert (await register(pool, cmd)).status_code == 201
    key = f"k-{uuid.uuid4()}"
    first = await register(pool, cmd, key)
    again = await register(pool, cmd, key)
    assert (first.status_code, again.status_code, again.replayed) == (409, 409, True)
    assert again.body == json.loads(json.dumps(first.body))


async def test_new_claim_allowed_after_withdrawal_and_per_program(pool: asyncpg.Pool) -> None:
    uscc = make_uscc(_rng)
    created = await register(pool, refund(uscc))
    claim_id = uuid.UUID(created.body["claim_id"])
    async with pool.acquire() as conn:
        await withdraw(
            conn, WithdrawClaim(claim_id=claim_id, reason="企业申请撤回", withdrawn_by="window-01")
        )
        with pytest.raises(Refusal) as twice:
            await withdraw(
                conn, WithdrawClaim(claim_id=claim_id, reason="again", withdrawn_by="window-01")
            )
        assert twice.value.errors[0].rule == "claim_closed"
    assert await outbox_types(pool, claim_id) == ["claim.submitted", "claim.withdrawn"]
    assert (await register(pool, refund(uscc))).status_code == 201
    # Subsidies: one live claim per program; another program is another claim.
    assert (await register(pool, subsidy(uscc))).status_code == 201
    dup = await register(pool, subsidy(uscc))
    assert dup.status_code == 409 and dup.body["errors"][0]["field"] == "program_id"
    assert (await register(pool, subsidy(uscc, "direct-financing-2026"))).status_code == 201


async def test_the_database_refuses_a_second_live_claim_whatever_the_code(
    pool: asyncpg.Pool,
) -> None:
    created = await register(pool, refund())
    columns = """kind, uscc, enterprise_name, tax_period, requested_amount_fen,
        eligible_amount_fen, amount_note, details, payee, registered_by, received_at, status,
        status_changed_at, program_id"""
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                f"""INSERT INTO claims (claim_id, {columns})
                    SELECT gen_random_uuid(), {columns} FROM claims WHERE claim_id = $1""",
                uuid.UUID(created.body["claim_id"]),
            )


async def test_promised_documents_complete_the_claim(pool: asyncpg.Pool) -> None:
    created = await register(pool, refund(promised=("input_invoice_list", "bank_account_proof")))
    claim_id = uuid.UUID(created.body["claim_id"])
    assert created.body["status"] == "accepted_documents_pending"
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM claims WHERE claim_id = $1", claim_id)
        assert row is not None
        assert list(row["pending_documents"]) == ["input_invoice_list", "bank_account_proof"]
        assert row["documents_due_by"] is not None
        with pytest.raises(Invalid):  # not pending: nothing to record
            await supply(conn, SupplyDocument(claim_id, "photo", "window-01"))
        with pytest.raises(Refusal) as handed_in:  # handed in at the window
            await supply(conn, SupplyDocument(claim_id, "vat_returns", "window-01"))
        assert handed_in.value.errors[0].rule == "already_supplied"
        first = await supply(conn, SupplyDocument(claim_id, "input_invoice_list", "window-01"))
        assert first["pending_documents"] == ["bank_account_proof"]
        with pytest.raises(Refusal) as again:
            await supply(conn, SupplyDocument(claim_id, "input_invoice_list", "window-01"))
        assert again.value.errors[0].rule == "already_supplied"
        last = await supply(conn, SupplyDocument(claim_id, "bank_account_proof", "window-01"))
        assert last["documents_completed"] is True
        row = await conn.fetchrow("SELECT * FROM claims WHERE claim_id = $1", claim_id)
        assert row is not None
        assert (row["status"], list(row["pending_documents"]), row["documents_due_at"]) == (
            "in_review",
            [],
            None,
        )
        # Completed claims never lapse.
        assert await lapse_overdue(conn, as_of=datetime.now(UTC) + timedelta(days=60)) == []
    assert await outbox_types(pool, claim_id) == [
        "claim.submitted",
        "claim.document_supplied",
        "claim.document_supplied",
        "claim.documents_completed",
    ]


async def test_overdue_claim_lapses_exactly_once(pool: asyncpg.Pool) -> None:
    created = await register(pool, refund(promised=("input_invoice_list",)))
    claim_id = uuid.UUID(created.body["claim_id"])
    async with pool.acquire() as conn:
        due_at = await conn.fetchval(
            "SELECT documents_due_at FROM claims WHERE claim_id = $1", claim_id
        )
        # Not yet due: nothing happens.
        assert claim_id not in await lapse_overdue(conn, as_of=due_at)

    async def lapse() -> list[uuid.UUID]:
        async with pool.acquire() as conn:
            return await lapse_overdue(conn, as_of=due_at + timedelta(seconds=1))

    # Three lapse loops (three intake processes) at once: one lapse, one event.
    results = await asyncio.gather(lapse(), lapse(), lapse())
    assert sum(r.count(claim_id) for r in results) == 1
    assert await outbox_types(pool, claim_id) == ["claim.submitted", "claim.lapsed"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM claims WHERE claim_id = $1", claim_id) == (
            "lapsed"
        )
        payload = json.loads(
            await conn.fetchval(
                "SELECT payload FROM outbox WHERE event_type = 'claim.lapsed' "
                "AND payload::jsonb ->> 'claim_id' = $1",
                str(claim_id),
            )
        )
        assert payload["payload"]["missing_documents"] == ["input_invoice_list"]
        with pytest.raises(Refusal) as late:
            await supply(conn, SupplyDocument(claim_id, "input_invoice_list", "window-01"))
        assert late.value.errors[0].rule == "claim_closed"
        with pytest.raises(Refusal):
            await withdraw(conn, WithdrawClaim(claim_id, "too late", "window-01"))


async def test_tracker_records_unknown_events_and_returned_documents(pool: asyncpg.Pool) -> None:
    created = await register(pool, refund())
    claim_id = uuid.UUID(created.body["claim_id"])
    unknown = EventEnvelope(
        event_id=uuid.uuid4(),
        event_type="review.reopened",
        version=1,
        claim_id=claim_id,
        occurred_at=datetime.now(UTC),
        correlation_id=claim_id,
        producer="review",
        payload={"department": "tax", "level": 2},
    )
    returned = EventEnvelope.wrap(
        ReviewReturnedForDocumentsV1(department="tax", documents=["sales_contracts"]),
        claim_id=claim_id,
        producer="review",
    )
    async with pool.acquire() as conn:
        await track_event(conn, unknown)
        await track_event(conn, returned)
        await track_event(conn, returned)  # a redelivery changes nothing
        row = await conn.fetchrow("SELECT * FROM claims WHERE claim_id = $1", claim_id)
        assert row is not None
        assert row["status"] == "returned_for_documents"
        assert list(row["pending_documents"]) == ["sales_contracts"]
        assert row["documents_due_at"] is not None
        assert list(row["holders"]) == ["enterprise", "review:tax"]
        types = [
            r["event_type"]
            for r in await conn.fetch(
                "SELECT event_type FROM claim_timeline WHERE claim_id = $1 ORDER BY occurred_at",
                claim_id,
            )
        ]
        assert types == [
            "claim.submitted",
            "review.reopened",
            "review.returned_for_documents",
        ]
        done = await supply(conn, SupplyDocument(claim_id, "sales_contracts", "window-01"))
        assert done["documents_completed"] is True
        assert await conn.fetchval("SELECT status FROM claims WHERE claim_id = $1", claim_id) == (
            "in_review"
        )


async def test_domain_refusals_store_nothing(pool: asyncpg.Pool) -> None:
    uscc = make_uscc(_rng)
    cases: list[tuple[RegisterClaim, datetime | None, set[tuple[str, str]]]] = [
        (
            RegisterSubsidy(
                uscc=uscc,
                enterprise_name="x",
                program_id="moon-landing-2026",
                requested_amount_fen=1_00,
                payee=PAYEE,
                registered_by="window-01",
            ),
            None,
            {("program_id", "unknown_program")},
        ),
        (
            subsidy(uscc),
            datetime(2027, 1, 4, 2, tzinfo=UTC),
            {("program_id", "application_window")},
        ),
        (
            refund(uscc, requested_amount_fen=1_000_000_01),
            None,
            {("requested_amount", "within_credit_balance")},
        ),
        (
            refund(uscc, promised=("vat_returns",)),
            None,
            {("documents_promised", "critical_document")},
        ),
    ]
    async with pool.acquire() as conn:
        for cmd, now, expected in cases:
            with pytest.raises(Invalid) as info:
                await register_at(conn, cmd, now)
            assert {(e.field, e.rule) for e in info.value.errors} == expected
            assert info.value.status_code == 422
        assert await conn.fetchval("SELECT count(*) FROM claims WHERE uscc = $1", uscc) == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
