"""Issue 15, item 3: a connection going back to the pool costs no reset statements, and
what the reset protected against still cannot leak from one checkout to the next."""

from __future__ import annotations

import asyncpg
import pytest

from shared.db import create_pool
from shared.devstack.stack import StackConfig

pytestmark = pytest.mark.integration


async def last_statement(infra: StackConfig, pid: int) -> str:
    """What the backend ran last, as the server saw it (pg_stat_activity.query)."""
    conn = await asyncpg.connect(infra.dsn)
    try:
        query: str = await conn.fetchval("SELECT query FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await conn.close()
    return query


async def test_release_sends_no_reset_statements(infra: StackConfig) -> None:
    pool = await create_pool(infra.dsn, "public", min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid() /* the last one */")
        # asyncpg's default reset would have run "SELECT pg_advisory_unlock_all(); CLOSE
        # ALL; UNLISTEN *; RESET ALL;" on release.
        assert "the last one" in await last_statement(infra, pid)
    finally:
        await pool.close()


async def test_a_transaction_left_open_is_rolled_back_on_release(infra: StackConfig) -> None:
    """Without the reset statements asyncpg still rolls back what a borrower left open:
    its writes and its SET LOCAL settings do not reach the next borrower."""
    db = await asyncpg.connect(infra.dsn)
    await db.execute("CREATE TABLE IF NOT EXISTS pool_reset_probe (n int)")
    pool = await create_pool(infra.dsn, "public", min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")  # not a managed transaction: nothing ends it
            await conn.execute("INSERT INTO pool_reset_probe VALUES (1)")
            await conn.execute("SET LOCAL statement_timeout = '1234ms'")
        async with pool.acquire() as conn:
            assert not await conn.fetchval("SELECT pg_current_xact_id_if_assigned() IS NOT NULL")
            assert await conn.fetchval("SHOW statement_timeout") == "0"
            assert await conn.fetchval("SELECT count(*) FROM pool_reset_probe") == 0
            # The connection's own parameters are what they were at connect.
            assert await conn.fetchval("SHOW search_path") == "public"
    finally:
        await pool.close()
        await db.execute("DROP TABLE pool_reset_probe")
        await db.close()
