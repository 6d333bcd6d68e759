"""``claimflow``: start and stop the embedded stack, and run the demo."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from shared.auth.cli_token import TokenRequestInvalid, token_for
from shared.devstack import stack
from shared.devstack.db_cmd import db_app
from shared.devstack.demo import run_demo, summary_table
from shared.devstack.demo_finance import BANK_TROUBLE
from shared.money import fen_to_yuan

app = typer.Typer(help="claimflow: local stack and demo", no_args_is_help=True)
stack_app = typer.Typer(help="The embedded stack: tansu, PostgreSQL, three services, Prometheus.")
app.add_typer(stack_app, name="stack")
letters_app = typer.Typer(
    help="Dead letters, quarantined outbox rows and held events of the three services.",
    no_args_is_help=True,
)
app.add_typer(letters_app, name="dead-letters")
app.add_typer(db_app, name="db")
console = Console(stderr=True)

DataDir = Annotated[
    Path, typer.Option(envvar="CLAIMFLOW_STACK_DIR", help="Data folder of the stack")
]


def _config(
    data_dir: Path,
    port_base: int | None,
    broker_storage: str | None = None,
    *,
    with_console: bool = True,
) -> stack.StackConfig:
    cfg = stack.StackConfig(data_dir=data_dir.resolve(), console=with_console)
    if port_base is not None:
        cfg.ports = stack.StackPorts.from_base(port_base)
    broker_storage = broker_storage or stack.DEFAULT_BROKER_STORAGE
    if broker_storage not in stack.BROKER_STORAGES:
        raise typer.BadParameter(
            f"{broker_storage!r}: one of {', '.join(stack.BROKER_STORAGES)}",
            param_hint="--broker-storage",
        )
    cfg.broker_storage = broker_storage
    return cfg


BrokerStorage = Annotated[
    str | None,
    typer.Option(
        envvar="CLAIMFLOW_BROKER_STORAGE",
        help="tansu's storage: s3 (a local SeaweedFS; survives a broker restart) or memory "
        f"(faster, forgets on restart). Default {stack.DEFAULT_BROKER_STORAGE}; "
        "see docs/resilience.md",
    ),
]


PortBase = Annotated[
    int | None,
    typer.Option(
        envvar="CLAIMFLOW_PORT_BASE",
        help="Move all ports to BASE..BASE+49: postgres, broker, intake, review, payout, "
        "prometheus, S3, the S3 server's own, the OIDC issuer (+48), the console (+49)",
    ),
]


def _print_urls(info: dict[str, Any]) -> None:
    console.print_json(json.dumps(info["urls"]))


WithConsole = Annotated[
    bool,
    typer.Option(
        "--console/--no-console",
        help="Also run the embedded OIDC issuer and the staff console (docs/console.md)",
    ),
]


def _print_console(info: dict[str, Any]) -> None:
    """The console's address and who can sign in (one click on the issuer's page)."""
    url = info["urls"].get("console")
    if not url:
        return
    console.print(f"Console: [bold]{url}[/bold] (sign in as one of the demo users below)")
    table = Table("user", "name", "roles", "departments")
    for user in info.get("demo_users", []):
        table.add_row(
            user["id"], user["name"], ", ".join(user["roles"]), ", ".join(user["departments"])
        )
    console.print(table)


def _print_prometheus(info: dict[str, Any]) -> None:
    url = info["urls"].get("prometheus")
    if url:
        console.print(f"Prometheus: [bold]{url}[/bold] (alert rules: {url}/alerts)")
    elif "pids" in info:
        console.print(
            "Prometheus: not started (install the `prometheus` binary, e.g. Debian's package)"
        )


ExternalUrl = Annotated[
    str | None,
    typer.Option(help="Run against an already running service/database (docker-compose)"),
]


@stack_app.command("up")
def stack_up(
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
    partitions: int = stack.TANSU_AUTO_PARTITIONS,
    keep_data: Annotated[
        bool,
        typer.Option(
            help="Keep the database and the broker's log of the last run (a memory broker "
            "forgets anyway)"
        ),
    ] = False,
    broker_storage: BrokerStorage = None,
    with_console: WithConsole = True,
) -> None:
    """Start the stack in the background, supervised (a process that exits is restarted);
    print the URLs (also in <data>/stack.json), the console's and its demo users."""
    cfg = _config(data_dir, port_base, broker_storage, with_console=with_console)
    cfg.partitions = partitions
    with console.status("starting PostgreSQL, S3, tansu, topics, intake, review, payout…"):
        info = stack.up(cfg, keep_data=keep_data)
    _print_urls(info)
    _print_console(info)
    console.print(f"stack.json: {cfg.info_file}")


@stack_app.command("down")
def stack_down(data_dir: DataDir = stack.REPO_ROOT / ".stack", port_base: PortBase = None) -> None:
    """Stop everything the stack started."""
    stack.down(_config(data_dir, port_base))
    console.print("stack stopped")


@stack_app.command("status")
def stack_status(
    data_dir: DataDir = stack.REPO_ROOT / ".stack", port_base: PortBase = None
) -> None:
    """Print stack.json with the supervisor's view (pids, restarts) — the console's URL
    and its demo users among it —, or exit 1 when no stack is up."""
    cfg = _config(data_dir, port_base)
    info = stack.read_info(cfg)
    if info is None:
        console.print("no stack is up")
        raise typer.Exit(1)
    supervisor = stack.read_supervisor_state(cfg)
    if supervisor is not None:
        info["supervisor"] = supervisor
    print(json.dumps(info, indent=2))


@app.command()
def demo(
    once: Annotated[
        bool, typer.Option(help="Exit when every claim is final instead of staying up")
    ] = False,
    claims: Annotated[int, typer.Option(min=1, help="How many claims to push")] = 40,
    seed: Annotated[int | None, typer.Option(help="Random seed for reproducible claims")] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for claims to become final")
    ] = 300,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
    broker_storage: BrokerStorage = None,
    intake_url: ExternalUrl = None,
    review_url: ExternalUrl = None,
    payout_url: ExternalUrl = None,
    database_url: ExternalUrl = None,
    issuer_url: Annotated[
        str | None,
        typer.Option(
            help="With the external URLs: the OIDC issuer (Keycloak realm) whose "
            "claimflow-demo client gives the demo users' tokens (password grant)"
        ),
    ] = None,
    issuer_client_id: Annotated[
        str | None, typer.Option(help="Client of the password grant (default claimflow-demo)")
    ] = None,
    issuer_client_secret: Annotated[
        str | None, typer.Option(help="Its secret (default: the realm export's demo secret)")
    ] = None,
    bank_trouble: Annotated[
        bool,
        typer.Option(
            help="When the demo starts the stack: the simulated bank fails, retries and "
            "returns some payments"
        ),
    ] = True,
    finance_clerk: Annotated[
        bool,
        typer.Option(
            help="A simulated finance clerk corrects returned payments and tops up budgets"
        ),
    ] = True,
    with_console: WithConsole = True,
) -> None:
    """Start the stack if needed, push claims through it, print a summary.

    With --once the last line printed is one JSON object with the figures, and the exit
    code is 0 only when every claim reached a final state and none was paid twice.
    With all four of --intake-url, --review-url, --payout-url and --database-url the demo
    runs against those services (docker-compose) and starts no stack.
    """
    external = (intake_url, review_url, payout_url, database_url)
    if any(external) and not all(external):
        console.print(
            "[red]--intake-url, --review-url, --payout-url and --database-url go together"
        )
        raise typer.Exit(2)
    cfg = _config(data_dir, port_base, broker_storage, with_console=with_console)
    info: dict[str, Any] | None
    if all(external):
        info = {
            "urls": {"intake": intake_url, "review": review_url, "payout": payout_url},
            "database_url": database_url,
            "issuer_url": issuer_url,
            "issuer_client_id": issuer_client_id,
            "issuer_client_secret": issuer_client_secret,
        }
        started_here = False
    else:
        info = stack.read_info(cfg)
        started_here = info is None
    if info is None:
        if bank_trouble:
            cfg.service_env.update(BANK_TROUBLE)
        with console.status("starting the stack…"):
            info = stack.up(cfg)
    try:
        console.print("services:")
        _print_urls(info)
        _print_prometheus(info)
        _print_console(info)
        result = asyncio.run(
            run_demo(
                info,
                claims=claims,
                seed=seed,
                timeout_s=timeout,
                console=console,
                finance_clerk=finance_clerk,
            )
        )
        console.print(summary_table(result))
        counts = result.counts()
        ok = counts["in_flight"] == 0 and counts["double_paid"] == 0
        if once:
            print(
                json.dumps(
                    {
                        **counts,
                        "paid_yuan": str(fen_to_yuan(result.paid_fen)),
                        "funds": result.per_fund(),
                        "seconds": round(result.seconds, 1),
                    }
                )
            )
            sys.stdout.flush()
            if not ok:
                raise typer.Exit(1)
            return
        console.print(
            "[bold]stack is up[/bold] — Ctrl-C stops it. OpenAPI at /docs on each service."
        )
        _print_urls(info)
        _print_prometheus(info)
        _print_console(info)
        _wait_for_interrupt()
    finally:
        if started_here:
            with console.status("stopping the stack…"):
                stack.down(cfg)


@app.command()
def token(
    user: Annotated[str, typer.Option(help="Subject: a demo user id (see demo_users.yaml)")],
    role: Annotated[
        list[str] | None, typer.Option(help="Role (repeatable); default: the demo user's")
    ] = None,
    department: Annotated[list[str] | None, typer.Option(help="Department (repeatable)")] = None,
    issuer: Annotated[
        str | None, typer.Option(help="iss; default: the issuer of <data-dir>/auth/issuer.json")
    ] = None,
    audience: Annotated[
        list[str] | None, typer.Option(help="aud (repeatable); default: the three services")
    ] = None,
    ttl: Annotated[int, typer.Option(min=1, help="Seconds the token is valid")] = 3600,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
) -> None:
    """Print a bearer token signed with the embedded issuer's key in the data folder."""
    try:
        print(
            token_for(
                data_dir.resolve(), user, role or (), department or (), issuer, audience or (), ttl
            )
        )
    except TokenRequestInvalid as exc:
        console.print(f"[red]{exc}")
        raise typer.Exit(2) from None


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        envvar="CLAIMFLOW_DATABASE_URL",
        help="PostgreSQL URL; default: the running embedded stack's (stack.json)",
    ),
]
ServiceOption = Annotated[
    str | None, typer.Option(help="Only this service (intake, review, payout)")
]


def _database_url(database_url: str | None, data_dir: Path, port_base: int | None) -> str:
    if database_url:
        return database_url
    info = stack.read_info(_config(data_dir, port_base))
    if info is None:
        console.print("[red]no stack is up: give --database-url")
        raise typer.Exit(2)
    url: str = info["database_url"]
    return url


def _services(service: str | None) -> tuple[str, ...]:
    if service is None:
        return stack.SERVICES
    if service not in stack.SERVICES:
        console.print(f"[red]unknown service {service!r}: one of {', '.join(stack.SERVICES)}")
        raise typer.Exit(2)
    return (service,)


@letters_app.command("list")
def dead_letters_list(
    service: ServiceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
) -> None:
    """Dead letters not yet re-driven and held events, oldest first."""
    from shared.messaging.redrive import list_open

    async def run() -> list[Any]:
        conn = await asyncpg.connect(_database_url(database_url, data_dir, port_base))
        try:
            return await list_open(conn, _services(service))
        finally:
            await conn.close()

    letters = asyncio.run(run())
    if as_json:
        for letter in letters:
            print(json.dumps(letter.as_json(), ensure_ascii=False))
        return
    if not letters:
        console.print("no dead letters, no held events")
        return
    table = Table("service", "kind", "id", "when", "from", "event type", "reason")
    for letter in letters:
        where = letter.topic
        if letter.partition is not None:
            where += f" [{letter.partition}]@{letter.offset}"
        table.add_row(
            letter.service,
            letter.kind,
            letter.id,
            letter.at.strftime("%Y-%m-%d %H:%M:%S"),
            where,
            letter.event_type or "",
            letter.reason[:120],
        )
    Console().print(table)


@letters_app.command("redrive")
def dead_letters_redrive(
    ids: Annotated[
        list[str] | None, typer.Argument(help="Dead letter ids or held event ids")
    ] = None,
    service: ServiceOption = None,
    all_open: Annotated[
        bool, typer.Option("--all", help="Every open dead letter and held event (of --service)")
    ] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
) -> None:
    """Send dead letters again once the cause is fixed (the inbox lets each through once);
    release quarantined outbox rows; publish held events again. Exit 1 if any was refused."""
    from shared.messaging.redrive import RedriveRefused, list_open, redrive

    if not ids and not all_open:
        console.print("[red]name dead letter ids, or --all")
        raise typer.Exit(2)

    async def run() -> int:
        conn = await asyncpg.connect(_database_url(database_url, data_dir, port_base))
        refused = 0
        try:
            letters = await list_open(conn, _services(service))
            # A held event's id is its event id: several services may hold it.
            owners: dict[str, list[str]] = {}
            for letter in letters:
                owners.setdefault(letter.id, []).append(letter.service)
            wanted = sorted(owners) if all_open else list(ids or [])
            for letter_id in wanted:
                if letter_id not in owners:
                    console.print(f"[red]refused: {letter_id} is not an open dead letter")
                    refused += 1
                for owner in owners.get(letter_id, []):
                    try:
                        print(await redrive(conn, owner, letter_id))
                    except RedriveRefused as exc:
                        console.print(f"[red]refused: {exc}")
                        refused += 1
        finally:
            await conn.close()
        return refused

    if asyncio.run(run()):
        raise typer.Exit(1)


@app.command()
def check(
    grace: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds a claim may sit between services, an event may wait to be "
            "published or consumed, before it counts as a violation (0 on a quiet stack)",
        ),
    ] = 60.0,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
) -> None:
    """Check the invariants in the running stack's databases: no claim paid twice, paid ≤
    approved, fund books equal to the payouts and never below zero or over budget, bank
    ledger = payouts, every claim final or waiting with a holder and a deadline, outbox
    drained, every published event consumed. Prints a table and a JSON line; exit 1 on
    any violation."""
    from shared.devstack.check import run_check

    report = asyncio.run(run_check(_database_url(database_url, data_dir, port_base), grace_s=grace))
    console.print(report.table())
    print(json.dumps(report.as_json(), ensure_ascii=False))
    sys.stdout.flush()
    if report.violations:
        raise typer.Exit(1)


@app.command()
def chaos(
    kills: Annotated[int, typer.Option(min=0, help="Cycles: SIGKILL of one or two services")] = 5,
    postgres_stops: Annotated[
        int, typer.Option(min=0, help="Cycles: PostgreSQL immediate stop, then start")
    ] = 2,
    broker_restarts: Annotated[
        int, typer.Option(min=0, help="Cycles: SIGKILL of tansu (the supervisor restarts it)")
    ] = 2,
    broker_pauses: Annotated[int, typer.Option(min=0, help="Cycles: SIGSTOP of tansu")] = 1,
    slow_banks: Annotated[
        int, typer.Option(min=0, help="Cycles: the simulated bank's books locked")
    ] = 1,
    pause_seconds: Annotated[float, typer.Option(min=0, help="How long tansu is paused")] = 30,
    slow_bank_seconds: Annotated[
        float, typer.Option(min=0, help="How long the bank answers nothing")
    ] = 20,
    postgres_down_seconds: Annotated[
        float, typer.Option(min=0, help="How long PostgreSQL stays down")
    ] = 3,
    rate: Annotated[float, typer.Option(min=0.01, help="Claims submitted per second")] = 1.0,
    grace: Annotated[
        float, typer.Option(min=0, help="The checks between faults: see `claimflow check`")
    ] = 180,
    recovery_timeout: Annotated[float, typer.Option(min=1)] = 180,
    drain_timeout: Annotated[float, typer.Option(min=1)] = 600,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop injecting after this long; report what ran")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (faults, claims, moments)")] = None,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
    broker_storage: BrokerStorage = None,
) -> None:
    """Fault campaign under a steady load (both claim kinds, reviewers, a finance clerk):
    one fault at a time, recovery timed, `claimflow check` after each; at the end a drain
    and a check with no grace. Starts the stack (bank trouble on) when none is up. Prints
    a table per fault kind and a JSON line; exit 1 on any violation or a fault not
    recovered from. Each cycle is also appended to <data>/chaos-cycles.jsonl."""
    from shared.devstack.chaos import ChaosOptions, campaign

    cfg = _config(data_dir, port_base, broker_storage)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    options = ChaosOptions(
        cycles={
            "kill": kills,
            "postgres": postgres_stops,
            "broker": broker_restarts,
            "pause": broker_pauses,
            "slow_bank": slow_banks,
        },
        pause_s=pause_seconds,
        slow_bank_s=slow_bank_seconds,
        postgres_down_s=postgres_down_seconds,
        rate=rate,
        grace_s=grace,
        recovery_timeout_s=recovery_timeout,
        drain_timeout_s=drain_timeout,
        max_minutes=max_minutes,
        seed=seed,
        cycles_file=cfg.data_dir / "chaos-cycles.jsonl",
    )
    result = campaign(cfg, options, console, service_env=BANK_TROUBLE)
    console.print(result.table())
    if result.final is not None and result.final.violations:
        console.print(result.final.table())
    print(json.dumps(result.as_json(), ensure_ascii=False))
    sys.stdout.flush()
    if not result.ok:
        raise typer.Exit(1)


outbox_app = typer.Typer(help="The services' outboxes.", no_args_is_help=True)
app.add_typer(outbox_app, name="outbox")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 time (UTC when it names no zone) or a duration back from now: 90s,
    15m, 2h, 1d."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text.strip())
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return now - timedelta(seconds=float(match.group(1)) * unit)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: an ISO 8601 time (2026-11-27T12:00:00+08:00) or a duration "
            "(90s, 15m, 2h, 1d)",
            param_hint="--since",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@outbox_app.command("replay")
def outbox_replay(
    service: Annotated[str, typer.Option(help="intake, review or payout")],
    since: Annotated[
        str, typer.Option(help="Rows published at or after this: ISO 8601 time or 15m, 2h, 1d")
    ],
    by: Annotated[str, typer.Option(help="Who asks (recorded in outbox_replays)")] = "operator",
    database_url: DatabaseUrl = None,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
) -> None:
    """Publish again every event the service published since a time (after a broker lost
    data it did not notice, or to rebuild a consumer): the rows become unpublished and the
    service's relay sends them in order; consumers' inboxes drop what they already had.
    Published rows are kept CLAIMFLOW_OUTBOX_RETENTION_S (7 days). Prints a JSON line."""
    from shared.messaging.outbox import replay_since

    (name,) = _services(service)
    when = parse_since(since)

    async def run() -> int:
        conn = await asyncpg.connect(_database_url(database_url, data_dir, port_base))
        try:
            return await replay_since(conn, name, when, by=by)
        finally:
            await conn.close()

    rows = asyncio.run(run())
    print(json.dumps({"service": name, "since": when.isoformat(), "rows": rows}))


def _wait_for_interrupt() -> None:
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        signal.pause()
    except KeyboardInterrupt:
        console.print("stopping")


calendar_app = typer.Typer(help="The working-day calendar (shared/reference/calendar.yaml).")
app.add_typer(calendar_app, name="calendar")


@calendar_app.command("recompute")
def calendar_recompute(
    by: Annotated[str, typer.Option(help="Who runs it (recorded with every change)")],
    dry_run: Annotated[bool, typer.Option(help="Show the changes, change nothing")] = False,
    database_url: Annotated[str | None, typer.Option(help="Default: the stack's")] = None,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
) -> None:
    """After the calendar file changed: recompute stored deadlines (intake documents
    deadlines, review time limits), each change audited; prints a JSON summary."""
    from shared.devstack.calendar_cmd import recompute

    if database_url is None:
        info = stack.read_info(_config(data_dir, port_base))
        if info is None:
            console.print("no stack is up: pass --database-url")
            raise typer.Exit(1)
        database_url = str(info["database_url"])
    result = asyncio.run(recompute(database_url, by=by, dry_run=dry_run))
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")


audit_app = typer.Typer(
    help="The audit chains of the three services: seal their heads, verify them.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")

SealDir = Annotated[
    Path | None,
    typer.Option(help="Folder of the seals (default: <data folder>/audit-seals)"),
]
KeysFile = Annotated[
    Path | None,
    typer.Option(help="public.json of the services' keys (default: <data folder>/keys)"),
]


@audit_app.command("verify")
def audit_verify(
    claim: Annotated[
        str | None, typer.Option(help="Only this claim's chain (in each service)")
    ] = None,
    chain: Annotated[
        list[str] | None, typer.Option(help="Only these chains (fund:<id>, payout:<id>, ...)")
    ] = None,
    service: ServiceOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="The reports as JSON")] = False,
    state: Annotated[
        bool,
        typer.Option(help="Also compare the state tables with the chains (state_differs)"),
    ] = True,
    timeline_grace: Annotated[
        float,
        typer.Option(
            help="Seconds an event of review or payout may take to reach intake's timeline "
            "before its missing row counts as deleted"
        ),
    ] = 300.0,
    seals: SealDir = None,
    keys: KeysFile = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
) -> None:
    """Verify every chain (or one claim's) of the three services against their hashes,
    heads and signed seals, and the state tables against the chains. Exit 1 on any break,
    naming service, chain, seq and what differs (for state: table, row, column, values)."""
    from shared.audit.keys import KeyRing
    from shared.audit.verify import Report, verify_services

    cfg = _config(data_dir, port_base)
    seal_dir = seals or stack.seal_dir(cfg)
    keys_file = keys or stack.keys_dir(cfg) / "public.json"
    keyring = KeyRing.load(keys_file) if keys_file.exists() else None
    if keyring is None:
        console.print(f"[yellow]no public keys at {keys_file}: seal signatures not checked")
    wanted = ([claim] if claim else []) + list(chain or []) or None

    async def run() -> list[Report]:
        conn = await asyncpg.connect(_database_url(database_url, data_dir, port_base))
        try:
            return await verify_services(
                conn,
                _services(service),
                seal_dir=seal_dir,
                keyring=keyring,
                chains=wanted,
                state=state,
                timeline_grace=timedelta(seconds=timeline_grace),
            )
        finally:
            await conn.close()

    reports = asyncio.run(run())
    if as_json:
        print(json.dumps([r.as_json() for r in reports], ensure_ascii=False, indent=1))
    else:
        for r in reports:
            verdict = "[green]ok" if r.ok else f"[red]{len(r.breaks)} breaks"
            console.print(
                f"{r.service}: {r.chains} chains, {r.entries} entries, {r.seals} seals: {verdict}"
            )
            for b in r.breaks:
                print(b.line())
    if any(not r.ok for r in reports):
        raise typer.Exit(1)


@audit_app.command("seal")
def audit_seal(
    service: ServiceOption = None,
    seals: SealDir = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = stack.REPO_ROOT / ".stack",
    port_base: PortBase = None,
) -> None:
    """Seal the chain heads now (the services also do every CLAIMFLOW_AUDIT_SEAL_INTERVAL_S)."""
    from shared.audit.seal import seal_now

    cfg = _config(data_dir, port_base)
    done = asyncio.run(
        seal_now(
            _database_url(database_url, data_dir, port_base),
            _services(service),
            stack.keys_dir(cfg),
            seals or stack.seal_dir(cfg),
        )
    )
    for name, path in done.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    app()
