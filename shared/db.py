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


class MigrationError(RuntimeError):
    """Migrations are pending and this connection's role may not apply them."""


async def migrate(dsn: str, schema: str, service_migrations: Path) -> list[str]:
    """Apply the shared messaging migrations, then the service's own, exactly once each.

    Several processes may start at the same moment; the advisory lock makes the
    second wait for the first and then find nothing left to do.

    Migrations run as the schema's owner (shared/db_roles.py). A service connecting as its
    runtime role calls this too: with nothing pending it changes nothing and needs no
    privilege beyond reading ``schema_migrations``; with something pending it raises
    MigrationError naming the versions, instead of failing half-way on "permission
    denied". A schema that does not exist yet is created (the administrator's case:
    tests, a single-role database); with roles, the administrator created it already.
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
            done = await _applied_versions(conn, schema)
            pending = [(version, path) for version, path in files if version not in (done or ())]
            if not pending:
                return applied
            if not await _may_migrate(conn, schema):
                user = await conn.fetchval("SELECT current_user")
                raise MigrationError(
                    f"schema {schema!r} has pending migrations "
                    f"{', '.join(v for v, _ in pending)}; they run as the schema's owner "
                    f"(claimflow db migrate), not as {user!r}"
                )
            if done is None:
                # IF NOT EXISTS would still check CREATE on the database, which the
                # schema's owner does not have: only create what is missing.
                exists = await conn.fetchval(
                    "SELECT true FROM pg_namespace WHERE nspname = $1", schema
                )
                if not exists:
                    await conn.execute(f'CREATE SCHEMA "{schema}"')
            await conn.execute(f'SET search_path TO "{schema}"')
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            for version, path in pending:
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


async def _applied_versions(conn: asyncpg.Connection, schema: str) -> set[str] | None:
    """The versions recorded in the schema, None when it has no schema_migrations yet."""
    table = await conn.fetchval("SELECT to_regclass($1)", f'"{schema}".schema_migrations')
    if table is None:
        return None
    rows = await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
    return {r["version"] for r in rows}


async def _may_migrate(conn: asyncpg.Connection, schema: str) -> bool:
    """The schema's owner (or a member of it), or a superuser; or, for a schema not
    created yet, a role that may create schemas."""
    owner_ok: bool | None = await conn.fetchval(
        """SELECT pg_has_role(n.nspowner, 'USAGE') FROM pg_namespace n WHERE n.nspname = $1""",
        schema,
    )
    if owner_ok is not None:
        return owner_ok
    may_create: bool = await conn.fetchval(
        "SELECT has_database_privilege(current_database(), 'CREATE')"
    )
    return may_create
