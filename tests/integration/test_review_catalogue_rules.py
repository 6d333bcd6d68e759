"""Issue 10 item 4 in review: a per-program sign-off threshold, a fourth department and
a new program are each a YAML edit that review honours (tasks, sign-off, fund)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from services.review import metrics
from services.review.domain.model import CaseStatus, Decision
from services.review.service_layer import arrival, decisions
from services.review.service_layer.decisions import DecisionResult
from services.review.service_layer.policy import ReviewPolicy
from shared.programs import load_catalogue
from tests.integration.test_review_db import (
    T0,
    at,
    claim,
    first_task,
    pool,  # noqa: F401  (fixture)
)
from tests.unit.test_claim_rules import NEW_PROGRAM, edited

pytestmark = pytest.mark.integration


def policy_with(tmp_path: Any, change: Any) -> ReviewPolicy:
    return ReviewPolicy(catalogue=load_catalogue(edited(tmp_path, change)))


async def open_case(db: asyncpg.Pool, policy: ReviewPolicy, **kwargs: Any) -> uuid.UUID:
    claim_id = uuid.uuid4()
    async with at(T0).acquire(db) as uow:
        status = await arrival.open_review(uow, policy, claim_id, claim(**kwargs))
    assert status is CaseStatus.DEPARTMENT_REVIEW
    return claim_id


async def approve_all(
    db: asyncpg.Pool, policy: ReviewPolicy, claim_id: uuid.UUID, departments: list[str]
) -> DecisionResult:
    result: DecisionResult | None = None
    for department in departments:
        task_id = await first_task(db, claim_id, department)
        async with at(T0).acquire(db) as uow:
            result = await decisions.decide_task(
                uow,
                policy,
                task_id=task_id,
                decision=Decision.APPROVE,
                comment=None,
                user_id=f"{department}-r1",
                department=department,
                role="reviewer",
            )
    assert result is not None
    return result


async def departments_of(db: asyncpg.Pool, claim_id: uuid.UUID) -> set[str]:
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT department FROM review_tasks WHERE claim_id = $1", claim_id)
    return {r["department"] for r in rows}


async def test_a_program_sign_off_threshold_sends_smaller_claims_to_sign_off(
    pool: asyncpg.Pool,  # noqa: F811
    tmp_path: Any,
) -> None:
    def lower(data: dict[str, Any]) -> None:
        data["programs"][0]["sign_off_threshold"] = "100000.00"  # direct-financing-2026

    policy = policy_with(tmp_path, lower)
    program = policy.catalogue.programs[0].id
    # 500,000 yuan: below the global threshold (1,000,000), above the program's own.
    lowered = await open_case(pool, policy, program_id=program, amount_fen=500_000_00)
    result = await approve_all(pool, policy, lowered, ["finance", "industry"])
    assert result["claim_status"] == "sign_off"
    # Another program keeps the global threshold: the same amount is approved at once.
    other = "stable-growth-relief-2026"
    kept = await open_case(pool, policy, program_id=other, amount_fen=500_000_00)
    result = await approve_all(pool, policy, kept, ["finance", "industry", "tax"])
    assert result["claim_status"] == "approved"


async def test_a_fourth_department_gets_its_task_and_its_say(
    pool: asyncpg.Pool,  # noqa: F811
    tmp_path: Any,
) -> None:
    def add(data: dict[str, Any]) -> None:
        data["programs"][0]["departments"].append("ecology")  # direct-financing-2026

    policy = policy_with(tmp_path, add)
    claim_id = await open_case(pool, policy, program_id="direct-financing-2026")
    assert await departments_of(pool, claim_id) == {"finance", "industry", "ecology"}
    result = await approve_all(pool, policy, claim_id, ["finance", "industry"])
    assert result["claim_status"] == "department_review"  # ecology has not decided
    result = await approve_all(pool, policy, claim_id, ["ecology"])
    assert result["claim_status"] == "approved"


async def test_a_new_program_is_reviewed_by_its_departments_under_its_cap_and_fund(
    pool: asyncpg.Pool,  # noqa: F811
    tmp_path: Any,
) -> None:
    def new(data: dict[str, Any]) -> None:
        data["programs"].append(dict(NEW_PROGRAM))

    policy = policy_with(tmp_path, new)
    counter = metrics.AMOUNT_APPROVED.labels(kind="subsidy", fund="green-transition-2027")
    before = counter._value.get()
    claim_id = await open_case(
        pool, policy, program_id="green-transition-2027", amount_fen=300_000_00
    )
    assert await departments_of(pool, claim_id) == {"finance", "ecology"}
    result = await approve_all(pool, policy, claim_id, ["finance", "ecology"])
    assert result["claim_status"] == "approved"
    async with pool.acquire() as conn:
        case = await conn.fetchrow(
            "SELECT fund, approved_amount_fen FROM review_cases WHERE claim_id = $1", claim_id
        )
    assert case is not None
    assert (case["fund"], case["approved_amount_fen"]) == ("green-transition-2027", 250_000_00)
    assert counter._value.get() == before + 250_000
