"""The supervisor's restart policy, on real (tiny) processes: an exited process comes back,
each exit is counted and described, quick failures back off, stop stops everything."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.devstack import supervisor
from shared.devstack.supervisor import Program, Supervisor


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )


def run_until(sup: Supervisor, condition: object, timeout: float = 10.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        sup.check_once()
        time.sleep(0.02)
    assert condition(), sup.state()


def test_backoff_doubles_from_half_a_second_up_to_the_cap() -> None:
    delays = [supervisor.backoff_s(n) for n in range(0, 10)]
    # The first exit after a good run restarts at once; quick repeats back off.
    assert delays[:6] == [0.0, 0.0, 0.5, 1.0, 2.0, 4.0]
    assert max(delays) == supervisor.BACKOFF_MAX_S


def test_a_killed_process_is_restarted_counted_and_logged(tmp_path: Path) -> None:
    program = Program("svc", start=sleeper)
    sup = Supervisor([program], tmp_path / "supervisor.json")
    sup.start_all()
    try:
        assert program.proc is not None
        first_pid = program.proc.pid
        os.kill(first_pid, signal.SIGKILL)
        run_until(sup, lambda: program.proc is not None and program.proc.pid != first_pid)
        state = json.loads((tmp_path / "supervisor.json").read_text())
        entry = state["programs"]["svc"]
        assert entry["restarts"] == 1
        assert entry["last_exit"].startswith("killed by SIGKILL")
        assert entry["running"] is True and entry["pid"] == program.proc.pid
        assert state["restarts_total"] == 1
    finally:
        sup.stop_all()
    assert program.proc is not None and program.proc.poll() is not None


def test_quick_failures_back_off(tmp_path: Path) -> None:
    def crasher() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    program = Program("crashy", start=crasher)
    sup = Supervisor([program], tmp_path / "supervisor.json")
    sup.start_all()
    try:
        run_until(sup, lambda: program.restarts >= 2)
        run_until(sup, lambda: program.proc is None and program.restart_at is not None)
        # Third quick exit in a row: at once, 0.5 s, then 1 s of back-off.
        assert program.failures >= 3
        assert program.last_exit is not None and program.last_exit.startswith("exit code 3")
        assert program.restart_at is not None
        assert program.restart_at - time.time() > 0.5
    finally:
        sup.stop_all()


def spare() -> subprocess.Popen[bytes]:
    """Like a service's warm spare: waits for a line on stdin, ends on EOF."""
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nif sys.stdin.readline().strip(): time.sleep(60)",
        ],
        stdin=subprocess.PIPE,
        start_new_session=True,
    )


def test_a_warm_spare_takes_over_and_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "SPARE_AFTER_S", 0.2)
    program = Program("svc", start=sleeper, start_spare=spare)
    sup = Supervisor([program], tmp_path / "supervisor.json")
    sup.start_all()
    try:
        run_until(sup, lambda: program.spare is not None)
        assert program.proc is not None and program.spare is not None
        active, waiting = program.proc.pid, program.spare.pid
        os.kill(active, signal.SIGKILL)
        run_until(sup, lambda: program.proc is not None and program.proc.pid == waiting)
        # The next spare waits until the released one has had its start to itself.
        run_until(sup, lambda: program.spare is not None)
        assert program.spare is not None and program.spare.pid not in (active, waiting)
        time.sleep(0.5)
        assert program.proc.poll() is None, "the released spare keeps running"
        state = json.loads((tmp_path / "supervisor.json").read_text())
        assert state["programs"]["svc"]["spare_pid"] == program.spare.pid
    finally:
        sup.stop_all()
    assert program.spare is not None and program.spare.poll() is not None
