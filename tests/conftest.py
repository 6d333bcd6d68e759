"""Fixtures that start the real parts: PostgreSQL and the tansu broker, and for the
end-to-end tier the three service processes, all through the project's own stack code.

Ports start at CLAIMFLOW_TEST_PORT_BASE (default 25400) so tests never collide with a
running `make demo` on the default ports. Keep a base (and base + 100) below 32768: Linux
hands out 32768–60999 as the local ports of outgoing connections, and a stack's port
taken that way fails to bind — PostgreSQL would not start, a service never answered
`/health` (seen at stops 10 and 11 with bases 36000–39600; the unexplained supervision
flake of stop 10 was most likely this).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from shared.devstack import stack
from tests import tokens

PORT_BASE = int(os.environ.get("CLAIMFLOW_TEST_PORT_BASE", "25400"))
# Apps built in-process by unit tests need a trusted issuer to start; nothing is fetched
# from it unless a request carries a token. The infra fixture points this at its stack.
os.environ.setdefault("CLAIMFLOW_AUTH_ISSUERS", "http://127.0.0.1:9")


@pytest.fixture(scope="session")
def infra() -> Iterator[stack.StackConfig]:
    """PostgreSQL + tansu (+ its S3 server) with the topics created, in a throw-away
    data folder; ports BASE..BASE+13 (tests that start more use BASE+14 up to BASE+49)."""
    data_dir = Path(tempfile.mkdtemp(prefix="claimflow-test-", dir="/tmp"))
    data_dir.chmod(0o755)  # the PostgreSQL server user must reach its data folder
    cfg = stack.StackConfig(
        data_dir=data_dir,
        ports=stack.StackPorts.from_base(PORT_BASE),
        # Memory (StackConfig's default) unless CLAIMFLOW_TEST_BROKER_STORAGE=s3: the
        # fixtures' service processes
        # are not supervised, and on s3 storage their consumers lost their partitions for
        # good after a PostgreSQL crash (docs/resilience.md). The s3 broker has its own
        # tests (tests/integration/test_durable_broker.py).
        broker_storage=os.environ.get("CLAIMFLOW_TEST_BROKER_STORAGE", "memory"),
    )
    broker_pids: list[int] = []
    try:
        stack.start_postgres(cfg)
        # With s3 storage, the S3 server first.
        broker_pids = stack.start_broker_stack(cfg)
        asyncio.run(stack.create_topics(cfg.bootstrap, cfg.partitions))
        tokens.use_stack(cfg)
        # In-process apps (integration tests) verify the stack's tokens too.
        os.environ.update(stack.auth_environment(cfg))
        yield cfg
    finally:
        stack.stop_broker_stack(broker_pids)
        stack.stop_postgres(cfg)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def db(infra: stack.StackConfig) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(infra.dsn)
    try:
        yield conn
    finally:
        await conn.close()


@dataclass
class ServiceProcesses:
    """The three services as separate OS processes, which a test may kill and restart."""

    cfg: stack.StackConfig
    pids: dict[str, int] = field(default_factory=dict)

    def start(self, name: str) -> None:
        self.pids[name] = stack.start_service(self.cfg, name)

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown hooks, no flushing, as in a crash."""
        stack.stop_pid(self.pids.pop(name), sig=signal.SIGKILL)

    def restart(self, name: str) -> None:
        self.start(name)
        stack.wait_healthy(self.cfg, (name,))

    def stop_all(self) -> None:
        for name in list(self.pids):
            stack.stop_pid(self.pids.pop(name))


@pytest.fixture(scope="session")
def service_processes(infra: stack.StackConfig) -> Iterator[ServiceProcesses]:
    processes = ServiceProcesses(infra)
    try:
        for name in stack.SERVICES:
            processes.start(name)
        stack.wait_healthy(infra)
        yield processes
    finally:
        processes.stop_all()


@pytest.fixture(scope="session")
def services(service_processes: ServiceProcesses) -> stack.StackConfig:
    """The three services as separate processes against the test infra."""
    return service_processes.cfg
