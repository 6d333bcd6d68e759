"""``claimflow chaos``: faults injected into the running stack under a steady load, the
invariants checked after every one (issue 14, item 3).

The load: claims of both kinds submitted at a steady rate (the enterprises bring the
documents they promised), department reviewers and approvers deciding, a finance clerk
correcting returned payments and topping up budgets — the demo's players
(``demo_claims``, ``demo_reviewers``, ``demo_finance``), made to survive the faults.

One fault at a time, at a random moment, kinds shuffled:

* ``kill``: SIGKILL of one or two services (the supervisor restarts them);
* ``postgres``: PostgreSQL stopped in ``immediate`` mode (a crash, to its clients), started
  again after a few seconds;
* ``broker``: tansu SIGKILLed (the supervisor starts it again and creates the topics; on
  s3 storage it keeps its log, on memory storage the outbox relays publish again what
  it lost);
* ``pause``: tansu SIGSTOPped for N seconds, then SIGCONT;
* ``slow_bank``: the simulated bank's books locked for N seconds (every bank call and
  notice waits).

Recovery is timed from the moment the fault is over (the kill, the restart of
PostgreSQL, the SIGCONT, the unlock) until every service answers ``/health`` and a
probe claim submitted then has gone through intake → review → intake. Then
``claimflow check`` runs. At the end, submissions stop, the players go on until every
claim is settled (or waits for a person with a deadline), and a last check runs with no
grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from shared.devstack import people, stack
from shared.devstack.check import CheckReport, run_check
from shared.devstack.demo_claims import make_claim, make_mixed_claim
from shared.devstack.demo_finance import play_finance
from shared.devstack.demo_reviewers import play_reviewers

KINDS = ("kill", "postgres", "broker", "pause", "slow_bank")
WINDOW_CLERK = "window-01"
"""Who registers the campaign's claims (a demo window clerk; tokens: shared/devstack/people)."""


def window() -> dict[str, str]:
    return people.headers(WINDOW_CLERK)


@dataclass
class ChaosOptions:
    cycles: dict[str, int]
    pause_s: float = 30.0
    slow_bank_s: float = 20.0
    postgres_down_s: float = 3.0
    rate: float = 1.0
    """Claims submitted per second."""
    gap_s: tuple[float, float] = (2.0, 6.0)
    """A fault comes at a random moment this long after the previous recovery."""
    recovery_timeout_s: float = 180.0
    grace_s: float = 180.0
    """The checks between faults: a claim may sit this long between services (payout
    resumes a payout claimed by a killed process after its 60 s lease)."""
    drain_timeout_s: float = 600.0
    max_minutes: float | None = None
    """Stop injecting after this long (the rest of the cycles are not run)."""
    seed: int | None = None
    cycles_file: Path | None = None
    """One JSON line per cycle, written as it ends."""


@dataclass
class Cycle:
    n: int
    kind: str
    detail: str
    started_at: float
    recovery_s: float | None = None
    healthy_s: float | None = None
    """Until every service answered /health (before the probe went through)."""
    violations: int = 0
    violation_examples: list[str] = field(default_factory=list)
    faults: int = 1


@dataclass
class LoadStats:
    submitted: int = 0
    refused: int = 0
    errors: int = 0
    documents_supplied: int = 0
    player_errors: int = 0


@dataclass
class ChaosResult:
    cycles: list[Cycle]
    load: LoadStats
    final: CheckReport | None
    drained_s: float | None
    seconds: float
    storage: str

    def by_kind(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for kind in KINDS:
            cycles = [c for c in self.cycles if c.kind == kind]
            if not cycles:
                continue
            times = [c.recovery_s for c in cycles if c.recovery_s is not None]
            healthy = [c.healthy_s for c in cycles if c.healthy_s is not None]
            out[kind] = {
                "cycles": len(cycles),
                "faults": sum(c.faults for c in cycles),
                "recovered": len(times),
                "recovery_median_s": round(statistics.median(times), 2) if times else None,
                "recovery_max_s": round(max(times), 2) if times else None,
                "healthy_median_s": round(statistics.median(healthy), 2) if healthy else None,
                "cycles_with_violations": sum(c.violations > 0 for c in cycles),
                "violations": sum(c.violations for c in cycles),
            }
        return out

    @property
    def ok(self) -> bool:
        return (
            self.final is not None
            and self.final.violations == 0
            and all(c.violations == 0 and c.recovery_s is not None for c in self.cycles)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "broker_storage": self.storage,
            "seconds": round(self.seconds, 1),
            "kinds": self.by_kind(),
            "load": asdict(self.load),
            "drained_s": None if self.drained_s is None else round(self.drained_s, 1),
            "final_check": self.final.as_json() if self.final else None,
        }

    def table(self) -> Table:
        table = Table(title=f"claimflow chaos — broker storage {self.storage}")
        for column in (
            "fault",
            "cycles",
            "faults",
            "healthy median",
            "recovery median",
            "recovery max",
        ):
            table.add_column(column, justify="right" if column != "fault" else "left")
        table.add_column("not recovered", justify="right")
        table.add_column("violations", justify="right")
        for kind, figures in self.by_kind().items():
            median, worst = figures["recovery_median_s"], figures["recovery_max_s"]
            healthy = figures["healthy_median_s"]
            table.add_row(
                kind,
                str(figures["cycles"]),
                str(figures["faults"]),
                "–" if healthy is None else f"{healthy:.1f} s",
                "–" if median is None else f"{median:.1f} s",
                "–" if worst is None else f"{worst:.1f} s",
                str(figures["cycles"] - figures["recovered"]),
                str(figures["violations"]),
            )
        final = self.final
        table.add_row(
            "final check",
            "",
            "",
            "",
            "",
            "" if self.drained_s is None else f"drained {self.drained_s:.0f} s",
            "",
            "not run" if final is None else str(final.violations),
        )
        return table


class Chaos:
    def __init__(
        self, cfg: stack.StackConfig, info: dict[str, Any], options: ChaosOptions, console: Console
    ) -> None:
        self.cfg = cfg
        # The load's people (window, reviewers, finance) with tokens of this stack's issuer.
        people.use(people.People(cfg.data_dir, cfg.issuer_url))
        self.urls: dict[str, str] = info["urls"]
        self.dsn: str = info["database_url"]
        self.options = options
        self.console = console
        self.rng = random.Random(options.seed)
        self.stats = LoadStats()
        today = date.today()
        self.period = f"{today.year - (today.month == 1):04d}-{(today.month - 2) % 12 + 1:02d}"
        self.promised: dict[str, list[str]] = {}

    # --- load ------------------------------------------------------------------------

    async def _submit(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        while not stop.is_set():
            body = make_mixed_claim(self.rng, self.period)
            try:
                r = await client.post(f"{self.urls['intake']}/claims", json=body, headers=window())
                if r.status_code == 201:
                    self.stats.submitted += 1
                    if body["documents_promised"]:
                        self.promised[r.json()["claim_id"]] = list(body["documents_promised"])
                else:
                    self.stats.refused += 1
                await self._supply_documents(client)
            except httpx.HTTPError:
                self.stats.errors += 1
            await _sleep(stop, 1 / self.options.rate)

    async def _supply_documents(self, client: httpx.AsyncClient) -> None:
        """The enterprises bring what they promised; what a fault interrupted is brought
        on the next round."""
        for claim_id in list(self.promised)[:5]:
            documents = self.promised[claim_id]
            while documents:
                r = await client.post(
                    f"{self.urls['intake']}/claims/{claim_id}/documents",
                    json={"document_id": documents[0]},
                    headers={**window(), "Idempotency-Key": f"chaos-{claim_id}-{documents[0]}"},
                )
                if r.status_code >= 500:
                    return
                self.stats.documents_supplied += r.status_code == 200
                documents.pop(0)
            del self.promised[claim_id]

    async def _player(self, play: Callable[[], Awaitable[int]], stop: asyncio.Event) -> None:
        """A player that outlives the faults: an error (a service down) costs a second."""
        while not stop.is_set():
            try:
                await play()
            except (httpx.HTTPError, ValueError, KeyError):
                self.stats.player_errors += 1
                await _sleep(stop, 1.0)

    # --- faults ----------------------------------------------------------------------

    def _pid(self, name: str) -> int | None:
        state = stack.read_supervisor_state(self.cfg) or {}
        pid = state.get("programs", {}).get(name, {}).get("pid")
        return int(pid) if pid else None

    async def _kill(self, cycle: Cycle) -> list[str]:
        names = self.rng.sample(stack.SERVICES, k=self.rng.choice((1, 2)))
        for name in names:
            pid = self._pid(name)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
        cycle.faults = len(names)
        cycle.detail = "SIGKILL " + " + ".join(names)
        return names

    async def _postgres(self, cycle: Cycle) -> None:
        await asyncio.to_thread(stack.stop_postgres, self.cfg, "immediate")
        await asyncio.sleep(self.options.postgres_down_s)
        await asyncio.to_thread(stack.start_postgres, self.cfg)
        cycle.detail = f"immediate stop, down {self.options.postgres_down_s:g} s"

    async def _broker(self, cycle: Cycle) -> None:
        pid = self._pid("broker")
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        cycle.detail = f"SIGKILL tansu ({self.cfg.broker_storage} storage)"

    async def _pause(self, cycle: Cycle) -> None:
        pid = self._pid("broker")
        if pid is None:
            return
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(self.options.pause_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        cycle.detail = f"SIGSTOP tansu {self.options.pause_s:g} s"

    async def _slow_bank(self, cycle: Cycle) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '10s'")
                # Every bank call (a new instruction) and every settlement waits.
                await conn.execute(
                    "LOCK TABLE bank_sim.instructions, bank_sim.notices IN SHARE ROW EXCLUSIVE MODE"
                )
                await asyncio.sleep(self.options.slow_bank_s)
        finally:
            await conn.close()
        cycle.detail = f"bank's books locked {self.options.slow_bank_s:g} s"

    # --- recovery --------------------------------------------------------------------

    async def _healthy(self, client: httpx.AsyncClient) -> bool:
        for name in stack.SERVICES:
            try:
                r = await client.get(f"{self.urls[name]}/health", timeout=3)
            except httpx.HTTPError:
                return False
            if r.status_code != 200:
                return False
        return True

    async def _recovered(
        self, client: httpx.AsyncClient, since: float, cycle: Cycle
    ) -> float | None:
        """Seconds from ``since`` until every service is healthy and a probe claim
        submitted now went intake → review → intake; None if not within the timeout."""
        deadline = since + self.options.recovery_timeout_s
        probe: str | None = None
        body = make_claim(self.rng, self.period)
        while time.monotonic() < deadline:
            try:
                if not await self._healthy(client):
                    await asyncio.sleep(0.1)
                    continue
                if cycle.healthy_s is None:
                    cycle.healthy_s = time.monotonic() - since
                if probe is None:
                    r = await client.post(
                        f"{self.urls['intake']}/claims", json=body, headers=window(), timeout=5
                    )
                    if r.status_code == 201:
                        probe = str(r.json()["claim_id"])
                        self.stats.submitted += 1
                    else:
                        await asyncio.sleep(0.2)
                    continue
                r = await client.get(f"{self.urls['intake']}/claims/{probe}", timeout=3)
                if r.status_code == 200 and r.json()["status"] != "submitted":
                    return time.monotonic() - since
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        return None

    async def _cycle(self, n: int, kind: str, client: httpx.AsyncClient) -> Cycle:
        cycle = Cycle(n=n, kind=kind, detail="", started_at=time.time())
        if kind == "kill":
            await self._kill(cycle)
        elif kind == "postgres":
            await self._postgres(cycle)
        elif kind == "broker":
            await self._broker(cycle)
        elif kind == "pause":
            await self._pause(cycle)
        elif kind == "slow_bank":
            await self._slow_bank(cycle)
        cycle.recovery_s = await self._recovered(client, time.monotonic(), cycle)
        report = await _check_when_reachable(self.dsn, self.options.grace_s)
        if report is None:
            cycle.violations = 1
            cycle.violation_examples = ["the check could not read the databases"]
        else:
            cycle.violations = report.violations
            cycle.violation_examples = [
                e for i in report.invariants for e in (f"{i.name}: {x}" for x in i.examples)
            ][:5]
        return cycle

    def _schedule(self) -> list[str]:
        kinds = [k for k in KINDS for _ in range(self.options.cycles.get(k, 0))]
        self.rng.shuffle(kinds)
        return kinds

    # --- the campaign ----------------------------------------------------------------

    async def run(self) -> ChaosResult:
        started = time.monotonic()
        stop_submitting, stop_players = asyncio.Event(), asyncio.Event()
        cycles: list[Cycle] = []
        final: CheckReport | None = None
        drained_s: float | None = None
        # Reads go as the auditor (reads everything, changes nothing).
        reader = people.headers("auditor-zhou")
        async with httpx.AsyncClient(timeout=10, headers=reader) as client:
            submitter = asyncio.create_task(self._submit(client, stop_submitting))
            players = [
                asyncio.create_task(
                    self._player(
                        lambda: play_reviewers(client, self.urls["review"], self.rng, stop_players),
                        stop_players,
                    )
                ),
                asyncio.create_task(
                    self._player(
                        lambda: play_finance(client, self.urls["payout"], stop_players),
                        stop_players,
                    )
                ),
            ]
            try:
                schedule = self._schedule()
                for n, kind in enumerate(schedule, start=1):
                    if (
                        self.options.max_minutes is not None
                        and time.monotonic() - started > self.options.max_minutes * 60
                    ):
                        self.console.print(
                            f"[yellow]--max-minutes reached: {n - 1} of {len(schedule)} cycles run"
                        )
                        break
                    await asyncio.sleep(self.rng.uniform(*self.options.gap_s))
                    cycle = await self._cycle(n, kind, client)
                    cycles.append(cycle)
                    self._log_cycle(cycle, len(schedule))
                stop_submitting.set()
                await submitter
                drain_started = time.monotonic()
                final, drained = await self._drain(client)
                if drained:
                    drained_s = time.monotonic() - drain_started
            finally:
                stop_submitting.set()
                stop_players.set()
                await asyncio.gather(submitter, *players, return_exceptions=True)
        return ChaosResult(
            cycles=cycles,
            load=self.stats,
            final=final,
            drained_s=drained_s,
            seconds=time.monotonic() - started,
            storage=self.cfg.broker_storage,
        )

    async def _drain(self, client: httpx.AsyncClient) -> tuple[CheckReport | None, bool]:
        """Until nothing moves any more: every claim final or waiting for a person, the
        outboxes empty, every event consumed. The last check has no grace period."""
        deadline = time.monotonic() + self.options.drain_timeout_s
        report: CheckReport | None = None
        while time.monotonic() < deadline:
            await self._supply_documents_safely(client)
            report = await _check_when_reachable(self.dsn, 0.0)
            if report is not None and report.violations == 0:
                return report, True
            await asyncio.sleep(2)
        return report, False

    async def _supply_documents_safely(self, client: httpx.AsyncClient) -> None:
        try:
            await self._supply_documents(client)
        except httpx.HTTPError:
            self.stats.errors += 1

    def _log_cycle(self, cycle: Cycle, total: int) -> None:
        recovery = "NOT RECOVERED" if cycle.recovery_s is None else f"{cycle.recovery_s:.1f} s"
        colour = "red" if cycle.violations or cycle.recovery_s is None else "green"
        self.console.print(
            f"[{colour}]cycle {cycle.n}/{total} {cycle.kind}: {cycle.detail}; recovered "
            f"{recovery}; violations {cycle.violations}[/{colour}] "
            f"(claims submitted {self.stats.submitted})"
        )
        for example in cycle.violation_examples:
            self.console.print(f"  [red]{example}")
        if self.options.cycles_file is not None:
            with open(self.options.cycles_file, "a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(cycle), ensure_ascii=False) + "\n")


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _check_when_reachable(dsn: str, grace_s: float, attempts: int = 10) -> CheckReport | None:
    for _ in range(attempts):
        try:
            return await run_check(dsn, grace_s=grace_s)
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(1)
    return None


def campaign(
    cfg: stack.StackConfig, options: ChaosOptions, console: Console, *, service_env: dict[str, str]
) -> ChaosResult:
    """Run a campaign on the stack of ``cfg``, starting it first when none is up (then
    stopping it at the end)."""
    info = stack.read_info(cfg)
    started_here = info is None
    if info is None:
        cfg.service_env.update(service_env)
        with console.status("starting the stack…"):
            info = stack.up(cfg, with_prometheus=False)
    else:
        cfg.broker_storage = str(info.get("broker_storage", cfg.broker_storage))
    try:
        return asyncio.run(Chaos(cfg, info, options, console).run())
    finally:
        if started_here:
            with console.status("stopping the stack…"):
                stack.down(cfg)
