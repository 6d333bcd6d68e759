"""intake's migration 0006 (issue 11): claims tracked before it get their review desks
from their timelines, so a department reviewer's reads cover them too."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from shared.db import migrate
from shared.devstack.stack import StackConfig

pytestmark = pytest.mark.integration

MIGRATIONS = Path(__file__).parents[2] / "services" / "intake" / "migrations"


async def test_claims_tracked_before_the_migration_get_their_desks(
    infra: StackConfig, db: asyncpg.Connection, tmp_path: Path
) -> None:
    schema = f"desks_{uuid.uuid4().hex[:8]}"
    for old in sorted(MIGRATIONS.glob("000[1-5]_*.sql")):
        shutil.copy(old, tmp_path / old.name)
    await migrate(infra.dsn, schema, tmp_path)
    routed, returned, unrouted = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    for n, claim_id in enumerate((routed, returned, unrouted)):
        await db.execute(
            f"""INSERT INTO {schema}.claims (claim_id, kind, uscc, enterprise_name, tax_period,
                   requested_amount_fen, eligible_amount_fen, details, payee, registered_by,
                   received_at, status, status_changed_at)
                VALUES ($1, 'vat_refund', $2, 'x', '2026-09', 100, 100, '{{}}', '{{}}', 'w',
                        now(), 'in_review', now())""",
            claim_id,
            f"91510300MA62X8XK{n:02d}",
        )

    async def event(claim_id: uuid.UUID, producer: str, event_type: str, **payload: object) -> None:
        await db.execute(
            f"""INSERT INTO {schema}.claim_timeline (event_id, claim_id, event_type, producer,
                   occurred_at, payload) VALUES ($1, $2, $3, $4, now(), $5::jsonb)""",
            uuid.uuid4(),
            claim_id,
            event_type,
            producer,
            json.dumps(payload),
        )

    arrival = {"from_stage": "cross_check", "to_stage": "department_review"}
    await event(
        routed, "review", "review.stage_changed", **arrival, departments=["tax", "treasury"]
    )
    await event(returned, "review", "review.stage_changed", **arrival, departments=["treasury"])
    await event(returned, "review", "review.task_decided", department="treasury")
    await event(
        returned,
        "review",
        "review.stage_changed",
        to_stage="department_review",
        departments=["tax"],
    )
    await event(
        returned, "review", "review.stage_changed", to_stage="sign_off", departments=["sign_off"]
    )
    await event(unrouted, "intake", "claim.submitted", departments=["industry"])

    shutil.copy(MIGRATIONS / "0006_review_desks.sql", tmp_path)
    assert await migrate(infra.dsn, schema, tmp_path) == [f"{schema}/0006_review_desks"]
    desks = {
        r["claim_id"]: list(r["review_desks"])
        for r in await db.fetch(f"SELECT claim_id, review_desks FROM {schema}.claims")
    }
    assert desks == {routed: ["tax", "treasury"], returned: ["tax", "treasury"], unrouted: []}
    # The list query's filter finds them through the new index's operator.
    on_tax = await db.fetch(
        f"SELECT claim_id FROM {schema}.claims WHERE review_desks && $1::text[]", ["tax"]
    )
    assert {r["claim_id"] for r in on_tax} == {routed, returned}
