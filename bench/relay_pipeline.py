"""Throughput of three relay hops through claimflow's delivery mechanism, against a raw
Kafka baseline measured in the same run on the same broker.

    .venv/bin/python -m bench.relay_pipeline --events 20000 --rounds 3

Starts its own PostgreSQL and tansu (ports from --port-base, data in a temporary folder)
through the project's stack code, then per round:

* raw: produce N messages to topic 1; a consumer forwards every fetched batch to topic 2
  (send all, await all), another to topic 3, a last one counts. No database.
* claimflow: stage N events in an outbox; the relay publishes them; hop consumers run the
  real IdempotentBatchConsumer (inbox rows for the batch in one statement, a handler per
  event that stages the next event in the outbox, one transaction per fetched batch,
  offsets committed after it), each with its own relay, three hops; a last consumer counts.
* per-event (only with --per-event N): one transaction and one send_and_wait per event,
  the design the batch shape replaces.

Prints a table of events/s per round and the medians, and the ratio to the raw baseline.
A benchmark, not a test: the machine is shared and noisy, compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from shared.contracts import BankAccount, EventEnvelope, ReviewDecidedV1
from shared.db import DbConnection, create_pool, migrate
from shared.devstack import stack
from shared.messaging.consumer import IdempotentBatchConsumer
from shared.messaging.outbox import OutboxRelay, stage_events

PAYEE = BankAccount(bank_name="bench", account_name="bench", account_number="12345678")
console = Console()
BatchHandler = Callable[[list[Any]], Awaitable[None]]


def event(claim_id: uuid.UUID) -> EventEnvelope:
    return EventEnvelope.wrap(
        ReviewDecidedV1(
            decision="approved",
            approved_amount_fen=100,
            claim_kind="vat_refund",
            payee=PAYEE,
            claim_received_at=datetime.now(UTC),
        ),
        claim_id=claim_id,
        producer="bench",
    )


async def make_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


def consumer_for(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        max_poll_records=1000,
    )


async def run_consumer(
    consumer: AIOKafkaConsumer, on_batch: BatchHandler, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=50, max_records=1000)
        records = [r for rs in batches.values() for r in rs]
        if records:
            await on_batch(records)
            await consumer.commit()


class Arrivals:
    """The last hop: counts events and says when all have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = 0
        self.done = asyncio.Event()

    async def count(self, records: list[Any]) -> None:
        self.seen += len(records)
        if self.seen >= self.expected:
            self.done.set()


@contextlib.asynccontextmanager
async def hop_chain(
    bootstrap: str, topics: list[str], handlers: list[BatchHandler], group: str
) -> AsyncIterator[None]:
    """One consumer per topic, each handing its batches to its handler, joined and running."""
    consumers = [consumer_for(bootstrap, t, f"{group}-{i}") for i, t in enumerate(topics)]
    for c in consumers:
        await c.start()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(run_consumer(c, h, stop))
        for c, h in zip(consumers, handlers, strict=True)
    ]
    while not all(c.assignment() for c in consumers):  # noqa: ASYNC110 (no event to wait on)
        await asyncio.sleep(0.1)
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for c in consumers:
            await c.stop()


async def raw_round(bootstrap: str, n: int, partitions: int) -> float:
    tag = uuid.uuid4().hex[:8]
    topics = [f"bench.raw.{tag}.{i}" for i in range(4)]
    await make_topics(bootstrap, topics, partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    arrivals = Arrivals(n)

    def forwarder(target: str) -> BatchHandler:
        async def forward(records: list[Any]) -> None:
            futures = [await producer.send(target, value=r.value, key=r.key) for r in records]
            await asyncio.gather(*futures)

        return forward

    handlers = [forwarder(topics[1]), forwarder(topics[2]), forwarder(topics[3]), arrivals.count]
    async with hop_chain(bootstrap, topics, handlers, f"raw-{tag}"):
        payloads = [(event(uuid.uuid4()).to_bytes(), str(i).encode()) for i in range(n)]
        started = time.perf_counter()
        futures = [await producer.send(topics[0], value=v, key=k) for v, k in payloads]
        await asyncio.gather(*futures)
        await arrivals.done.wait()
        elapsed = time.perf_counter() - started
    await producer.stop()
    return n / elapsed


async def claimflow_round(cfg: stack.StackConfig, n: int, partitions: int, tmp: Path) -> float:
    tag = uuid.uuid4().hex[:8]
    topics = [f"bench.cf.{tag}.{i}" for i in range(3)]
    await make_topics(cfg.bootstrap, topics, partitions)
    schemas = [f"bench_{tag}_{i}" for i in range(3)]
    for schema in schemas:
        await migrate(cfg.dsn, schema, tmp)
    pools = [await create_pool(cfg.dsn, s, min_size=2, max_size=4) for s in schemas]
    relays = [
        OutboxRelay(pool=p, dsn=cfg.dsn, schema=s, bootstrap_servers=cfg.bootstrap)
        for p, s in zip(pools, schemas, strict=True)
    ]
    for relay in relays:
        await relay.start()
    arrivals = Arrivals(n)

    def next_hop(hop: int) -> BatchHandler:
        async def handle(conn: DbConnection, env: EventEnvelope) -> None:
            await stage_events(conn, schemas[hop], topics[hop], [event(env.claim_id)])

        consumer = IdempotentBatchConsumer(
            service=f"hop{hop}",
            schema=schemas[hop],
            pool=pools[hop],
            handlers={"review.decided": handle},
        )
        return consumer.handle_batch

    handlers = [next_hop(1), next_hop(2), arrivals.count]
    async with hop_chain(cfg.bootstrap, topics, handlers, f"cf-{tag}"):
        envelopes = [event(uuid.uuid4()) for _ in range(n)]
        started = time.perf_counter()
        async with pools[0].acquire() as conn:
            for i in range(0, n, 1000):
                async with conn.transaction():
                    await stage_events(conn, schemas[0], topics[0], envelopes[i : i + 1000])
        await arrivals.done.wait()
        elapsed = time.perf_counter() - started
    for relay in relays:
        await relay.stop()
    for p in pools:
        await p.close()
    return n / elapsed


async def per_event_round(cfg: stack.StackConfig, n: int, partitions: int, tmp: Path) -> float:
    """One transaction and one send_and_wait per event, over three hops."""
    tag = uuid.uuid4().hex[:8]
    topics = [f"bench.pe.{tag}.{i}" for i in range(4)]
    await make_topics(cfg.bootstrap, topics, partitions)
    schema = f"bench_pe_{tag}"
    await migrate(cfg.dsn, schema, tmp)
    conn = await asyncpg.connect(cfg.dsn, server_settings={"search_path": schema})
    producer = AIOKafkaProducer(bootstrap_servers=cfg.bootstrap)
    await producer.start()
    arrivals = Arrivals(n)
    lock = asyncio.Lock()

    def hop(target: str) -> BatchHandler:
        async def handle(records: list[Any]) -> None:
            for r in records:
                async with lock, conn.transaction():
                    env = EventEnvelope.model_validate_json(r.value)
                    await conn.execute(
                        "INSERT INTO inbox VALUES ($1, $2, $3, 0, 0, 'handled')",
                        str(env.event_id),
                        env.event_type,
                        target,
                    )
                    await producer.send_and_wait(target, value=event(env.claim_id).to_bytes())

        return handle

    handlers = [hop(topics[1]), hop(topics[2]), hop(topics[3]), arrivals.count]
    async with hop_chain(cfg.bootstrap, topics, handlers, f"pe-{tag}"):
        started = time.perf_counter()
        for _ in range(n):
            await producer.send_and_wait(topics[0], value=event(uuid.uuid4()).to_bytes())
        await arrivals.done.wait()
        elapsed = time.perf_counter() - started
    await producer.stop()
    await conn.close()
    return n / elapsed


def make_data_dir() -> Path:
    data_dir = Path(tempfile.mkdtemp(prefix="claimflow-bench-", dir="/tmp"))
    data_dir.chmod(0o755)  # the PostgreSQL server user must reach it
    return data_dir


async def main(args: argparse.Namespace) -> None:
    data_dir = make_data_dir()
    base = args.port_base
    cfg = stack.StackConfig(
        data_dir=data_dir,
        ports=stack.StackPorts.from_base(base),
        # Its published figures are on memory storage; bench.broker_storage compares both.
        broker_storage="memory",
    )
    migrations = data_dir / "no-service-migrations"
    await asyncio.to_thread(migrations.mkdir)
    broker_pid = None
    try:
        await asyncio.to_thread(stack.start_postgres, cfg)
        broker_pid = stack.start_broker(cfg)
        rows: list[tuple[int, float, float, float | None]] = []
        for round_no in range(1, args.rounds + 1):
            raw = await raw_round(cfg.bootstrap, args.events, args.partitions)
            cf = await claimflow_round(cfg, args.events, args.partitions, migrations)
            pe = (
                await per_event_round(cfg, args.per_event, args.partitions, migrations)
                if args.per_event
                else None
            )
            rows.append((round_no, raw, cf, pe))
            console.print(
                f"round {round_no}: raw {raw:,.0f}/s, claimflow {cf:,.0f}/s"
                + (f", per-event {pe:,.0f}/s" if pe else "")
            )
    finally:
        if broker_pid:
            stack.stop_pid(broker_pid)
        await asyncio.to_thread(stack.stop_postgres, cfg)
        shutil.rmtree(data_dir, ignore_errors=True)

    table = Table(title=f"three relay hops, {args.events:,} events, {args.partitions} partitions")
    for col in ("round", "raw Kafka (events/s)", "claimflow outbox+inbox (events/s)", "ratio"):
        table.add_column(col, justify="right")
    if args.per_event:
        table.add_column(
            f"per-event txn+send_and_wait ({args.per_event:,} events/s)", justify="right"
        )
    for round_no, raw, cf, pe in rows:
        cells = [str(round_no), f"{raw:,.0f}", f"{cf:,.0f}", f"{cf / raw:.2f}"]
        if args.per_event:
            cells.append(f"{pe:,.0f}")
        table.add_row(*cells)
    med_raw = statistics.median(r[1] for r in rows)
    med_cf = statistics.median(r[2] for r in rows)
    cells = ["median", f"{med_raw:,.0f}", f"{med_cf:,.0f}", f"{med_cf / med_raw:.2f}"]
    if args.per_event:
        cells.append(f"{statistics.median(r[3] or 0 for r in rows):,.0f}")
    table.add_row(*cells)
    console.print(table)


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument(
        "--per-event",
        type=int,
        default=0,
        help="also run the one-transaction-per-event design with this many events",
    )
    parser.add_argument("--port-base", type=int, default=25900)
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
