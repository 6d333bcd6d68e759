"""Issue 15: the running services use the cheaper machinery the benchmark measured
(docs/performance.md), checked on the real processes rather than on their configuration."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import asyncpg
import httpx

from shared.devstack.stack import SERVICES, StackConfig
from tests.conftest import ServiceProcesses
from tests.e2e.helpers import eventually, submit_claim, tasks_for
from tests.tokens import AUDITOR


def mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_services_run_on_uvloop_and_httptools(service_processes: ServiceProcesses) -> None:
    """uvicorn picks uvloop and httptools only when asked and installed; a process that
    runs them has their extension modules mapped."""
    for name, pid in service_processes.pids.items():
        maps = mapped_files(pid)
        assert "uvloop/loop." in maps, f"{name} does not run on uvloop"
        assert "httptools/parser/parser." in maps, f"{name} does not parse HTTP with httptools"


async def test_consumed_batches_are_not_logged_at_info(services: StackConfig) -> None:
    """A claim's events pass every consumer without a log line per batch at INFO (they
    cost CPU on the claim path); the start-up marker stays at INFO."""
    logs = services.data_dir / "logs"
    sizes = {name: (logs / f"{name}.log").stat().st_size for name in SERVICES}
    async with httpx.AsyncClient(timeout=30, headers=dict(AUDITOR)) as client:
        claim_id = await submit_claim(client, services)
        # claim.submitted reaches review, and review's events reach intake and payout.
        await tasks_for(client, services, claim_id)
        await eventually(
            lambda: claim_has_review_events(services, claim_id), what="intake consumed them"
        )
    for name in SERVICES:
        log = logs / f"{name}.log"
        text = log.read_text(errors="replace")
        new = text[sizes[name] :]
        per_batch = [line for line in new.splitlines() if PER_BATCH.search(line)]
        assert not per_batch, f"{name} logs every batch at INFO: {per_batch[:2]}"
        assert "waiting for messages" in text, f"{name} lost its start-up marker"


PER_BATCH = re.compile(r"INFO.* - (Received|Processed)\s*$")


async def claim_has_review_events(cfg: StackConfig, claim_id: str) -> bool:
    conn = await asyncpg.connect(cfg.dsn)
    try:
        found: bool = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM intake.claim_timeline "
            "WHERE claim_id = $1 AND producer = 'review')",
            uuid.UUID(claim_id),
        )
    finally:
        await conn.close()
    return found
