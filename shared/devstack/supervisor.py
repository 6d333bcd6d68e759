"""Keeps the embedded stack's processes running, as systemd or Kubernetes would.

``claimflow stack up`` starts one supervisor process per stack (``python -m
shared.devstack.supervisor <data>/stack-config.json``). It starts the S3 server (s3
broker storage), the tansu broker (and creates the topics), then the three services, then
(``StackConfig.console``) the embedded OIDC issuer and the staff console, each only once
the one before is ready; then it watches them. A process that exits, for
whatever reason — a crash, a SIGKILL, a service that exits because its consumer is
stuck — is started again after a back-off that doubles with each quick failure
(``BACKOFF_INITIAL_S`` up to ``BACKOFF_MAX_S``) and is forgotten once the process has run
for ``STABLE_AFTER_S``. Every exit and restart is logged (``<data>/logs/supervisor.log``)
and counted (``<data>/supervisor.json``, shown by ``claimflow stack status``).

SIGTERM stops the supervisor: it stops the services first (SIGTERM, so they drain their
batch and leave the consumer group), then the broker, then its storage.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.devstack import stack
from shared.messaging.membership import remove_dead_member

log = logging.getLogger("claimflow.supervisor")

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 30.0
"""A process that ran this long before exiting is restarted at once, as a first failure."""
POLL_S = 0.1
SPARE_AFTER_S = 5.0


@dataclass
class Program:
    """One supervised process: how to start it, how to tell it is ready, how long it gets
    to stop after SIGTERM."""

    name: str
    start: Callable[[], subprocess.Popen[bytes]]
    ready: Callable[[], None] = lambda: None
    stop_timeout_s: float = 10.0
    start_spare: Callable[[], subprocess.Popen[bytes]] | None = None
    """A warm spare: the same process with its imports done, waiting to be released."""
    after_exit: Callable[[int], str | None] | None = None
    """Clean-up for a process that is gone (its pid), before its replacement starts; says
    what it did (logged) or None."""
    proc: subprocess.Popen[bytes] | None = None
    spare: subprocess.Popen[bytes] | None = None
    spare_not_before: float = 0.0
    """After a spare died by itself (a broken import, say): no new one before this."""
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0
    """Exits in a row, each after less than STABLE_AFTER_S; sets the back-off."""
    restart_at: float | None = None
    last_exit: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def backoff_s(failures: int) -> float:
    """At once for the first exit of a process that had been running fine; then 0.5, 1,
    2, 4 … 30 s for exits in quick succession."""
    if failures <= 1:
        return 0.0
    return float(min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** (failures - 2)))


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class Supervisor:
    def __init__(self, programs: list[Program], state_file: Path) -> None:
        self.programs = programs
        self.state_file = state_file
        self.stopping = threading.Event()
        self.ready = False

    # --- state -----------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "ready": self.ready,
            "stopping": self.stopping.is_set(),
            "restarts_total": sum(p.restarts for p in self.programs),
            "programs": {
                p.name: {
                    "pid": p.proc.pid if p.proc else None,
                    "spare_pid": p.spare.pid if p.spare else None,
                    "running": p.proc is not None and p.proc.poll() is None,
                    "restarts": p.restarts,
                    "last_exit": p.last_exit,
                    "started_at": p.started_at,
                    "restart_in_s": (
                        round(max(0.0, p.restart_at - time.time()), 2) if p.restart_at else None
                    ),
                }
                for p in self.programs
            },
        }

    def write_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2))
        tmp.replace(self.state_file)

    # --- life cycle ------------------------------------------------------------------

    def _launch(self, program: Program) -> None:
        if program.spare is not None and program.spare.poll() is None:
            assert program.spare.stdin is not None
            try:
                program.spare.stdin.write(b"go\n")
                program.spare.stdin.close()
                program.proc, program.spare = program.spare, None
                how = "from its warm spare"
            except OSError:
                program.spare = None
        if program.proc is None:
            program.proc = program.start()
            how = "cold"
        program.started_at = time.time()
        program.restart_at = None
        log.info("%s started %s, pid %d", program.name, how, program.proc.pid)
        program.ready()

    def _refill_spare(self, program: Program, now: float) -> bool:
        """A new spare once everything is up and the running process has had
        SPARE_AFTER_S to itself: on two cores a spare's imports would slow its start."""
        if not self.ready or program.start_spare is None or program.spare is not None:
            return False
        if program.proc is None or now - program.started_at < SPARE_AFTER_S:
            return False
        if now < program.spare_not_before:
            return False
        program.spare = program.start_spare()
        log.info("%s warm spare started, pid %d", program.name, program.spare.pid)
        return True

    def start_all(self) -> None:
        """In order, each once the previous one is ready; all or nothing."""
        try:
            for program in self.programs:
                if self.stopping.is_set():
                    raise stack.StackError("stopped while starting")
                self._launch(program)
                self.write_state()
        except BaseException:
            self.stop_all()
            raise
        self.ready = True
        self.write_state()
        log.info("all started: %s", ", ".join(p.name for p in self.programs))

    def check_once(self) -> None:
        """Notice exits, schedule restarts, perform the ones that are due."""
        now = time.time()
        changed = False
        for program in self.programs:
            changed = self._refill_spare(program, now) or changed
            if program.spare is not None and program.spare.poll() is not None:
                log.warning(
                    "%s warm spare %s; next one in %.0fs",
                    program.name,
                    describe_exit(program.spare.returncode),
                    BACKOFF_MAX_S,
                )
                program.spare = None
                program.spare_not_before = now + BACKOFF_MAX_S
                changed = True
            if program.proc is not None:
                code = program.proc.poll()
                if code is None:
                    continue
                ran = now - program.started_at
                program.failures = 1 if ran >= STABLE_AFTER_S else program.failures + 1
                delay = backoff_s(program.failures)
                program.last_exit = f"{describe_exit(code)} after {ran:.1f}s"
                gone = program.proc.pid
                program.proc = None
                program.restart_at = now + delay
                log.warning(
                    "%s %s; restart #%d in %.1fs",
                    program.name,
                    program.last_exit,
                    program.restarts + 1,
                    delay,
                )
                if program.after_exit is not None:
                    try:
                        done = program.after_exit(gone)
                    except Exception as exc:
                        log.warning("%s: clean-up after pid %d failed: %s", program.name, gone, exc)
                    else:
                        if done:
                            log.info("%s: %s (pid %d)", program.name, done, gone)
                changed = True
            if (
                program.proc is None
                and program.restart_at is not None
                and now >= program.restart_at
            ):
                program.restarts += 1
                try:
                    self._launch(program)
                except Exception as exc:
                    # Not ready in time, or could not start: try again after the back-off.
                    log.error("%s: restart failed: %s", program.name, exc)
                    if program.proc is not None:
                        stack.stop_pid(program.proc.pid, timeout=program.stop_timeout_s)
                        program.proc.poll()
                        program.proc = None
                    program.failures += 1
                    program.restart_at = time.time() + backoff_s(program.failures)
                changed = True
        if changed:
            self.write_state()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.check_once()
            self.stopping.wait(POLL_S)

    def stop_all(self) -> None:
        """Services first, then the broker, then its storage: reverse start order."""
        self.stopping.set()
        for program in self.programs:
            if program.spare is not None and program.spare.poll() is None:
                stack.stop_pid(program.spare.pid, timeout=5)
                program.spare.poll()
        for program in reversed(self.programs):
            if program.proc is not None and program.proc.poll() is None:
                log.info("stopping %s (pid %d)", program.name, program.proc.pid)
                stack.stop_pid(program.proc.pid, timeout=program.stop_timeout_s)
                program.proc.poll()
        self.write_state()


def stack_programs(cfg: stack.StackConfig, *, warm_spares: bool = True) -> list[Program]:
    """The stack's processes in start order; each service with a warm spare, which
    takes the imports (~2-5 s here) out of a restart."""
    programs: list[Program] = []
    if cfg.broker_storage == "s3":
        programs.append(
            Program(
                "s3",
                start=lambda: stack.object_store_popen(cfg),
                ready=lambda: stack.wait_object_store(cfg, proc=programs[0].proc),
                stop_timeout_s=stack.OBJECT_STORE_STOP_S,
            )
        )

    def broker_ready() -> None:
        stack.wait_broker(cfg)
        # Idempotent; after a restart on memory storage it puts the topics back.
        asyncio.run(stack.create_topics(cfg.bootstrap, cfg.partitions))

    programs.append(Program("broker", start=lambda: stack.broker_popen(cfg), ready=broker_ready))
    for name in stack.SERVICES:
        programs.append(
            Program(
                name,
                start=functools.partial(stack.service_popen, cfg, name),
                start_spare=(
                    functools.partial(stack.service_popen, cfg, name, warm_spare=True)
                    if warm_spares
                    else None
                ),
                stop_timeout_s=stack.SERVICE_STOP_S,
                after_exit=functools.partial(_leave_group_for_dead, cfg, name),
            )
        )
    if cfg.console:
        # After the services: the console talks to them; the issuer signs its users in.
        programs.append(
            Program(
                "issuer",
                start=functools.partial(stack.issuer_popen, cfg),
                ready=functools.partial(stack.wait_issuer, cfg),
            )
        )
        programs.append(
            Program(
                "console",
                start=functools.partial(stack.console_popen, cfg),
                ready=functools.partial(stack.wait_console, cfg),
            )
        )
    return programs


def _leave_group_for_dead(cfg: stack.StackConfig, name: str, pid: int) -> str | None:
    """A service that exited without leaving its consumer group (SIGKILL, a crash): send
    the LeaveGroup it could not, so its replacement is not held for the session timeout."""
    member_id = remove_dead_member(cfg.bootstrap, stack.member_dir(cfg), name, pid)
    return None if member_id is None else f"consumer group member {member_id} removed"


def main(argv: list[str]) -> int:
    cfg = stack.StackConfig.load(Path(argv[0]))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s supervisor: %(message)s"
    )
    supervisor = Supervisor(stack_programs(cfg), cfg.data_dir / "supervisor.json")

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        supervisor.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        supervisor.start_all()
    except Exception as exc:
        log.error("start failed: %s", exc)
        return 1
    supervisor.run()
    supervisor.stop_all()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
