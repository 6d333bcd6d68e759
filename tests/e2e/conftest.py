from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from shared.devstack import stack


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
