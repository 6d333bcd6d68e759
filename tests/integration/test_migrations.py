from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from shared.db import migrate
from shared.devstack.stack import StackConfig

pytestmark = pytest.mark.integration


async def test_concurrent_starts_apply_each_migration_once(
    infra: StackConfig, db: asyncpg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "0001_things.sql").write_text("CREATE TABLE things (id int PRIMARY KEY);")
    (tmp_path / "0002_more.sql").write_text("ALTER TABLE things ADD COLUMN name text;")
    results = await asyncio.gather(*(migrate(infra.dsn, "mig_test", tmp_path) for _ in range(5)))
    applied = [r for r in results if r]
    assert len(applied) == 1, results
    assert applied[0] == [
        "shared/0001_messaging",
        "shared/0002_delivery_safety",
        "shared/0003_outbox_broker_offsets",
        "shared/0004_audit_chain",
        "shared/0005_event_signatures",
        "shared/0006_audit_log_append_only_grants",
        "shared/0007_consumer_broker_epochs",
        "shared/0008_outbox_replay_unreadable",
        "mig_test/0001_things",
        "mig_test/0002_more",
    ]
    versions = await db.fetch("SELECT version FROM mig_test.schema_migrations ORDER BY version")
    assert [v["version"] for v in versions] == sorted(applied[0])
    assert await migrate(infra.dsn, "mig_test", tmp_path) == []
