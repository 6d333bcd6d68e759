"""Issue 9, item 5: when the calendar file gets a year's arrangement, the deadlines
already stored are recomputed (``claimflow calendar recompute``), every change
audited; a documents deadline the enterprise was given is never shortened."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

import services.review
from services.review.service_layer import arrival
from services.review.service_layer.policy import ReviewPolicy
from shared.contracts import ClaimSubmittedV1
from shared.contracts.topics import REVIEW_EVENTS
from shared.db import create_pool, migrate
from shared.devstack.calendar_cmd import recompute
from shared.devstack.stack import StackConfig
from shared.unit_of_work import UnitOfWorkFactory
from tests.integration.test_intake_rules_on_postgres import MIGRATIONS as INTAKE_MIGRATIONS
from tests.integration.test_intake_rules_on_postgres import PAYEE, refund, register_at

pytestmark = pytest.mark.integration

REVIEW_MIGRATIONS = Path(services.review.__file__).parent / "migrations"
MONDAY_1_FEB_2027 = datetime(2027, 2, 1, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
# Test data, deliberately unlike any real arrangement: NOT the State Council's notice.
LONG = "holidays: [2027-02-03, 2027-02-04, 2027-02-05, 2027-02-08, 2027-02-09, 2027-02-10, 2027-02-11, 2027-02-12, 2027-02-15, 2027-02-16, 2027-02-17, 2027-02-18, 2027-02-19]"  # noqa: E501
SHORT = "holidays: [2027-02-05, 2027-02-08]"


def write_calendar(path: Path, holidays: str | None) -> None:
    body = "years: {}\n"
    if holidays is not None:
        body = f"years:\n  2027:\n    source: 'TEST DATA, not an official notice'\n    {holidays}\n"
    path.write_text(body, encoding="utf-8")


async def test_recompute_after_the_calendar_file_changed(
    infra: StackConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calendar = tmp_path / "calendar.yaml"
    write_calendar(calendar, None)
    monkeypatch.setenv("CLAIMFLOW_CALENDAR_FILE", str(calendar))
    suffix = uuid.uuid4().hex[:8]
    intake_schema, review_schema = f"intake_cal_{suffix}", f"review_cal_{suffix}"
    await migrate(infra.dsn, intake_schema, INTAKE_MIGRATIONS)
    await migrate(infra.dsn, review_schema, REVIEW_MIGRATIONS)
    intake_pool = await create_pool(infra.dsn, intake_schema)
    review_pool = await create_pool(infra.dsn, review_schema)
    try:
        cmd = refund(promised=("input_invoice_list",))
        async with intake_pool.acquire() as conn:
            done = await register_at(conn, cmd, MONDAY_1_FEB_2027)
        # The fallback: 5 working days from Monday 1 Feb 2027 skip the whole festival.
        assert done.documents_due_by == date(2027, 2, 18)
        review_uows = UnitOfWorkFactory("review", REVIEW_EVENTS, clock=lambda: MONDAY_1_FEB_2027)
        async with review_pool.acquire() as conn, review_uows.begin(conn) as uow:
            await arrival.open_review(
                uow,
                ReviewPolicy(),
                done.claim_id,
                ClaimSubmittedV1(
                    claim_kind="vat_refund",
                    uscc=cmd.uscc,
                    enterprise_name=cmd.enterprise_name,
                    tax_period="2026-09",
                    requested_amount_fen=cmd.requested_amount_fen,
                    eligible_amount_fen=cmd.requested_amount_fen,
                    payee=PAYEE,
                    registered_by="window-01",
                    received_at=MONDAY_1_FEB_2027,
                ),
            )
            review_due_before = {
                r["deadline_id"]: r["due_at"]
                for r in await conn.fetch("SELECT deadline_id, due_at FROM review_deadlines")
            }
        assert review_due_before

        # The (test) arrangement for 2027 is longer than the fallback: applied.
        write_calendar(calendar, LONG)
        result = await recompute(
            infra.dsn, by="ops-01", intake_schema=intake_schema, review_schema=review_schema
        )
        assert result["intake"]["changed"] == 1 and result["intake"]["kept"] == 0
        async with intake_pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT documents_due_by FROM claims WHERE claim_id = $1", done.claim_id
            )
            audit = await conn.fetch("SELECT * FROM deadline_recomputations")
        assert row is not None and row["documents_due_by"] == date(2027, 2, 25)
        assert [(a["subject_id"], a["recomputed_by"], a["applied"]) for a in audit] == [
            (str(done.claim_id), "ops-01", True)
        ]
        assert audit[0]["old_due_at"].date() == date(2027, 2, 18)
        assert audit[0]["new_due_at"].astimezone(done_tz()).date() == date(2027, 2, 25)
        assert result["review"]["changed"] == len(review_due_before)
        async with review_pool.acquire() as conn:
            after = {
                r["deadline_id"]: r["due_at"]
                for r in await conn.fetch("SELECT deadline_id, due_at FROM review_deadlines")
            }
            tasks = await conn.fetch("SELECT due_at FROM review_tasks")
            review_audit = await conn.fetchval("SELECT count(*) FROM deadline_recomputations")
        assert all(after[k] > review_due_before[k] for k in after)
        assert {t["due_at"] for t in tasks} <= set(after.values())
        assert review_audit == len(after)

        # A shorter arrangement later: the enterprise keeps the date it was given.
        write_calendar(calendar, SHORT)
        result = await recompute(
            infra.dsn, by="ops-02", intake_schema=intake_schema, review_schema=review_schema
        )
        assert result["intake"]["changed"] == 0 and result["intake"]["kept"] == 1
        async with intake_pool.acquire() as conn:
            due_by = await conn.fetchval(
                "SELECT documents_due_by FROM claims WHERE claim_id = $1", done.claim_id
            )
            kept = await conn.fetchrow(
                "SELECT * FROM deadline_recomputations WHERE recomputed_by = 'ops-02'"
            )
        assert due_by == date(2027, 2, 25)
        assert kept is not None and not kept["applied"] and "never shortened" in kept["note"]
        # Running it again with no change to the file changes nothing more.
        again = await recompute(
            infra.dsn, by="ops-02", intake_schema=intake_schema, review_schema=review_schema
        )
        assert again["review"]["changed"] == 0
    finally:
        await intake_pool.close()
        await review_pool.close()


def done_tz() -> object:
    from shared.workdays import CHINA

    return CHINA
