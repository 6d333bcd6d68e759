"""The cost of issue 12 on the write path: events/s through the unit of work with and
without the audit chain and event signing, and of verifying signatures on the read
path, all in the same run on the same PostgreSQL.

    .venv/bin/python -m bench.audit_cost --events 3000 --rounds 3

Starts its own PostgreSQL (ports from --port-base, data in a temporary folder). Per round
and variant, N events are emitted through ``UnitOfWorkFactory.acquire`` in units of work
of --per-unit events each (1: one transaction per event, a command's shape; 10: a
consumer batch's shape), each event on its own claim chain:

* plain: emit + outbox row (the shape before issue 12);
* chained: + ``audit_hook`` (lock the chain head, hash, insert entry, move head);
* signed: + the RFC 8785 envelope bytes signed with Ed25519 at stage time;
* chained+signed: both (what the services run);
* verify: ``EventVerifier.check`` of N signed events (CPU only, what a consumer adds).

By default the bench's connections commit with ``synchronous_commit = off``: the fsync
per commit is the same for every variant and on a shared machine it swamps the rest;
``--durable`` keeps it.

A benchmark, not a test: the machine is shared and noisy; compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
import uuid
from datetime import UTC, datetime

import asyncpg
from rich.console import Console
from rich.table import Table

from bench.relay_pipeline import make_data_dir
from shared.audit.chain import audit_hook
from shared.audit.keys import KeyRing, ServiceKey
from shared.contracts import BankAccount, EventEnvelope, ReviewDecidedV1
from shared.contracts.topics import REVIEW_EVENTS
from shared.db import create_pool, migrate
from shared.devstack import stack
from shared.messaging import signing
from shared.unit_of_work import UnitOfWorkFactory

console = Console()
PAYEE = BankAccount(bank_name="bench", account_name="bench", account_number="12345678")
VARIANTS = ("plain", "chained", "signed", "chained+signed")


def payload() -> ReviewDecidedV1:
    return ReviewDecidedV1(
        decision="approved",
        approved_amount_fen=123_456_78,
        claim_kind="vat_refund",
        payee=PAYEE,
        claim_received_at=datetime(2026, 11, 27, tzinfo=UTC),
    )


async def write_round(
    pool: asyncpg.Pool, schema: str, variant: str, n: int, per_unit: int
) -> float:
    hooks = (audit_hook,) if "chained" in variant else ()
    if "signed" in variant:
        signing.install_signer(schema, ServiceKey.generate(schema))
    else:
        signing.remove_signer(schema)
    uows = UnitOfWorkFactory(schema, REVIEW_EVENTS, hooks=hooks)
    event = payload()
    start = time.perf_counter()
    for _ in range(n // per_unit):
        async with uows.acquire(pool) as uow:
            for _ in range(per_unit):
                uow.emit(event, claim_id=uuid.uuid4())
    elapsed = time.perf_counter() - start
    signing.remove_signer(schema)
    return (n // per_unit) * per_unit / elapsed


def verify_round(n: int) -> float:
    key = ServiceKey.generate("review")
    verifier = signing.EventVerifier(KeyRing.of([key]))
    records = []
    for _ in range(n):
        value = signing.envelope_bytes(
            EventEnvelope.wrap(payload(), claim_id=uuid.uuid4(), producer="review")
        )
        records.append((value, signing.signed_headers(key.key_id, signing.sign(key, value))))
    start = time.perf_counter()
    for value, headers in records:
        verifier.check(value, headers)
    return n / (time.perf_counter() - start)


async def main(args: argparse.Namespace) -> None:
    data_dir = make_data_dir()
    cfg = stack.StackConfig(data_dir=data_dir, ports=stack.StackPorts.from_base(args.port_base))
    migrations = data_dir / "no-service-migrations"
    await asyncio.to_thread(migrations.mkdir)
    rows: dict[str, list[float]] = {v: [] for v in (*VARIANTS, "verify")}
    try:
        await asyncio.to_thread(stack.start_postgres, cfg)
        schema = "bench_audit"
        await migrate(cfg.dsn, schema, migrations)
        pool = await create_pool(cfg.dsn, schema)
        if not args.durable:
            # The fsync of each commit is the same for every variant and, on a shared
            # machine, swamps what issue 12 adds; --durable measures with it.
            await pool.close()
            pool = await asyncpg.create_pool(
                cfg.dsn,
                min_size=2,
                max_size=4,
                server_settings={"search_path": schema, "synchronous_commit": "off"},
            )
            assert pool is not None
        try:
            for round_no in range(1, args.rounds + 1):
                # Interleaved, so drift on a shared machine hits every variant alike.
                for variant in VARIANTS:
                    rows[variant].append(
                        await write_round(pool, schema, variant, args.events, args.per_unit)
                    )
                rows["verify"].append(verify_round(args.events))
                console.print(
                    f"round {round_no}: " + ", ".join(f"{v} {rows[v][-1]:,.0f}/s" for v in rows)
                )
        finally:
            await pool.close()
    finally:
        await asyncio.to_thread(stack.stop_postgres, cfg)
        shutil.rmtree(data_dir, ignore_errors=True)

    table = Table(
        title=f"issue 12 cost: {args.events:,} events, {args.per_unit} per unit of work, "
        f"synchronous_commit {'on' if args.durable else 'off'}"
    )
    table.add_column("variant")
    table.add_column("events/s (median)", justify="right")
    table.add_column("vs plain", justify="right")
    plain = statistics.median(rows["plain"])
    for variant, values in rows.items():
        median = statistics.median(values)
        ratio = f"{median / plain:.2f}" if variant != "verify" else "(CPU only)"
        table.add_row(variant, f"{median:,.0f}", ratio)
    console.print(table)
    both = statistics.median(rows["chained+signed"])
    print(
        f"audit chain + signing: {both:,.0f} events/s with, {plain:,.0f} without "
        f"({both / plain:.2f}x), verify {statistics.median(rows['verify']):,.0f}/s"
    )


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-unit", type=int, default=1)
    parser.add_argument("--port-base", type=int, default=25950)
    parser.add_argument(
        "--durable", action="store_true", help="keep synchronous_commit on (fsync per unit)"
    )
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    cli()
