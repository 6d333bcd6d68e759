"""What a durable broker costs: tansu with memory storage against tansu with S3 storage
(a local SeaweedFS), measured in the same run, rounds alternating.

    .venv/bin/python -m bench.broker_storage --events 5000 --rounds 3

Starts PostgreSQL, a memory tansu, a SeaweedFS S3 server and an S3 tansu (ports from
--port-base, data in a temporary folder) through the project's stack code, then per round
and per broker runs the two rounds of bench.relay_pipeline:

* raw: three forwarding hops of plain Kafka clients, no database;
* claimflow: three hops through the real outbox relay and IdempotentBatchConsumer.

Also times a broker restart on each storage (stop, start, first successful metadata
request) and checks what the restarted broker still has. A benchmark, not a test: the
machine is shared and noisy, compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
import uuid
from dataclasses import replace

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from rich.table import Table

from bench.relay_pipeline import claimflow_round, make_data_dir, make_topics, raw_round
from shared.devstack import stack

console = Console()


async def restart_keeps(cfg: stack.StackConfig, pid: int, n: int = 200) -> tuple[int, float, int]:
    """Publish n events, restart the broker; (new pid, seconds until it answers, events
    still readable afterwards)."""
    topic = f"bench.restart.{uuid.uuid4().hex[:8]}"
    await make_topics(cfg.bootstrap, [topic], 3)
    producer = AIOKafkaProducer(bootstrap_servers=cfg.bootstrap, acks="all")
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, b"x", key=b"%d" % i) for i in range(n)])
    finally:
        await producer.stop()
    await asyncio.to_thread(stack.stop_pid, pid)
    started = time.perf_counter()
    new_pid = await asyncio.to_thread(stack.start_broker, cfg)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=cfg.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    back = time.perf_counter() - started
    seen = 0
    try:
        deadline = time.monotonic() + 10
        while seen < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            seen += sum(len(v) for v in batches.values())
    finally:
        await consumer.stop()
    return new_pid, back, seen


async def main(args: argparse.Namespace) -> None:
    data_dir = make_data_dir()
    base = args.port_base
    mem = stack.StackConfig(
        data_dir=data_dir, ports=stack.StackPorts.from_base(base), broker_storage="memory"
    )
    # Same PostgreSQL; the S3 broker on the first port after the S3 server's.
    s3 = replace(
        mem,
        ports=replace(mem.ports, broker=base + 7 + stack.OBJECT_STORE_PORTS),
        broker_storage="s3",
    )
    migrations = data_dir / "no-service-migrations"
    await asyncio.to_thread(migrations.mkdir)
    pids: dict[str, int] = {}
    rows: dict[str, list[tuple[float, float]]] = {"memory": [], "s3": []}
    restarts: dict[str, tuple[float, int]] = {}
    try:
        await asyncio.to_thread(stack.start_postgres, mem)
        pids["memory"] = await asyncio.to_thread(stack.start_broker, mem)
        pids["weed"] = await asyncio.to_thread(stack.start_object_store, s3)
        pids["s3"] = await asyncio.to_thread(stack.start_broker, s3)
        for round_no in range(1, args.rounds + 1):
            for name, cfg in (("memory", mem), ("s3", s3)):
                raw = await raw_round(cfg.bootstrap, args.events, args.partitions)
                cf = await claimflow_round(cfg, args.events, args.partitions, migrations)
                rows[name].append((raw, cf))
                console.print(f"round {round_no} {name}: raw {raw:,.0f}/s, claimflow {cf:,.0f}/s")
        for name, cfg in (("memory", mem), ("s3", s3)):
            pids[name], back, seen = await restart_keeps(cfg, pids[name])
            restarts[name] = (back, seen)
            console.print(f"{name}: restarted in {back:.2f}s, {seen} of 200 events still there")
    finally:
        for name in ("s3", "memory"):
            if name in pids:
                stack.stop_pid(pids[name])
        if "weed" in pids:
            stack.stop_pid(pids["weed"], timeout=stack.OBJECT_STORE_STOP_S)
        await asyncio.to_thread(stack.stop_postgres, mem)
        shutil.rmtree(data_dir, ignore_errors=True)

    table = Table(
        title=f"tansu storage, three hops, {args.events:,} events, {args.partitions} partitions"
    )
    for col in (
        "storage",
        "raw Kafka (events/s, median)",
        "claimflow outbox+inbox (events/s, median)",
        "restart → answering (s)",
        "events kept over a restart",
    ):
        table.add_column(col, justify="right")
    for name in ("memory", "s3"):
        raw_med = statistics.median(r[0] for r in rows[name])
        cf_med = statistics.median(r[1] for r in rows[name])
        back, seen = restarts.get(name, (float("nan"), 0))
        table.add_row(name, f"{raw_med:,.0f}", f"{cf_med:,.0f}", f"{back:.2f}", f"{seen}/200")
    mem_cf = statistics.median(r[1] for r in rows["memory"])
    s3_cf = statistics.median(r[1] for r in rows["s3"])
    console.print(table)
    console.print(f"claimflow throughput with s3 storage: {s3_cf / mem_cf:.0%} of memory storage")


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--port-base", type=int, default=25950)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
