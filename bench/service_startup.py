"""Where a service's start-up time goes, from the process being spawned to its consumer
having consumed an event, after a SIGKILL and after a SIGTERM.

    .venv/bin/python -m bench.service_startup --service payout --rounds 3

Starts PostgreSQL and the broker (--broker-storage, default `stack up`'s) through the
project's stack code, starts the service once (migrations applied), then per round and
mode: publishes one probe message to a topic the service consumes, stops the service
(SIGKILL or SIGTERM), spawns it again and times, from the spawn:

* ``imported``: the service's first log line (interpreter, imports, app built); with a
  warm spare (what the supervisor keeps ready) the clock starts at its release instead;
* ``subscribed``: FastStream's "waiting for messages" (migrations checked, pool, outbox
  relay, broker connection, consumer started);
* ``assigned``: partitions assigned (group join);
* ``healthy``: GET /health answers 200;
* ``consumed``: the group's committed offset has passed the probe (first fetch, the
  batch's transaction, the commit).

``--session-timeout-ms 10000 --heartbeat-interval-ms 3000`` gives the figures with the
consumer settings the stack used before (Kafka's defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import statistics
import time
from datetime import datetime
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from bench.relay_pipeline import make_data_dir
from shared.contracts.topics import INTAKE_EVENTS, REVIEW_EVENTS
from shared.devstack import stack

console = Console()
PHASES = ("imported", "subscribed", "assigned", "healthy", "consumed")
CONSUMES = {"payout": REVIEW_EVENTS, "review": INTAKE_EVENTS, "intake": REVIEW_EVENTS}
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
MARKERS = {
    "imported": "imported, starting",
    "subscribed": "waiting for messages",
    "assigned": "assigned to partitions",
}


def log_times(log: Path, offset: int) -> dict[str, float]:
    """Wall-clock times of the phase markers written to the log after ``offset``."""
    found: dict[str, float] = {}
    with open(log, "rb") as f:
        f.seek(offset)
        for raw in f.read().decode(errors="replace").splitlines():
            m = LOG_TIME.match(raw)
            if not m:
                continue
            for phase, marker in MARKERS.items():
                if phase not in found and marker in raw:
                    at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
                    found[phase] = at.timestamp()
    return found


async def probe(bootstrap: str, topic: str) -> tuple[TopicPartition, int]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, b"startup probe", key=b"startup-probe")
    finally:
        await producer.stop()
    return TopicPartition(topic, meta.partition), meta.offset


async def committed(admin: AIOKafkaAdminClient, group: str, tp: TopicPartition) -> int:
    offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    meta = offsets.get(tp)
    return meta.offset if meta is not None else -1


async def one_start(
    cfg: stack.StackConfig, name: str, mode: str, pid: int | None
) -> tuple[int, dict[str, float]]:
    log = cfg.data_dir / "logs" / f"{name}.log"
    spare = None
    if mode.endswith("warm spare"):
        # What the supervisor keeps ready: imports done, waiting on its stdin.
        before = log.stat().st_size
        spare = stack.service_popen(cfg, name, warm_spare=True)
        deadline = time.monotonic() + 60
        while "imported" not in log_times(log, before) and time.monotonic() < deadline:  # noqa: ASYNC110 (polling a log file)
            await asyncio.sleep(0.1)
    if pid is not None:
        sig = signal.SIGTERM if mode.startswith("SIGTERM") else signal.SIGKILL
        await asyncio.to_thread(stack.stop_pid, pid, stack.SERVICE_STOP_S, sig)
    # After the old process is gone: one stopped with SIGTERM would still consume it.
    tp, offset = await probe(cfg.bootstrap, CONSUMES[name])
    log_offset = log.stat().st_size if log.exists() else 0
    spawned = time.time()
    if spare is not None:
        assert spare.stdin is not None
        spare.stdin.write(b"go\n")
        spare.stdin.close()
        new_pid = spare.pid
    else:
        new_pid = stack.start_service(cfg, name)
    times: dict[str, float] = {}
    admin = AIOKafkaAdminClient(bootstrap_servers=cfg.bootstrap)
    await admin.start()
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            deadline = time.monotonic() + 120
            while not {"consumed", "healthy"} <= set(times) and time.monotonic() < deadline:
                now = time.time()
                if "healthy" not in times:
                    try:
                        r = await client.get(f"{cfg.url(name)}/health")
                        if r.status_code == 200:
                            times["healthy"] = now - spawned
                    except httpx.HTTPError:
                        pass
                if "consumed" not in times and await committed(admin, name, tp) > offset:
                    times["consumed"] = time.time() - spawned
                await asyncio.sleep(0.05)
    finally:
        await admin.close()
    for phase, at in log_times(log, log_offset).items():
        times[phase] = at - spawned
    return new_pid, times


async def main(args: argparse.Namespace) -> None:
    data_dir = make_data_dir()
    cfg = stack.StackConfig(data_dir=data_dir, ports=stack.StackPorts.from_base(args.port_base))
    cfg.broker_storage = args.broker_storage
    cfg.service_env.update(stack.FAST_REJOIN_ENV)  # as `claimflow stack up` runs them
    if args.session_timeout_ms:
        cfg.service_env["CLAIMFLOW_CONSUMER_SESSION_TIMEOUT_MS"] = str(args.session_timeout_ms)
    if args.heartbeat_interval_ms:
        cfg.service_env["CLAIMFLOW_CONSUMER_HEARTBEAT_INTERVAL_MS"] = str(
            args.heartbeat_interval_ms
        )
    name = args.service
    broker_pids: list[int] = []
    pid: int | None = None
    modes = ("SIGKILL", "SIGTERM", "SIGKILL, warm spare", "SIGTERM, warm spare")
    results: dict[str, list[dict[str, float]]] = {"first start": [], **{m: [] for m in modes}}
    try:
        await asyncio.to_thread(stack.start_postgres, cfg)
        broker_pids = await asyncio.to_thread(stack.start_broker_stack, cfg)
        await stack.create_topics(cfg.bootstrap, cfg.partitions)
        # The first start applies the migrations; every later one finds them applied.
        pid, times = await one_start(cfg, name, "first start", None)
        results["first start"].append(times)
        for round_no in range(1, args.rounds + 1):
            for mode in modes:
                pid, times = await one_start(cfg, name, mode, pid)
                results[mode].append(times)
                console.print(
                    f"round {round_no} after {mode}: "
                    + ", ".join(f"{p} {times[p]:.2f}s" for p in PHASES if p in times)
                )
    finally:
        if pid is not None:
            stack.stop_pid(pid, timeout=stack.SERVICE_STOP_S)
        stack.stop_broker_stack(broker_pids)
        await asyncio.to_thread(stack.stop_postgres, cfg)
        shutil.rmtree(data_dir, ignore_errors=True)

    table = Table(
        title=f"{name} start-up, seconds from spawn (median of {args.rounds}; "
        f"broker storage {cfg.broker_storage}, session timeout "
        f"{cfg.service_env.get('CLAIMFLOW_CONSUMER_SESSION_TIMEOUT_MS', '3000')} ms)"
    )
    table.add_column("restart after")
    for phase in PHASES:
        table.add_column(phase, justify="right")
    for mode, rows in results.items():
        cells = [mode]
        for phase in PHASES:
            values = [r[phase] for r in rows if phase in r]
            cells.append(f"{statistics.median(values):.2f}" if values else "-")
        table.add_row(*cells)
    console.print(table)


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--service", choices=stack.SERVICES, default="payout")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--broker-storage", choices=stack.BROKER_STORAGES, default=stack.DEFAULT_BROKER_STORAGE
    )
    parser.add_argument("--session-timeout-ms", type=int, default=None)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=None)
    parser.add_argument("--port-base", type=int, default=25970)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
