"""Issue 15, item 4: review's lookups by claim and by task read an index, not every
task and deadline ever recorded (migration 0005_history_indexes.sql).

A schema with a history of reviewed claims; EXPLAIN of the statements the service runs
on the claim path must show no sequential scan of review_tasks or review_deadlines.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import services.review
from shared.db import migrate
from shared.devstack.stack import StackConfig

pytestmark = pytest.mark.integration

REVIEW_MIGRATIONS = Path(services.review.__file__).parent / "migrations"
HISTORY = 20_000

# The statements as services/review runs them, with the names of their parameters.
LOOKUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "decision: the caller's other departments": (
        "SELECT department FROM review_tasks WHERE claim_id = $1 AND decided_by = $2 "
        "AND department <> $3",
        ("claim", "user", "department"),
    ),
    "decision: the documents asked for": (
        "SELECT document_titles FROM review_tasks WHERE claim_id = $1",
        ("claim",),
    ),
    "the claim's review page": (
        "SELECT * FROM review_tasks WHERE claim_id = $1 ORDER BY created_at, department",
        ("claim",),
    ),
    "decision: close the task's deadline": (
        "UPDATE review_deadlines SET closed_at = now() WHERE task_id = $1 AND closed_at IS NULL",
        ("task",),
    ),
    "worklist: escalated flag": (
        "SELECT t.task_id, EXISTS (SELECT 1 FROM review_deadlines d WHERE d.task_id = t.task_id "
        "AND d.escalated_at IS NOT NULL) FROM review_tasks t JOIN review_cases c USING (claim_id) "
        "WHERE t.department = $1 AND t.status = 'pending' AND c.status = CASE "
        "WHEN t.stage = 'sign_off' THEN 'sign_off' ELSE 'department_review' END "
        "ORDER BY t.due_at, t.created_at LIMIT 100",
        ("department",),
    ),
}


def scanned_tables(plan: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(plan, dict):
        if plan.get("Node Type") == "Seq Scan":
            found.add(plan["Relation Name"])
        for value in plan.values():
            found |= scanned_tables(value)
    elif isinstance(plan, list):
        for item in plan:
            found |= scanned_tables(item)
    return found


async def populate(conn: asyncpg.Connection, claims: int) -> None:
    """Reviewed claims (two departments each, every deadline closed) and a few open."""
    await conn.execute("ALTER TABLE review_tasks DISABLE TRIGGER USER")
    await conn.execute(
        f"""INSERT INTO review_cases (claim_id, kind, uscc, enterprise_name,
                requested_amount_fen, eligible_amount_fen, payee, claim_received_at,
                registered_by, status, approved_amount_fen, decided_at)
            SELECT md5(i::text)::uuid, 'vat_refund', lpad(i::text, 18, '9'), 'e', 100, 100,
                   '{{}}', now(), 'window', 'approved', 100, now()
            FROM generate_series(1, {claims}) i;
            INSERT INTO review_tasks (task_id, claim_id, department, status, created_at,
                due_at, decided_by, decided_at, decided_role)
            SELECT md5('t' || i || d)::uuid, md5(i::text)::uuid, d, 'approved', now(), now(),
                   d || '-reviewer', now(), 'reviewer'
            FROM generate_series(1, {claims}) i, unnest(ARRAY['tax', 'treasury']) d;
            INSERT INTO review_deadlines (claim_id, task_id, scope, stage, department,
                started_at, warn_at, due_at, closed_at)
            SELECT claim_id, task_id, 'task', 'department_review', department, now(), now(),
                   now(), now() FROM review_tasks;
            -- The last 20 claims are still in department review.
            UPDATE review_cases SET status = 'department_review', approved_amount_fen = NULL,
                decided_at = NULL
            WHERE claim_id IN (SELECT md5(i::text)::uuid FROM generate_series(1, 20) i);
            UPDATE review_tasks SET status = 'pending', decided_by = NULL, decided_at = NULL,
                decided_role = NULL
            WHERE claim_id IN (SELECT md5(i::text)::uuid FROM generate_series(1, 20) i);
            UPDATE review_deadlines SET closed_at = NULL
            WHERE claim_id IN (SELECT md5(i::text)::uuid FROM generate_series(1, 20) i);
            ANALYZE review_cases, review_tasks, review_deadlines;"""
    )
    await conn.execute("ALTER TABLE review_tasks ENABLE TRIGGER USER")


async def test_claim_path_lookups_do_not_scan_the_history(infra: StackConfig) -> None:
    schema = f"review_hist_{uuid.uuid4().hex[:8]}"
    await migrate(infra.dsn, schema, REVIEW_MIGRATIONS)
    conn = await asyncpg.connect(infra.dsn, server_settings={"search_path": schema})
    try:
        await populate(conn, HISTORY)
        claim_id = await conn.fetchval("SELECT md5('7')::uuid")
        task_id = await conn.fetchval(
            "SELECT task_id FROM review_tasks WHERE claim_id = $1 LIMIT 1", claim_id
        )
        values = {"claim": claim_id, "user": "tax-reviewer", "department": "tax", "task": task_id}
        scans = {}
        for name, (sql, params) in LOOKUPS.items():
            plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *(values[p] for p in params))
            scans[name] = scanned_tables(json.loads(plan)) & {"review_tasks", "review_deadlines"}
        assert scans == {name: set() for name in LOOKUPS}, scans
    finally:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()
