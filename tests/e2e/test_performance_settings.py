"""Issue 15: the running services use the cheaper machinery the benchmark measured
(docs/performance.md), checked on the real processes rather than on their configuration."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ServiceProcesses


def mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_services_run_on_uvloop_and_httptools(service_processes: ServiceProcesses) -> None:
    """uvicorn picks uvloop and httptools only when asked and installed; a process that
    runs them has their extension modules mapped."""
    for name, pid in service_processes.pids.items():
        maps = mapped_files(pid)
        assert "uvloop/loop." in maps, f"{name} does not run on uvloop"
        assert "httptools/parser/parser." in maps, f"{name} does not parse HTTP with httptools"

