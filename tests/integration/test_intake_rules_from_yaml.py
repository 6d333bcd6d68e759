"""Issue 10 items 3 and 4, intake's side: who holds a claim in review comes from
review's events only (not from intake's reading of programs.yaml), and a fourth
department or a new program is a YAML edit that intake honours at the window."""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest

from services.intake.domain.commands import RegisterSubsidy
from services.intake.service_layer import registration
from services.intake.service_layer.policy import IntakePolicy
from services.intake.service_layer.refusals import Invalid
from shared.contracts import EventEnvelope, ReviewStageChangedV1, ReviewTaskDecidedV1
from shared.contracts.topics import INTAKE_EVENTS
from shared.devstack.demo_claims import make_uscc
from shared.programs import load_catalogue
from shared.unit_of_work import UnitOfWorkFactory
from tests.integration import test_intake_rules_on_postgres as rules_tests
from tests.integration.test_intake_rules_on_postgres import (
    PAYEE,
    POLICY,
    refund,
    register_at,
    track_event,
)
from tests.unit.test_claim_rules import edited

pytestmark = pytest.mark.integration

MONDAY_1_MARCH_2027 = datetime(2027, 3, 1, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
JUNE_2026 = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)


pool = rules_tests.pool  # the same fixture: a freshly migrated intake schema


async def holders(pool: asyncpg.Pool, claim_id: uuid.UUID) -> list[str]:
    found = await pool.fetchval("SELECT holders FROM claims WHERE claim_id = $1", claim_id)
    return list(found)


def from_review(
    payload: ReviewStageChangedV1 | ReviewTaskDecidedV1, claim_id: uuid.UUID
) -> EventEnvelope:
    return EventEnvelope.wrap(payload, claim_id=claim_id, producer="review")


async def test_holders_in_review_follow_reviews_events_not_programs_yaml(
    pool: asyncpg.Pool,
) -> None:
    """Review puts a VAT refund before three departments (its programs.yaml has a
    fourth reviewer that intake's copy has not): the window shows the three, then the
    two still to decide."""
    async with pool.acquire() as conn:
        done = await register_at(conn, refund())
    assert await holders(pool, done.claim_id) == ["review:tax", "review:treasury"]
    stage = ReviewStageChangedV1(
        from_stage="cross_check",
        to_stage="department_review",
        departments=["tax", "treasury", "ecology"],
    )
    decided = ReviewTaskDecidedV1(
        task_id=uuid.uuid4(), department="tax", decision="approve", decided_by="tax-01"
    )
    async with pool.acquire() as conn:
        await track_event(conn, from_review(stage, done.claim_id))
        assert await holders(pool, done.claim_id) == [
            "review:tax",
            "review:treasury",
            "review:ecology",
        ]
        await track_event(conn, from_review(decided, done.claim_id))
    assert await holders(pool, done.claim_id) == ["review:treasury", "review:ecology"]


def subsidy_claim(
    program_id: str, supplied: tuple[str, ...], promised: tuple[str, ...] = ()
) -> RegisterSubsidy:
    return RegisterSubsidy(
        uscc=make_uscc(random.Random()),
        enterprise_name="川南兴储新能源股份有限公司",
        program_id=program_id,
        requested_amount_fen=200_000_00,
        payee=PAYEE,
        registered_by="window-01",
        documents_supplied=supplied,
        documents_promised=promised,
    )


async def register_under(
    pool: asyncpg.Pool, policy: IntakePolicy, cmd: RegisterSubsidy, now: datetime
) -> registration.Registered:
    uows = UnitOfWorkFactory("intake", INTAKE_EVENTS, clock=lambda: now)
    async with pool.acquire() as conn, uows.begin(conn) as uow:
        return await registration.register_claim(uow, cmd, policy)


async def test_a_fourth_department_is_quoted_at_the_window(
    pool: asyncpg.Pool, tmp_path: Path
) -> None:
    def add(data: dict) -> None:  # type: ignore[type-arg]
        data["programs"][0]["departments"].append("ecology")

    policy = replace(POLICY, catalogue=load_catalogue(edited(tmp_path, add)))
    supplied = ("application_form", "listing_or_bond_proof", "audit_report", "tax_clearance")
    done = await register_under(
        pool, policy, subsidy_claim("direct-financing-2026", supplied), JUNE_2026
    )
    assert await holders(pool, done.claim_id) == [
        "review:finance",
        "review:industry",
        "review:ecology",
    ]


async def test_a_new_program_is_a_yaml_edit(pool: asyncpg.Pool, tmp_path: Path) -> None:
    def new(data: dict) -> None:  # type: ignore[type-arg]
        # Another program like the loan-interest one, with its own window, fund,
        # departments (one of them new), checklist and deadline.
        program = {
            **data["programs"][1],
            "id": "green-transition-2027",
            "fund": "green-transition-2027",
            "per_enterprise_cap": "250000.00",
            "opens": "2027-01-01",
            "closes": "2027-12-31",
            "departments": ["finance", "ecology"],
            "documents_due_working_days": 3,
        }
        program["documents"] = [
            {"id": "application_form", "name": "申请表", "critical": True},
            {"id": "emission_audit", "name": "排放审计", "critical": False},
        ]
        data["programs"].append(program)

    policy = replace(POLICY, catalogue=load_catalogue(edited(tmp_path, new)))
    cmd = subsidy_claim("green-transition-2027", ("application_form",), ("emission_audit",))
    done = await register_under(pool, policy, cmd, MONDAY_1_MARCH_2027)
    assert (done.kind, done.program_id) == ("subsidy", "green-transition-2027")
    assert done.pending_documents == ["emission_audit"]
    # The program's own documents deadline: 3 working days from Monday 1 March 2027.
    assert done.documents_due_by == date(2027, 3, 4)
    assert await holders(pool, done.claim_id) == ["review:finance", "review:ecology"]
    # Its cap and its checklist are the window's rules at once.
    over = replace(cmd, uscc=make_uscc(random.Random()), requested_amount_fen=250_000_01)
    with pytest.raises(Invalid) as refused:
        await register_under(pool, policy, over, MONDAY_1_MARCH_2027)
    assert {(e.field, e.rule) for e in refused.value.errors} == {
        ("requested_amount", "per_enterprise_cap")
    }
    # Unknown to the catalogue intake runs with today: refused, naming the field.
    with pytest.raises(Invalid) as unknown:
        await register_under(pool, POLICY, cmd, MONDAY_1_MARCH_2027)
    assert {(e.field, e.rule) for e in unknown.value.errors} == {("program_id", "unknown_program")}
