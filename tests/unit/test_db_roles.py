"""The role statements (shared/db_roles.py) and their docker-compose copy agree; what the
runtime roles are granted is DML and nothing more. Behaviour on PostgreSQL:
tests/integration/test_db_roles.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer

from shared import db_roles
from shared.devstack.db_cmd import parse_owner_urls

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_SQL = ROOT / "deploy" / "postgres" / "roles.sql"


def test_the_compose_init_sql_is_the_generated_one() -> None:
    """deploy/postgres/roles.sql is regenerated with
    `python -c 'from shared import db_roles; print(db_roles.roles_sql(), end="")'`."""
    assert DEPLOY_SQL.read_text(encoding="utf-8") == db_roles.roles_sql()


def test_the_compose_init_script_passes_every_password_variable() -> None:
    script = (ROOT / "deploy" / "postgres" / "initdb" / "10-claimflow-roles.sh").read_text()
    wanted = set(re.findall(r":'([a-z_]+)'", db_roles.roles_sql()))
    assert wanted == {db_roles.password_variable(r) for r in db_roles.schema_roles()}
    for variable in wanted:
        assert f"-v {variable}=" in script, variable
    assert "-v database=" in script and "ON_ERROR_STOP=1" in script


def test_runtime_roles_get_dml_on_their_own_schema_only() -> None:
    sql = db_roles.roles_sql("claimflow", {r: "pw" for r in db_roles.schema_roles()})
    for schema in db_roles.SCHEMAS:
        runtime = db_roles.runtime_role(schema)
        grants = [line for line in sql.splitlines() if re.search(rf"TO {runtime}\b", line)]
        joined = " ".join(grants)
        assert f"ON SCHEMA {schema} TO" in joined
        assert "CREATE" not in joined and "ALL" not in joined and "TRUNCATE" not in joined
        assert re.search(
            rf"FOR ROLE {db_roles.owner_role(schema)} IN SCHEMA {schema}\s+GRANT SELECT, "
            rf"INSERT, UPDATE, DELETE ON TABLES TO {runtime};",
            sql,
        )
        assert f"CREATE SCHEMA {schema} AUTHORIZATION {db_roles.owner_role(schema)};" in sql
        for other in db_roles.SCHEMAS:
            if other != schema:
                assert not re.search(rf"SCHEMA {other}\b[^;]*TO {runtime}\b", sql)
    assert re.findall(r"CREATE ROLE \w+ LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE", sql)
    assert len(re.findall(r"CREATE ROLE", sql)) == 2 * len(db_roles.SCHEMAS)


def test_passwords_are_quoted_as_literals() -> None:
    passwords = {r: "pw" for r in db_roles.schema_roles()}
    passwords[db_roles.runtime_role("payout")] = "it's; DROP ROLE claimflow; --"
    sql = db_roles.roles_sql('odd"db', passwords)
    assert "PASSWORD 'it''s; DROP ROLE claimflow; --';" in sql
    assert 'ON DATABASE "odd""db" FROM PUBLIC' in sql


def test_each_schema_has_its_migrations() -> None:
    for schema in db_roles.SCHEMAS:
        folder = db_roles.migration_dirs(schema)
        assert sorted(folder.glob("0001_*.sql")), folder
    with pytest.raises(ValueError, match="unknown schema"):
        db_roles.migration_dirs("public")


def test_owner_urls_name_known_schemas_once() -> None:
    assert parse_owner_urls(["intake=postgresql://a", "bank_sim=postgresql://b"]) == {
        "intake": "postgresql://a",
        "bank_sim": "postgresql://b",
    }
    for bad in (["intake"], ["public=postgresql://x"], ["intake=u", "intake=v"], ["payout="]):
        with pytest.raises(typer.BadParameter):
            parse_owner_urls(bad)
