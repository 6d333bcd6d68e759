"""End to end: what one claim costs and how long it takes, on the real stack, with a raw
durable relay baseline measured in the same run.

    .venv/bin/python -m bench.e2e                      # make bench-e2e
    .venv/bin/python -m bench.e2e --quick              # a smoke run (CI): tiny, 1 round

Starts its own stack (PostgreSQL with pg_stat_statements, tansu with memory storage
unless --broker-storage s3, the three services as separate processes, the simulated bank
answering at once) in a temporary folder, then per round, interleaved:

* **relay baseline**: bench.relay_pipeline's three durable hops (outbox -> relay ->
  broker -> batch consumer with inbox rows and the next outbox rows in one transaction)
  on the same broker and database: messages/s;
* **max rate**: N VAT refunds under the sign-off threshold submitted as fast as the
  window's API takes them, reviewer bots deciding each task as it appears on their
  worklist; claims/s from the first submit to the last claim paid, and per claim: CPU ms
  of every process (from /proc: the services, the PostgreSQL backends serving each
  service, the other PostgreSQL processes, the broker, the bench itself), SQL statements
  (pg_stat_statements) and transactions (pg_stat_database), pool resets, events and
  deliveries;
* **fixed rates** (--rates, claims/s): M claims offered at that rate; submit -> paid
  p50/p95/p99 and the per-hop breakdown from the events' and tables' timestamps.

Prints the medians of the rounds and the ratio claims/s x events per claim / relay
msg/s. ``--json FILE`` writes every figure. A benchmark, not a test: the machine is
shared and noisy; compare figures of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from bench.relay_pipeline import claimflow_round, make_data_dir
from shared.devstack import people, stack
from shared.devstack.demo_claims import make_claim
from shared.programs import load_catalogue

console = Console()
CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH_APP = "claimflow-bench"
SIGN_OFF_THRESHOLD_YUAN = 1_000_000
"""services/review/config.py's default: claims at or below it need no sign-off."""
ZERO_BANK_DELAY = {
    "CLAIMFLOW_GATEWAY_MIN_DELAY_S": "0",
    "CLAIMFLOW_GATEWAY_MAX_DELAY_S": "0",
    # Account numbers ending in 000000N would force bank trouble.
    "CLAIMFLOW_GATEWAY_MAGIC_ACCOUNTS": "false",
}
STATS_FLUSH_S = 11.0
"""PostgreSQL backends flush their transaction counts to pg_stat_database at most once
a second while busy and within 10 s once idle (PGSTAT_IDLE_INTERVAL)."""

HOPS: tuple[tuple[str, str, str], ...] = (
    ("submit → intake committed", "submit", "submitted"),
    ("intake → review consumed", "submitted", "review_in"),
    ("review consumed → tasks open", "review_in", "tasks_open"),
    ("tasks open → decided (bots)", "tasks_open", "tasks_done"),
    ("last decision → review.decided", "tasks_done", "decided"),
    ("review.decided → payout consumed", "decided", "payout_in"),
    ("payout consumed → issued (payment loop)", "payout_in", "issued"),
    ("issued → confirmed (bank)", "issued", "confirmed"),
    ("payout.confirmed → intake paid", "confirmed", "paid"),
)


# --- the load -------------------------------------------------------------------------


def bench_claim(rng: random.Random, period: str) -> dict[str, Any]:
    """A VAT refund the window accepts, every document supplied, an A rating, the amount
    requested equal to the eligible one and under the sign-off threshold."""
    body = make_claim(rng, period, promise_documents=False)
    end_credit = Decimal(rng.randrange(100_000_00, 900_000_00)) / 100
    ratio = Decimal(rng.randrange(6000, 10000)) / 10000
    body.update(
        end_credit_balance=str(end_credit),
        base_credit_balance="0.00",
        input_composition_ratio=str(ratio),
        tax_credit_rating="A",
        requested_amount=str((end_credit * ratio).quantize(Decimal("0.01"), ROUND_DOWN)),
    )
    assert Decimal(body["requested_amount"]) < SIGN_OFF_THRESHOLD_YUAN
    return body


def last_month() -> str:
    today = date.today()
    return f"{today.year - (today.month == 1):04d}-{(today.month - 2) % 12 + 1:02d}"


@dataclass
class BotStats:
    worklist_gets: int = 0
    decisions: int = 0
    refused: int = 0


async def reviewer_bot(
    client: httpx.AsyncClient,
    review_url: str,
    department: str,
    stop: asyncio.Event,
    poll_s: float,
    stats: BotStats,
) -> None:
    """One department's reviewer: approves every task as soon as it is on the worklist,
    polling it every ``poll_s`` while it is empty."""
    headers = people.headers(f"{department}-bench-reviewer", "reviewer", departments=[department])
    while not stop.is_set():
        r = await client.get(
            f"{review_url}/worklist", params={"department": department}, headers=headers
        )
        stats.worklist_gets += 1
        if r.is_error:
            raise RuntimeError(f"worklist {department}: {r.status_code} {r.text[:300]}")
        tasks = r.json()
        for task in tasks:
            resp = await client.post(
                f"{review_url}/tasks/{task['task_id']}/decision",
                json={"decision": "approve", "comment": "同意"},
                headers=headers,
            )
            if resp.status_code == 200:
                stats.decisions += 1
            else:
                stats.refused += 1
        if not tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), poll_s)


@contextlib.asynccontextmanager
async def reviewers(
    client: httpx.AsyncClient, review_url: str, poll_s: float
) -> AsyncIterator[BotStats]:
    stats = BotStats()
    stop = asyncio.Event()
    departments = list(load_catalogue().vat_refund.departments)
    tasks = [
        asyncio.create_task(reviewer_bot(client, review_url, d, stop, poll_s, stats))
        for d in departments
    ]
    try:
        yield stats
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def submit(
    client: httpx.AsyncClient, intake_url: str, body: dict[str, Any]
) -> tuple[str, float]:
    at = time.time()
    r = await client.post(
        f"{intake_url}/claims",
        json=body,
        headers={
            **people.headers("window-bench", "window_clerk"),
            "Idempotency-Key": str(uuid.uuid4()),
        },
    )
    if r.status_code != 201:
        raise RuntimeError(f"the window refused a bench claim: {r.status_code} {r.text}")
    claim_id: str = r.json()["claim_id"]
    return claim_id, at


async def wait_paid(db: asyncpg.Connection, ids: list[str], timeout_s: float) -> float:
    """Until every claim is paid; returns the time.time() it was seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        paid = await db.fetchval(
            "/* bench */ SELECT count(*) FROM intake.claims "
            "WHERE claim_id = ANY($1::uuid[]) AND status = 'paid'",
            ids,
        )
        if paid == len(ids):
            return time.time()
        if time.monotonic() > deadline:
            statuses = await db.fetch(
                "/* bench */ SELECT status, count(*) FROM intake.claims "
                "WHERE claim_id = ANY($1::uuid[]) GROUP BY status",
                ids,
            )
            raise RuntimeError(
                f"{len(ids) - paid} of {len(ids)} claims not paid after {timeout_s:.0f}s: "
                + ", ".join(f"{r['status']} {r['count']}" for r in statuses)
            )
        await asyncio.sleep(0.05)


# --- what the processes used ------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all its threads) so far."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def children_of(parent: int) -> list[int]:
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and parent_of(int(entry.name)) == parent
    ]


def socket_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets a process holds: a PostgreSQL backend whose client
    port is one of them serves that process."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


@dataclass
class Processes:
    services: dict[str, int]
    broker: int
    postmaster: int


async def cpu_snapshot(db: asyncpg.Connection, procs: Processes) -> dict[int, tuple[str, float]]:
    """pid -> (what it is, CPU seconds): services, their backends, other PostgreSQL
    processes, the broker, the bench."""
    found: dict[int, tuple[str, float]] = {}

    def add(pid: int, label: str) -> None:
        used = cpu_seconds(pid)
        if used is not None:
            found[pid] = (label, used)

    for name, pid in procs.services.items():
        add(pid, name)
    add(procs.broker, "broker")
    add(os.getpid(), "bench (load + bots)")
    port_owner = {port: name for name, pid in procs.services.items() for port in socket_ports(pid)}
    backends = await db.fetch(
        "/* bench */ SELECT pid, client_port, application_name FROM pg_stat_activity"
    )
    serving = {
        r["pid"]: (
            "postgres: bench"
            if r["application_name"] == BENCH_APP
            else f"postgres: {port_owner[r['client_port']]}"
            if r["client_port"] in port_owner
            else None
        )
        for r in backends
    }
    for pid in children_of(procs.postmaster):
        add(pid, serving.get(pid) or "postgres: other")
    add(procs.postmaster, "postgres: other")
    return found


def cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds used between the snapshots, by label (a process born in between counts
    from zero)."""
    used: dict[str, float] = {}
    for pid, (label, end) in after.items():
        start = before.get(pid, (label, 0.0))[1]
        used[label] = used.get(label, 0.0) + max(0.0, end - start)
    return used


async def xacts(db: asyncpg.Connection) -> int:
    value: int = await db.fetchval(
        "/* bench */ SELECT xact_commit + xact_rollback FROM pg_stat_database "
        "WHERE datname = current_database()"
    )
    return value


async def statements(db: asyncpg.Connection) -> list[tuple[str, int]]:
    rows = await db.fetch(
        "/* bench */ SELECT query, calls FROM pg_stat_statements s JOIN pg_database d "
        "ON d.oid = s.dbid WHERE d.datname = current_database()"
    )
    return [(r["query"], r["calls"]) for r in rows if "/* bench */" not in r["query"]]


RESET_STATEMENT = re.compile(r"^\s*RESET ALL\s*;?\s*$", re.IGNORECASE)


# --- one sub-round ----------------------------------------------------------------------


@dataclass
class Bench:
    cfg: stack.StackConfig
    procs: Processes
    db: asyncpg.Connection
    client: httpx.AsyncClient
    args: argparse.Namespace
    rng: random.Random
    period: str
    idle_xacts_per_s: float = 0.0
    idle_cpu_ms_per_s: dict[str, float] = field(default_factory=dict)


@dataclass
class Latency:
    claims: int
    offered_per_s: float | None
    claims_per_s: float
    percentiles_ms: dict[str, float]
    hops_p50_ms: dict[str, float]
    hops_p99_ms: dict[str, float]


@dataclass
class Cost:
    claims: int
    claims_per_s: float
    cpu_ms_per_claim: dict[str, float]
    statements_per_claim: float
    transactions_per_claim: float
    pool_resets_per_claim: float
    events_per_claim: float
    deliveries_per_claim: float
    ignored_deliveries_per_claim: float
    worklist_polls_per_claim: float
    top_statements: list[tuple[str, float]]


async def push(
    bench: Bench, n: int, rate: float | None
) -> tuple[list[str], dict[str, float], float, float, BotStats]:
    """Submit n claims (at ``rate`` per second, or as fast as they are taken) with the
    bots working; returns ids, submit times, the first submit and the last paid time."""
    urls = {name: bench.cfg.url(name) for name in stack.SERVICES}
    bodies = [bench_claim(bench.rng, bench.period) for _ in range(n)]
    submitted: dict[str, float] = {}
    async with reviewers(bench.client, urls["review"], bench.args.bot_poll_s) as bots:
        started = time.time()
        if rate is None:
            queue = list(bodies)

            async def worker() -> None:
                while queue:
                    claim_id, at = await submit(bench.client, urls["intake"], queue.pop())
                    submitted[claim_id] = at

            await asyncio.gather(*(worker() for _ in range(bench.args.submitters)))
        else:
            pending: list[asyncio.Task[tuple[str, float]]] = []
            for i, body in enumerate(bodies):
                delay = started + i / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                pending.append(asyncio.create_task(submit(bench.client, urls["intake"], body)))
            for claim_id, at in await asyncio.gather(*pending):
                submitted[claim_id] = at
        ids = list(submitted)
        paid_at = await wait_paid(bench.db, ids, bench.args.timeout_s)
    return ids, submitted, started, paid_at, bots


async def journey(bench: Bench, submitted: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per claim, the wall-clock time (epoch seconds) of every milestone of HOPS."""
    ids = list(submitted)
    rows = await bench.db.fetch(
        """/* bench */
        WITH o AS (
            SELECT 'intake' AS producer, message_key, event_id, event_type, created_at
              FROM intake.outbox WHERE message_key = ANY($1::text[])
            UNION ALL
            SELECT 'review', message_key, event_id, event_type, created_at
              FROM review.outbox WHERE message_key = ANY($1::text[])
            UNION ALL
            SELECT 'payout', message_key, event_id, event_type, created_at
              FROM payout.outbox WHERE message_key = ANY($1::text[]))
        SELECT o.message_key AS claim_id, o.event_type,
               extract(epoch FROM o.created_at)::float8 AS staged,
               extract(epoch FROM ri.received_at)::float8 AS review_in,
               extract(epoch FROM pi.received_at)::float8 AS payout_in,
               extract(epoch FROM ii.received_at)::float8 AS intake_in
        FROM o
        LEFT JOIN review.inbox ri ON ri.message_id = o.event_id::text
        LEFT JOIN payout.inbox pi ON pi.message_id = o.event_id::text
        LEFT JOIN intake.inbox ii ON ii.message_id = o.event_id::text""",
        ids,
    )
    tasks = await bench.db.fetch(
        """/* bench */ SELECT claim_id::text,
               extract(epoch FROM min(created_at))::float8 AS opened,
               extract(epoch FROM max(decided_at))::float8 AS decided
           FROM review.review_tasks WHERE claim_id = ANY($1::uuid[]) GROUP BY claim_id""",
        ids,
    )
    times: dict[str, dict[str, float]] = {c: {"submit": at} for c, at in submitted.items()}
    for r in rows:
        t = times[r["claim_id"]]
        kind = r["event_type"]
        if kind == "claim.submitted":
            t["submitted"] = r["staged"]
            t["review_in"] = r["review_in"]
        elif kind == "review.decided":
            t["decided"] = r["staged"]
            t["payout_in"] = r["payout_in"]
        elif kind == "payout.issued":
            t["issued"] = min(t.get("issued", math.inf), r["staged"])
        elif kind == "payout.confirmed":
            t["confirmed"] = r["staged"]
            t["paid"] = r["intake_in"]
    for r in tasks:
        times[r["claim_id"]].update(tasks_open=r["opened"], tasks_done=r["decided"])
    return times


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


async def latency_round(bench: Bench, n: int, rate: float | None) -> Latency:
    _, submitted, started, paid_at, _ = await push(bench, n, rate)
    return await latency_of(bench, submitted, rate, started, paid_at)


async def latency_of(
    bench: Bench, submitted: dict[str, float], rate: float | None, started: float, paid_at: float
) -> Latency:
    ids = list(submitted)
    times = await journey(bench, submitted)
    total = [(t["paid"] - t["submit"]) * 1000 for t in times.values() if t.get("paid")]
    hops: dict[str, list[float]] = {label: [] for label, _, _ in HOPS}
    for t in times.values():
        for label, a, b in HOPS:
            if t.get(a) is not None and t.get(b) is not None:
                hops[label].append((t[b] - t[a]) * 1000)
    return Latency(
        claims=len(ids),
        offered_per_s=rate,
        claims_per_s=len(ids) / (paid_at - started),
        percentiles_ms={f"p{q}": percentile(total, q) for q in (50, 95, 99)},
        hops_p50_ms={k: percentile(v, 50) for k, v in hops.items()},
        hops_p99_ms={k: percentile(v, 99) for k, v in hops.items()},
    )


async def counts_since(bench: Bench, since: datetime) -> tuple[int, int, int]:
    """Events staged, deliveries (inbox rows) and of those ignored, since ``since``."""
    events = deliveries = ignored = 0
    for schema in stack.SERVICES:
        events += await bench.db.fetchval(
            f"/* bench */ SELECT count(*) FROM {schema}.outbox WHERE created_at >= $1", since
        )
        row = await bench.db.fetchrow(
            f"/* bench */ SELECT count(*) AS n, count(*) FILTER (WHERE outcome = 'ignored') AS i "
            f"FROM {schema}.inbox WHERE received_at >= $1",
            since,
        )
        assert row is not None
        deliveries += row["n"]
        ignored += row["i"]
    return events, deliveries, ignored


async def cost_round(bench: Bench, n: int) -> tuple[Cost, Latency]:
    """N claims at the maximum rate, with everything the processes and the database did
    counted from the first submit until the last claim was paid."""
    await bench.db.execute("/* bench */ SELECT pg_stat_statements_reset()")
    await asyncio.sleep(bench.args.settle_s)
    since: datetime = await bench.db.fetchval("/* bench */ SELECT clock_timestamp()")
    xacts_before = await xacts(bench.db)
    cpu_before = await cpu_snapshot(bench.db, bench.procs)
    ids, submitted, started, paid_at, bots = await push(bench, n, None)
    cpu_after = await cpu_snapshot(bench.db, bench.procs)
    stmts = await statements(bench.db)
    settled_from = time.time()
    await asyncio.sleep(bench.args.settle_s)
    # What the idle services did while the counts settled is not the claims' cost.
    background = bench.idle_xacts_per_s * (time.time() - settled_from)
    xact_count = await xacts(bench.db) - xacts_before - background
    events, deliveries, ignored = await counts_since(bench, since)
    cpu = cpu_delta(cpu_before, cpu_after)
    calls = sum(c for _, c in stmts)
    resets = sum(c for q, c in stmts if RESET_STATEMENT.match(q))
    top = sorted(stmts, key=lambda s: -s[1])[:12]
    cost = Cost(
        claims=len(ids),
        claims_per_s=len(ids) / (paid_at - started),
        cpu_ms_per_claim={k: v * 1000 / len(ids) for k, v in sorted(cpu.items())},
        statements_per_claim=calls / len(ids),
        transactions_per_claim=xact_count / len(ids),
        pool_resets_per_claim=resets / len(ids),
        events_per_claim=events / len(ids),
        deliveries_per_claim=deliveries / len(ids),
        ignored_deliveries_per_claim=ignored / len(ids),
        worklist_polls_per_claim=bots.worklist_gets / len(ids),
        top_statements=[(" ".join(q.split())[:110], c / len(ids)) for q, c in top],
    )
    return cost, await latency_of(bench, submitted, None, started, paid_at)


async def idle_background(bench: Bench, seconds: float) -> None:
    """Transactions and CPU of the stack with nothing to do, per second."""
    await asyncio.sleep(bench.args.settle_s)
    before_x = await xacts(bench.db)
    before_cpu = await cpu_snapshot(bench.db, bench.procs)
    started = time.time()
    await asyncio.sleep(seconds)
    await asyncio.sleep(bench.args.settle_s)
    after_cpu = await cpu_snapshot(bench.db, bench.procs)
    elapsed = time.time() - started
    bench.idle_xacts_per_s = (await xacts(bench.db) - before_x) / elapsed
    bench.idle_cpu_ms_per_s = {
        k: v * 1000 / elapsed for k, v in sorted(cpu_delta(before_cpu, after_cpu).items())
    }


# --- the stack --------------------------------------------------------------------------


def enable_pg_stat_statements(cfg: stack.StackConfig) -> None:
    """pg_stat_statements must be preloaded: set it and restart the fresh server."""

    async def configure() -> None:
        conn = await asyncpg.connect(cfg.dsn)
        try:
            await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        finally:
            await conn.close()

    asyncio.run(configure())
    stack.stop_postgres(cfg)
    stack.start_postgres(cfg)

    async def create() -> None:
        conn = await asyncpg.connect(cfg.dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await conn.close()

    asyncio.run(create())


def postmaster_pid(cfg: stack.StackConfig) -> int:
    return int((cfg.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])


@contextlib.asynccontextmanager
async def running_stack(args: argparse.Namespace) -> AsyncIterator[Bench]:
    data_dir = make_data_dir()
    cfg = stack.StackConfig(
        data_dir=data_dir,
        ports=stack.StackPorts.from_base(args.port_base),
        broker_storage=args.broker_storage,
        service_env={**stack.FAST_REJOIN_ENV, **ZERO_BANK_DELAY},
    )
    broker_pids: list[int] = []
    services: dict[str, int] = {}
    try:
        await asyncio.to_thread(stack.start_postgres, cfg)
        await asyncio.to_thread(enable_pg_stat_statements, cfg)
        broker_pids = await asyncio.to_thread(stack.start_broker_stack, cfg)
        await stack.create_topics(cfg.bootstrap, cfg.partitions)
        for name in stack.SERVICES:
            services[name] = stack.start_service(cfg, name)
        await asyncio.to_thread(stack.wait_healthy, cfg)
        # The bots' tokens: signed with this stack's issuer key, like the demo's.
        people.use(people.People(cfg.data_dir, cfg.issuer_url))
        db = await asyncpg.connect(cfg.dsn, server_settings={"application_name": BENCH_APP})
        try:
            async with httpx.AsyncClient(
                timeout=30,
                limits=httpx.Limits(max_connections=32),
                headers=people.headers("auditor-zhou"),  # reads; actions name their person
            ) as client:
                yield Bench(
                    cfg=cfg,
                    procs=Processes(services, broker_pids[-1], postmaster_pid(cfg)),
                    db=db,
                    client=client,
                    args=args,
                    rng=random.Random(args.seed),
                    period=last_month(),
                )
        finally:
            await db.close()
    finally:
        for pid in services.values():
            await asyncio.to_thread(stack.stop_pid, pid, stack.SERVICE_STOP_S)
        await asyncio.to_thread(stack.stop_broker_stack, broker_pids)
        await asyncio.to_thread(stack.stop_postgres, cfg)
        if args.keep_data:
            console.print(f"data kept in {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


# --- the rounds and the report ----------------------------------------------------------


@dataclass
class Round:
    relay_msgs_per_s: float
    cost: Cost
    latency: list[Latency]

    @property
    def ratio(self) -> float:
        return self.cost.claims_per_s * self.cost.events_per_claim / self.relay_msgs_per_s


def med(values: Iterable[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def summary(rounds: list[Round], bench: Bench) -> dict[str, Any]:
    costs = [r.cost for r in rounds]
    cpu_labels = sorted({k for c in costs for k in c.cpu_ms_per_claim})
    cpu = {k: med(c.cpu_ms_per_claim.get(k, 0.0) for c in costs) for k in cpu_labels}
    services_ms = sum(v for k, v in cpu.items() if k in stack.SERVICES)
    backends_ms = sum(v for k, v in cpu.items() if k in {f"postgres: {s}" for s in stack.SERVICES})
    system_ms = services_ms + backends_ms + cpu.get("postgres: other", 0) + cpu.get("broker", 0)
    # The idle stack's own CPU (consumers polling the broker, the payment loop, relays,
    # gauges) runs through the window too; net of it, what the claims themselves cost.
    # Under a loaded machine the window stretches and the raw figure with it.
    idle = bench.idle_cpu_ms_per_s
    net = {
        k: med(c.cpu_ms_per_claim.get(k, 0.0) - idle.get(k, 0.0) / c.claims_per_s for c in costs)
        for k in cpu_labels
    }
    system_labels = {*stack.SERVICES, *(f"postgres: {s}" for s in stack.SERVICES)}
    system_labels |= {"postgres: other", "broker"}
    latency: dict[str, Any] = {}
    for i, first in enumerate(rounds[0].latency):
        label = f"{first.offered_per_s:g}/s" if first.offered_per_s else "max rate"
        runs = [r.latency[i] for r in rounds]
        latency[label] = {
            "claims": first.claims,
            "claims_per_s": med(x.claims_per_s for x in runs),
            "submit_to_paid_ms": {
                q: med(x.percentiles_ms[q] for x in runs) for q in first.percentiles_ms
            },
            "hops_p50_ms": {h: med(x.hops_p50_ms[h] for x in runs) for h in first.hops_p50_ms},
            "hops_p99_ms": {h: med(x.hops_p99_ms[h] for x in runs) for h in first.hops_p99_ms},
        }
    return {
        "command": "python -m bench.e2e " + " ".join(bench.args.argv),
        "rounds": len(rounds),
        "broker_storage": bench.cfg.broker_storage,
        "claims_per_s": med(c.claims_per_s for c in costs),
        "relay_msgs_per_s": med(r.relay_msgs_per_s for r in rounds),
        "ratio": med(r.ratio for r in rounds),
        "cpu_ms_per_claim": cpu,
        "cpu_ms_per_claim_services": services_ms,
        "cpu_ms_per_claim_service_backends": backends_ms,
        "cpu_ms_per_claim_system": system_ms,
        "cpu_ms_per_claim_net_of_idle": net,
        "cpu_ms_per_claim_system_net_of_idle": sum(v for k, v in net.items() if k in system_labels),
        "statements_per_claim": med(c.statements_per_claim for c in costs),
        "transactions_per_claim": med(c.transactions_per_claim for c in costs),
        "pool_resets_per_claim": med(c.pool_resets_per_claim for c in costs),
        "events_per_claim": med(c.events_per_claim for c in costs),
        "deliveries_per_claim": med(c.deliveries_per_claim for c in costs),
        "ignored_deliveries_per_claim": med(c.ignored_deliveries_per_claim for c in costs),
        "worklist_polls_per_claim": med(c.worklist_polls_per_claim for c in costs),
        "idle_background": {
            "transactions_per_s": bench.idle_xacts_per_s,
            "cpu_ms_per_s": bench.idle_cpu_ms_per_s,
        },
        "latency": latency,
        "top_statements_per_claim": rounds[len(rounds) // 2].cost.top_statements,
        "per_round": [
            {"relay_msgs_per_s": r.relay_msgs_per_s, "ratio": r.ratio, "cost": asdict(r.cost)}
            for r in rounds
        ],
    }


def report(s: dict[str, Any]) -> None:
    head = Table(title=f"claimflow end to end, median of {s['rounds']} round(s)")
    head.add_column("figure")
    head.add_column("value", justify="right")
    head.add_row("claims/s (max rate, end to end)", f"{s['claims_per_s']:.1f}")
    head.add_row("raw durable 3-hop relay (msg/s)", f"{s['relay_msgs_per_s']:,.0f}")
    head.add_row("ratio (claims/s × events/claim ÷ relay msg/s)", f"{s['ratio']:.3f}")
    head.add_row("CPU ms per claim, system", f"{s['cpu_ms_per_claim_system']:.1f}")
    for label, value in s["cpu_ms_per_claim"].items():
        head.add_row(f"  CPU ms per claim, {label}", f"{value:.1f}")
    head.add_row(
        "CPU ms per claim, system, net of the idle stack's",
        f"{s['cpu_ms_per_claim_system_net_of_idle']:.1f}",
    )
    head.add_row("SQL statements per claim", f"{s['statements_per_claim']:.1f}")
    head.add_row("transactions per claim", f"{s['transactions_per_claim']:.1f}")
    head.add_row("pool resets per claim", f"{s['pool_resets_per_claim']:.1f}")
    head.add_row("events per claim", f"{s['events_per_claim']:.1f}")
    head.add_row("deliveries per claim", f"{s['deliveries_per_claim']:.1f}")
    head.add_row("  of which ignored", f"{s['ignored_deliveries_per_claim']:.1f}")
    head.add_row("worklist polls per claim (bots)", f"{s['worklist_polls_per_claim']:.1f}")
    head.add_row("idle stack: transactions/s", f"{s['idle_background']['transactions_per_s']:.1f}")
    idle_cpu = s["idle_background"]["cpu_ms_per_s"]
    head.add_row(
        "idle stack: CPU ms/s (services + backends + broker)",
        f"{sum(v for k, v in idle_cpu.items() if not k.startswith('bench')):.1f}",
    )
    console.print(head)
    for label, lat in s["latency"].items():
        t = Table(
            title=f"submit → paid at {label}: {lat['claims']} claims, "
            f"{lat['claims_per_s']:.1f} claims/s; p50 {lat['submit_to_paid_ms']['p50']:.0f} ms, "
            f"p95 {lat['submit_to_paid_ms']['p95']:.0f} ms, "
            f"p99 {lat['submit_to_paid_ms']['p99']:.0f} ms"
        )
        t.add_column("hop")
        t.add_column("p50 ms", justify="right")
        t.add_column("p99 ms", justify="right")
        for hop, p50 in lat["hops_p50_ms"].items():
            t.add_row(hop, f"{p50:.0f}", f"{lat['hops_p99_ms'][hop]:.0f}")
        console.print(t)
    top = Table(title="most frequent SQL statements (calls per claim, middle round)")
    top.add_column("calls", justify="right")
    top.add_column("statement")
    for query, calls in s["top_statements_per_claim"]:
        top.add_row(f"{calls:.1f}", query)
    console.print(top)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",") if r]
    rounds: list[Round] = []
    async with running_stack(args) as bench:
        await idle_background(bench, args.idle_s)
        # Warm-up: first requests, JIT caches, pool growth are not what a claim costs.
        await latency_round(bench, args.warmup, None)
        relay_dir = bench.cfg.data_dir / "no-service-migrations"
        relay_dir.mkdir(exist_ok=True)
        for round_no in range(1, args.rounds + 1):
            relay = await claimflow_round(bench.cfg, args.relay_events, 3, relay_dir)
            cost, at_max_rate = await cost_round(bench, args.claims)
            latencies = [at_max_rate]
            for rate in rates:
                latencies.append(await latency_round(bench, args.rate_claims, rate))
            rounds.append(Round(relay, cost, latencies))
            console.print(
                f"round {round_no}: relay {relay:,.0f} msg/s; {cost.claims_per_s:.1f} claims/s, "
                f"{sum(cost.cpu_ms_per_claim.values()):.0f} CPU ms/claim (all processes), "
                f"{cost.statements_per_claim:.0f} statements/claim; ratio {rounds[-1].ratio:.3f}; "
                + ", ".join(
                    f"{lat.offered_per_s or 'max'}/s p50 {lat.percentiles_ms['p50']:.0f} ms"
                    for lat in latencies
                )
            )
        result = summary(rounds, bench)
    report(result)
    if args.json:
        text = json.dumps(result, indent=2, ensure_ascii=False)
        await asyncio.to_thread(Path(args.json).write_text, text)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--claims", type=int, default=200, help="claims per max-rate run")
    parser.add_argument("--rates", default="2,10", help="offered rates, claims/s")
    parser.add_argument("--rate-claims", type=int, default=60, help="claims per offered rate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--relay-events", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=20, help="claims before the rounds")
    parser.add_argument("--submitters", type=int, default=4, help="concurrent window clients")
    parser.add_argument("--bot-poll-s", type=float, default=0.05)
    parser.add_argument("--timeout-s", type=float, default=300)
    parser.add_argument("--settle-s", type=float, default=STATS_FLUSH_S)
    parser.add_argument("--idle-s", type=float, default=20, help="idle background sample")
    parser.add_argument(
        "--broker-storage", choices=stack.BROKER_STORAGES, default="memory", help="tansu's"
    )
    parser.add_argument("--port-base", type=int, default=26000)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny and one round (CI)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.rounds, args.claims, args.rate_claims, args.warmup = 1, 6, 4, 2
        args.relay_events, args.idle_s, args.settle_s = 300, 2, 2
    return args


def cli() -> None:
    asyncio.run(main(parse_args()))


if __name__ == "__main__":
    cli()
