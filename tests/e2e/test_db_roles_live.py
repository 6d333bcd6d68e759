"""The running services connect as their own least-privilege roles (shared/db_roles.py),
and stack.json tells an operator the administrator's URL, readable by its owner only."""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
from pathlib import Path

import asyncpg
import pytest

from shared import db_roles
from shared.devstack import stack
from tests.e2e.helpers import eventually

pytestmark = pytest.mark.e2e


async def test_each_service_and_the_bank_connect_as_their_own_role(
    services: stack.StackConfig,
) -> None:
    """Every pool names its schema as application_name (shared/db.py); the session's user
    is that schema's runtime role, never the administrator nor an owner."""
    conn = await asyncpg.connect(services.admin_dsn)
    try:

        async def sessions() -> dict[str, set[str]] | None:
            rows = await conn.fetch(
                """SELECT application_name, usename FROM pg_stat_activity
                   WHERE application_name = ANY($1::text[])""",
                list(db_roles.SCHEMAS),
            )
            seen: dict[str, set[str]] = {}
            for r in rows:
                seen.setdefault(r["application_name"], set()).add(r["usename"])
            # The bank's pool opens with payout's payment loop, a moment after /health.
            return seen if set(seen) == set(db_roles.SCHEMAS) else None

        seen = await eventually(sessions, what="a session of every schema's pool")
    finally:
        await conn.close()
    assert seen == {schema: {db_roles.runtime_role(schema)} for schema in db_roles.SCHEMAS}
    for name in stack.SERVICES:
        env = stack.service_environment(services, name)
        assert env["CLAIMFLOW_DATABASE_URL"].startswith(
            f"postgresql://{db_roles.runtime_role(name)}:"
        )
        assert services.admin_dsn not in env.values()


async def test_stack_json_holds_the_admin_url_with_mode_0600(
    services: stack.StackConfig, tmp_path: Path
) -> None:
    copy = dataclasses.replace(services, data_dir=tmp_path)
    shutil.copy(services.data_dir / db_roles.PASSWORDS_FILE, tmp_path)
    stack._write_info(copy, {"pids": {}})
    assert stat.S_IMODE(copy.info_file.stat().st_mode) == 0o600
    info = json.loads(copy.info_file.read_text())
    assert info["admin_database_url"] == services.admin_dsn == info["database_url"]
    assert set(info["service_database_urls"]) == set(db_roles.SCHEMAS)
    admin = await asyncpg.connect(info["admin_database_url"])
    try:
        assert await admin.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    finally:
        await admin.close()
    for schema, url in info["service_database_urls"].items():
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT current_user") == db_roles.runtime_role(schema)
        finally:
            await conn.close()
