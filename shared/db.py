"""Connection pools and numbered SQL migrations, one schema per service."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# What handlers receive: a plain connection or one borrowed from a pool.
DbConnection = asyncpg.Connection | PoolConnectionProxy

log = logging.getLogger(__name__)

SHARED_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _check_schema(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


async def keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own ROLLBACK of a transaction
    left open and its dropping of the connection's listener callbacks.

    asyncpg's default reset sends four statements on every release (``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``): a round trip and four
    statements per checkout, 4 of every 10 statements a claim cost (docs/performance.md).
    They undo session state, which code on pool connections does not create:

    * settings: only ``SET LOCAL`` (ends with the transaction); the search path and the
      application name are connection parameters, which ``RESET ALL`` would keep anyway;
    * LISTEN: only the outbox relay, on a connection of its own, not the pool's;
    * cursors: asyncpg's cursors live in a transaction, none is declared ``WITH HOLD``;
    * advisory locks: transaction-scoped ones end with the transaction; the one
      session-scoped lock (shared/table_gauges.py) is unlocked before its connection goes
      back, and a connection whose unlock failed is closed instead of reused.

    tests/unit/test_pool_session_state.py keeps it that way: it fails when code under
    shared/ or services/ starts to create session state on a pooled connection.
    """


async def create_pool(
    dsn: str, schema: str, *, min_size: int = 2, max_size: int = 10
) -> asyncpg.Pool:
    """A pool whose connections see only the service's own schema by default."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": _check_schema(schema), "application_name": schema},
        reset=keep_session,
    )
    assert pool is not None
    return pool


def migration_files(directories: Sequence[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """(version, path) in apply order: each directory's files in number order."""
    result: list[tuple[str, Path]] = []
    for label, directory in directories:
        for path in sorted(directory.glob("*.sql")):
            if not _MIGRATION_NAME.match(path.name):
                raise ValueError(f"migration file name not NNNN_name.sql: {path}")
            result.append((f"{label}/{path.stem}", path))
    return result


async def migrate(dsn: str, schema: str, service_migrations: Path) -> list[str]:
    """Apply the shared messaging migrations, then the service's own, exactly once each.

    Several processes may start at the same moment; the advisory lock makes the
    second wait for the first and then find nothing left to do.
    """
    _check_schema(schema)
    files = migration_files([("shared", SHARED_MIGRATIONS), (schema, service_migrations)])
    applied: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "SELECT pg_advisory_lock(hashtext('claimflow.migrate.' || $1::text))", schema
        )
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            await conn.execute(f'SET search_path TO "{schema}"')
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for version, path in files:
                if version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text(encoding="utf-8"))
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", version
                    )
                applied.append(version)
                log.info("applied migration %s to schema %s", version, schema)
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtext('claimflow.migrate.' || $1::text))", schema
            )
    finally:
        await conn.close()
    return applied
