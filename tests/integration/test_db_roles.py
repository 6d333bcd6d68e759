"""Least-privilege database roles on the real PostgreSQL of the stack (shared/db_roles.py).

Each schema has an owner (migrations) and a runtime role (the service): a service's role
reads and writes its own schema and nothing else, cannot change its tables' structure,
and every login needs its scram password (no trust)."""

from __future__ import annotations

import shutil
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared import db_roles
from shared.db import MigrationError, migrate
from shared.devstack import stack
from shared.devstack.db_cmd import rotate_password

SCHEMAS = db_roles.SCHEMAS
# One table of each schema's own (not just the shared messaging tables they all have).
OWN_TABLE = {
    "intake": "claims",
    "review": "review_tasks",
    "payout": "payouts",
    "bank_sim": "instructions",
}


async def connect(cfg: stack.StackConfig, role: str) -> asyncpg.Connection:
    return await asyncpg.connect(cfg.role_dsn(role))


@pytest.fixture
async def runtime_conns(infra: stack.StackConfig) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    conns = {s: await connect(infra, db_roles.runtime_role(s)) for s in SCHEMAS}
    try:
        yield conns
    finally:
        for conn in conns.values():
            await conn.close()


async def refused(conn: asyncpg.Connection, sql: str) -> None:
    """The statement is refused for want of a privilege (and changes nothing: each runs
    in a transaction of its own that the error rolls back)."""
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with conn.transaction():
            await conn.execute(sql)


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_a_service_role_cannot_read_or_write_another_services_schema(
    infra: stack.StackConfig, runtime_conns: dict[str, asyncpg.Connection], schema: str
) -> None:
    conn = runtime_conns[schema]
    for other in SCHEMAS:
        if other == schema:
            continue
        table = f"{other}.{OWN_TABLE[other]}"
        await refused(conn, f"SELECT * FROM {table} LIMIT 1")
        await refused(conn, f"SELECT count(*) FROM {other}.outbox")
        await refused(conn, f"UPDATE {other}.outbox SET attempts = attempts + 1")
        await refused(conn, f"DELETE FROM {other}.inbox")
        await refused(conn, f"DELETE FROM {table}")
        await refused(
            conn,
            f"INSERT INTO {other}.inbox (message_id, source_topic, source_partition, "
            f"source_offset, outcome) VALUES ('{uuid.uuid4()}', 'forged', 0, 0, 'handled')",
        )
        await refused(conn, f"CREATE TABLE {other}.planted (x int)")
    # Nothing outside the schemas either: not public, not a temporary table.
    await refused(conn, "CREATE TABLE public.planted (x int)")
    await refused(conn, "CREATE TEMP TABLE planted (x int)")
    await refused(conn, "CREATE SCHEMA planted")


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_a_service_role_works_its_own_tables_but_cannot_alter_or_drop_them(
    runtime_conns: dict[str, asyncpg.Connection], schema: str
) -> None:
    conn = runtime_conns[schema]
    table = f"{schema}.{OWN_TABLE[schema]}"
    event_id = str(uuid.uuid4())
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.fetchval(f"SELECT count(*) FROM {table}")
        await conn.execute(
            f"INSERT INTO {schema}.inbox (message_id, source_topic, source_partition, "
            "source_offset, outcome) VALUES ($1, 'probe', 0, 0, 'handled')",
            event_id,
        )
        await conn.execute(
            f"UPDATE {schema}.inbox SET source_topic = 'x' WHERE message_id = $1", event_id
        )
        assert await conn.fetchval(
            f"DELETE FROM {schema}.inbox WHERE message_id = $1 RETURNING true", event_id
        )
    finally:
        await tx.rollback()
    for statement in (
        f"ALTER TABLE {table} ADD COLUMN planted int",
        f"ALTER TABLE {table} DISABLE TRIGGER ALL",
        f"DROP TABLE {schema}.outbox",
        f"TRUNCATE {schema}.inbox",
        f"CREATE TABLE {schema}.planted (x int)",
        f"DROP SCHEMA {schema} CASCADE",
    ):
        await refused(conn, statement)
    # Nor pass its tables on: without the grant option PostgreSQL only warns, and the
    # other services' roles still see nothing.
    await conn.execute(f"GRANT SELECT ON {table} TO PUBLIC")
    others = [db_roles.runtime_role(s) for s in SCHEMAS if s != schema]
    for other in others:
        assert not await conn.fetchval("SELECT has_table_privilege($1, $2, 'SELECT')", other, table)


async def test_roles_are_not_superusers_and_owners_own_only_their_schema(
    infra: stack.StackConfig,
) -> None:
    admin = await asyncpg.connect(infra.admin_dsn)
    try:
        rows = await admin.fetch(
            """SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication
               FROM pg_roles WHERE rolname = ANY($1::text[])""",
            db_roles.schema_roles(),
        )
        assert len(rows) == 2 * len(SCHEMAS)
        for r in rows:
            assert not any(
                r[k]
                for k in (
                    "rolsuper",
                    "rolcreatedb",
                    "rolcreaterole",
                    "rolbypassrls",
                    "rolreplication",
                )
            ), dict(r)
        owners = {
            r["nspname"]: r["rolname"]
            for r in await admin.fetch(
                """SELECT n.nspname, r.rolname FROM pg_namespace n
                   JOIN pg_roles r ON r.oid = n.nspowner WHERE n.nspname = ANY($1::text[])""",
                list(SCHEMAS),
            )
        }
        assert owners == {s: db_roles.owner_role(s) for s in SCHEMAS}
        # Every table (and sequence) of a schema belongs to its owner, none to a service.
        strays = await admin.fetch(
            """SELECT n.nspname, c.relname, r.rolname FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               JOIN pg_roles r ON r.oid = c.relowner
               WHERE n.nspname = ANY($1::text[])
                 AND r.rolname <> 'claimflow_' || n.nspname || '_owner'""",
            list(SCHEMAS),
        )
        assert strays == []
    finally:
        await admin.close()
    for schema in SCHEMAS:
        owner = await connect(infra, db_roles.owner_role(schema))
        try:
            for other in SCHEMAS:
                if other != schema:
                    await refused(owner, f"SELECT count(*) FROM {other}.outbox")
                    await refused(owner, f"CREATE TABLE {other}.planted (x int)")
            await refused(owner, "CREATE SCHEMA planted")
        finally:
            await owner.close()
    # CONNECT only where granted: not to the cluster's other database.
    for role in (db_roles.runtime_role("payout"), db_roles.owner_role("review")):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await asyncpg.connect(infra.role_dsn(role, "postgres"))


async def test_a_wrong_or_missing_password_is_refused(infra: stack.StackConfig) -> None:
    """scram-sha-256 for every connection: the right role with a wrong password, or none,
    does not get in (under trust both would)."""
    base = f"127.0.0.1:{infra.ports.postgres}/{infra.database}"
    for role in (infra.db_user, db_roles.runtime_role("payout"), db_roles.owner_role("intake")):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(f"postgresql://{role}:not-the-password@{base}")
        with pytest.raises((asyncpg.InvalidPasswordError, asyncpg.ClientConfigurationError)):
            await asyncpg.connect(f"postgresql://{role}@{base}", password="")
    admin = await asyncpg.connect(infra.admin_dsn)
    try:
        methods = await admin.fetch(
            "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE error IS NULL"
        )
        assert {r["auth_method"] for r in methods} == {"scram-sha-256"}
        stored = await admin.fetch(
            "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY($1::text[])",
            [infra.db_user, *db_roles.schema_roles()],
        )
        assert len(stored) == 1 + 2 * len(SCHEMAS)
        assert all(r["rolpassword"].startswith("SCRAM-SHA-256$") for r in stored)
    finally:
        await admin.close()


def test_the_passwords_live_in_the_data_folder_readable_by_its_owner_only(
    infra: stack.StackConfig,
) -> None:
    path = infra.data_dir / db_roles.PASSWORDS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    passwords = db_roles.read_passwords(infra.data_dir)
    assert passwords is not None
    assert set(passwords) == {infra.db_user, *db_roles.schema_roles()}
    assert len(set(passwords.values())) == len(passwords)  # no two roles share one
    assert not (infra.data_dir / "initdb-password").exists()


async def test_a_service_role_cannot_migrate_its_schema_the_owner_can(
    infra: stack.StackConfig, tmp_path: Path
) -> None:
    """A pending migration stops a service at start with the reason; the owner applies
    it, and the service's role works the new table (default privileges) but owns it not."""
    schema = "review"
    folder = tmp_path / "migrations"
    shutil.copytree(db_roles.migration_dirs(schema), folder)
    table = f"probe_{uuid.uuid4().hex[:8]}"
    (folder / "9999_probe.sql").write_text(f"CREATE TABLE {table} (id int PRIMARY KEY);\n")
    with pytest.raises(MigrationError, match=r"pending migrations review/9999_probe.*owner"):
        await migrate(infra.service_dsn(schema), schema, folder)
    assert await migrate(infra.owner_dsn(schema), schema, folder) == ["review/9999_probe"]
    conn = await connect(infra, db_roles.runtime_role(schema))
    owner = await connect(infra, db_roles.owner_role(schema))
    try:
        # Nothing pending any more: the service's own start-up call passes.
        assert await migrate(infra.service_dsn(schema), schema, folder) == []
        await conn.execute(f"INSERT INTO review.{table} VALUES (1)")
        assert await conn.fetchval(f"SELECT count(*) FROM review.{table}") == 1
        await refused(conn, f"DROP TABLE review.{table}")
    finally:
        await owner.execute(f"DROP TABLE review.{table}")
        await owner.execute(
            "DELETE FROM review.schema_migrations WHERE version = 'review/9999_probe'"
        )
        await conn.close()
        await owner.close()


async def test_rotating_a_password_refuses_the_old_one(infra: stack.StackConfig) -> None:
    role = db_roles.owner_role("bank_sim")
    old_url = infra.role_dsn(role)
    await rotate_password(infra, role)
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(old_url)
    new_url = infra.role_dsn(role)
    assert new_url != old_url
    conn = await asyncpg.connect(new_url)
    try:
        assert await conn.fetchval("SELECT current_user") == role
    finally:
        await conn.close()
    path = infra.data_dir / db_roles.PASSWORDS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_claimflow_db_migrate_runs_as_the_owners_only(infra: stack.StackConfig) -> None:
    """docker-compose's db-migrate job: `claimflow db migrate --owner SCHEMA=URL …`."""
    from typer.testing import CliRunner

    from shared.devstack.cli import app

    owners = [a for s in SCHEMAS for a in ("--owner", f"{s}={infra.owner_dsn(s)}")]
    done = CliRunner().invoke(app, ["db", "migrate", *owners])
    assert done.exit_code == 0, done.output
    assert all(f"{s}: up to date" in done.output for s in SCHEMAS), done.output
    # With the service's own role nothing is pending, so nothing is refused either; its
    # migrations need the owner (test_a_service_role_cannot_migrate_its_schema_the_owner_can).
    as_service = CliRunner().invoke(
        app, ["db", "migrate", "--owner", f"payout={infra.service_dsn('payout')}"]
    )
    assert as_service.exit_code == 0 and "payout: up to date" in as_service.output
    wrong = CliRunner().invoke(
        app, ["db", "migrate", "--owner", f"intake={infra.service_dsn('payout')}"]
    )
    assert isinstance(wrong.exception, asyncpg.InsufficientPrivilegeError)


@pytest.mark.parametrize("schema", ("intake", "review", "payout"))
async def test_a_service_role_may_append_to_its_audit_log_but_not_rewrite_it(
    runtime_conns: dict[str, asyncpg.Connection], schema: str
) -> None:
    """Issue 12: UPDATE/DELETE/TRUNCATE on audit_log are revoked from the service's role
    (not only refused by the trigger)."""
    conn = runtime_conns[schema]
    assert await conn.fetchval(f"SELECT count(*) >= 0 FROM {schema}.audit_log")
    for statement in (
        f"UPDATE {schema}.audit_log SET actor = 'mallory'",
        f"DELETE FROM {schema}.audit_log",
        f"TRUNCATE {schema}.audit_log",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
