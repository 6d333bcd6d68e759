"""``claimflow db``: migrations as the schema owners, password rotation (docs/database-roles.md)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Annotated

import asyncpg
import typer
from rich.console import Console

from shared import db_roles
from shared.db import migrate
from shared.devstack import stack

db_app = typer.Typer(
    help="The database roles: migrations as each schema's owner, password rotation.",
    no_args_is_help=True,
)
console = Console(stderr=True)

DataDir = Annotated[
    Path, typer.Option(envvar="CLAIMFLOW_STACK_DIR", help="Data folder of the stack")
]
PortBase = Annotated[
    int | None, typer.Option(envvar="CLAIMFLOW_PORT_BASE", help="The stack's port base")
]


def _stack_config(data_dir: Path, port_base: int | None) -> stack.StackConfig:
    cfg = stack.StackConfig(data_dir=data_dir.resolve())
    if port_base is not None:
        cfg.ports = stack.StackPorts.from_base(port_base)
    return cfg


def parse_owner_urls(values: list[str]) -> dict[str, str]:
    """``schema=url`` pairs, each schema one of db_roles.SCHEMAS, at most once."""
    urls: dict[str, str] = {}
    for value in values:
        schema, sep, url = value.partition("=")
        if not sep or not url:
            raise typer.BadParameter(f"{value!r}: expected SCHEMA=URL", param_hint="--owner")
        if schema not in db_roles.SCHEMAS:
            raise typer.BadParameter(
                f"{schema!r}: one of {', '.join(db_roles.SCHEMAS)}", param_hint="--owner"
            )
        if schema in urls:
            raise typer.BadParameter(f"{schema!r} given twice", param_hint="--owner")
        urls[schema] = url
    return urls


@db_app.command("migrate")
def db_migrate(
    owner: Annotated[
        list[str] | None,
        typer.Option(
            help="SCHEMA=URL of that schema's owner role (repeat; docker-compose's "
            "db-migrate job). Without: every schema of the embedded stack in --data-dir",
        ),
    ] = None,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
) -> None:
    """Apply pending migrations, each schema as its owner (services cannot: they run as
    roles that own nothing)."""
    if owner:
        urls = parse_owner_urls(owner)
    else:
        cfg = _stack_config(data_dir, port_base)
        urls = {schema: cfg.owner_dsn(schema) for schema in db_roles.SCHEMAS}

    async def run() -> dict[str, list[str]]:
        return {
            schema: await migrate(url, schema, db_roles.migration_dirs(schema))
            for schema, url in urls.items()
        }

    for schema, applied in asyncio.run(run()).items():
        console.print(f"{schema}: {', '.join(applied) if applied else 'up to date'}")


async def rotate_password(cfg: stack.StackConfig, role: str) -> str:
    """A new random password for one role: set in PostgreSQL (by the administrator), then
    written to the data folder's password file. Connections already open stay open; a
    process started before keeps the old password and must be restarted."""
    passwords = db_roles.read_passwords(cfg.data_dir)
    if passwords is None or role not in passwords:
        known = ", ".join(sorted(passwords or {}))
        raise typer.BadParameter(f"{role!r}: not a role of this stack ({known})")
    new = secrets.token_urlsafe(24)
    conn = await asyncpg.connect(cfg.admin_dsn)
    try:
        # ALTER ROLE takes no parameters; the literal is quoted (a token has no quote).
        await conn.execute(f"ALTER ROLE \"{role}\" PASSWORD '{new}'")
    finally:
        await conn.close()
    db_roles.write_passwords(cfg.data_dir, {**passwords, role: new})
    info = stack.read_info(cfg)
    if info is not None:
        stack._write_info(cfg, info)  # stack.json's URLs carry the new password
    return new


@db_app.command("rotate-password")
def db_rotate_password(
    role: Annotated[str, typer.Argument(help="e.g. claimflow_payout, claimflow_bank_sim_owner")],
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
) -> None:
    """New password for one role of the embedded stack (docs/database-roles.md): then restart
    the service that uses it."""
    cfg = _stack_config(data_dir, port_base)
    asyncio.run(rotate_password(cfg, role))
    console.print(
        f"{role}: new password set and saved in {cfg.data_dir / db_roles.PASSWORDS_FILE}; "
        "restart what connects as it (claimflow stack down; claimflow stack up --keep-data)"
    )
