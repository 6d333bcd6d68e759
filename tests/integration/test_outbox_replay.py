"""Issue 14, 1(a): no claim lost when the broker loses data.

A real tansu on MEMORY storage of its own (it forgets everything when it stops) under a
real outbox relay: events are published and consumed, the broker is SIGKILLed and started
again empty, and the relay notices (log-end offset below what was acknowledged, an
acknowledged offset going backwards, a new cluster id) and publishes the lost rows again;
a consumer receives them, and its inbox applies each event once.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.contracts import EventEnvelope
from shared.contracts.topics import REVIEW_EVENTS
from shared.db import DbConnection
from shared.devstack import stack
from shared.messaging.consumer import IdempotentBatchConsumer
from shared.messaging.epochs import ConsumerEpochs
from shared.messaging.membership import AssignmentHook
from shared.messaging.outbox import OutboxRelay, replay_since, stage_events
from tests.conftest import PORT_BASE
from tests.integration import helpers
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

EVENTS = 30


class MemoryBroker:
    """tansu on memory storage, on ports of its own (the session's broker stays up)."""

    def __init__(self, data_dir: Path) -> None:
        self.cfg = stack.StackConfig(
            data_dir=data_dir, ports=stack.StackPorts.from_base(PORT_BASE + 42)
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, cluster_id: str = "claimflow-test-memory") -> None:
        """The same cluster id at every start unless told (the stack's memory broker takes
        a new one each time; these tests choose)."""
        cmd, env = stack.broker_command(self.cfg, cluster_id=cluster_id)
        log = open(self.cfg.data_dir / "broker.log", "ab")  # noqa: SIM115 - held by the child
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        stack.wait_broker(self.cfg)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    @property
    def bootstrap(self) -> str:
        return self.cfg.bootstrap


@pytest.fixture
def memory_broker(tmp_path: Path) -> Iterator[MemoryBroker]:
    broker = MemoryBroker(tmp_path)
    try:
        yield broker
    finally:
        if broker.proc is not None:
            broker.kill()


@pytest.fixture
async def schema(
    infra: stack.StackConfig, tmp_path: Path
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    async with helpers.scratch_schema(
        infra.dsn, tmp_path, "CREATE TABLE effects (event_id uuid, claim_id uuid);"
    ) as made:
        yield made


async def read_topic(bootstrap: str, topic: str, want: int, timeout: float = 20) -> list[bytes]:
    """Every message of the topic from the beginning, until ``want`` were read."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in partitions or ()]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(values) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            values += [r.value for rs in batches.values() for r in rs if r.value is not None]
    finally:
        await consumer.stop()
    return values


async def consume_into_inbox(
    consumer: IdempotentBatchConsumer, bootstrap: str, want: int
) -> set[str]:
    """Read the topic from the beginning and hand every message to the consumer."""
    consumer_reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=10
    )
    await consumer_reader.start()
    seen: set[str] = set()
    try:
        partitions = consumer_reader.partitions_for_topic(REVIEW_EVENTS) or set()
        tps = [TopicPartition(REVIEW_EVENTS, p) for p in partitions]
        consumer_reader.assign(tps)
        await consumer_reader.seek_to_beginning(*tps)
        deadline = time.monotonic() + 20
        while len(seen) < want and time.monotonic() < deadline:
            batches = await consumer_reader.getmany(timeout_ms=200)
            records = [r for rs in batches.values() for r in rs]
            if records:
                await consumer.handle_batch(records)
                seen |= {EventEnvelope.model_validate_json(r.value).event_id.hex for r in records}
    finally:
        await consumer_reader.stop()
    return seen


async def stage(pool: asyncpg.Pool, name: str, n: int) -> list[EventEnvelope]:
    envelopes = [helpers.decided() for _ in range(n)]
    async with pool.acquire() as conn, conn.transaction():
        await stage_events(conn, name, REVIEW_EVENTS, envelopes)
    return envelopes


def recorded_cluster(pool: asyncpg.Pool) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(await pool.fetchval("SELECT cluster_id FROM outbox_broker_cluster"))

    return check


def all_published(pool: asyncpg.Pool, replays: int = 0) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        waiting = await pool.fetchval(
            """SELECT count(*) FROM outbox
               WHERE published_offset IS NULL OR replays < $1""",
            replays,
        )
        return bool(waiting == 0)

    return check


def relay_for(name: str, pool: asyncpg.Pool, dsn: str, bootstrap: str, **kw: float) -> OutboxRelay:
    return OutboxRelay(
        pool=pool,
        dsn=dsn,
        schema=name,
        bootstrap_servers=bootstrap,
        poll_interval_s=0.2,
        send_timeout_s=3.0,
        **kw,  # type: ignore[arg-type]
    )


async def test_a_memory_broker_restart_is_repaired_by_the_relay_and_the_inbox_applies_once(
    infra: stack.StackConfig, schema: tuple[str, asyncpg.Pool], memory_broker: MemoryBroker
) -> None:
    name, pool = schema
    memory_broker.start()
    await stack.create_topics(memory_broker.bootstrap, 3)
    relay = relay_for(name, pool, infra.dsn, memory_broker.bootstrap, broker_check_interval_s=0.5)
    await relay.start()
    effects = 0

    async def handle(conn: DbConnection, env: EventEnvelope) -> None:
        nonlocal effects
        effects += 1
        await conn.execute("INSERT INTO effects VALUES ($1, $2)", env.event_id, env.claim_id)

    inbox = IdempotentBatchConsumer(
        service="t", schema=name, pool=pool, handlers={"review.decided": handle}
    )
    try:
        sent = await stage(pool, name, EVENTS)
        await wait_for(all_published(pool), 20, "every row published with its offset")
        landed = await pool.fetch(
            "SELECT published_partition AS p, published_offset AS o FROM outbox"
        )
        # Every row knows where it landed; per partition the offsets are 0..n-1.
        by_partition: dict[int, list[int]] = {}
        for row in landed:
            by_partition.setdefault(row["p"], []).append(row["o"])
        assert {p: sorted(o) for p, o in by_partition.items()} == {
            p: list(range(len(o))) for p, o in by_partition.items()
        }
        assert len(await consume_into_inbox(inbox, memory_broker.bootstrap, EVENTS)) == EVENTS
        assert effects == EVENTS

        # The broker dies and comes back empty (memory storage): 30 acknowledged events
        # are gone. The supervisor would create the topics again; here the test does.
        memory_broker.kill()
        memory_broker.start()
        await stack.create_topics(memory_broker.bootstrap, 3)

        await wait_for(all_published(pool, replays=1), 30, "every lost row published again")
        replays = await pool.fetch("SELECT reason, rows, from_offset, detail FROM outbox_replays")
        assert sum(r["rows"] for r in replays) == EVENTS, replays
        # The broker came back empty: every partition's log ended at 0.
        assert {(r["reason"], r["from_offset"]) for r in replays} == {("log_end_below_mark", 0)}
        assert all(r["detail"].startswith("log-end offset 0,") for r in replays)
        assert relay.replayed_total == EVENTS

        # A consumer reading the new log gets them all: its inbox applies none twice.
        again = await consume_into_inbox(inbox, memory_broker.bootstrap, EVENTS)
        assert again == {e.event_id.hex for e in sent}
        assert effects == EVENTS
        # Nothing lost and nothing twice on the new log either; new events flow on.
        await stage(pool, name, 5)
        await wait_for(all_published(pool), 20, "the new rows published")
        values = await read_topic(memory_broker.bootstrap, REVIEW_EVENTS, EVENTS + 5)
        assert len(values) == EVENTS + 5
        assert len(await consume_into_inbox(inbox, memory_broker.bootstrap, EVENTS + 5)) == 35
        assert effects == EVENTS + 5
        assert await pool.fetchval("SELECT count(*) FROM effects") == EVENTS + 5
    finally:
        await relay.stop()


async def test_an_acknowledged_offset_going_backwards_puts_the_lost_rows_back(
    infra: stack.StackConfig, schema: tuple[str, asyncpg.Pool], memory_broker: MemoryBroker
) -> None:
    """No periodic check (an hour apart): the first send after the restart is
    acknowledged at offset 0, below the mark, and that alone reveals the loss."""
    name, pool = schema
    memory_broker.start()
    await stack.create_topics_named(memory_broker.bootstrap, [REVIEW_EVENTS], 1)
    relay = relay_for(name, pool, infra.dsn, memory_broker.bootstrap, broker_check_interval_s=3600)
    await relay.start()
    try:
        first = await stage(pool, name, 10)
        await wait_for(all_published(pool), 20, "the first rows published")
        memory_broker.kill()
        memory_broker.start()
        await stack.create_topics_named(memory_broker.bootstrap, [REVIEW_EVENTS], 1)
        later = await stage(pool, name, 1)
        await wait_for(all_published(pool), 30, "the rows published again")
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE replays = 1") == 10
        reasons = await pool.fetch("SELECT reason, rows FROM outbox_replays")
        assert [(r["reason"], r["rows"]) for r in reasons] == [("offset_regressed", 10)]
        values = await read_topic(memory_broker.bootstrap, REVIEW_EVENTS, 11)
        ids = {EventEnvelope.model_validate_json(v).event_id for v in values}
        assert ids == {e.event_id for e in first + later}
    finally:
        await relay.stop()


async def test_a_new_cluster_id_publishes_every_kept_row_again(
    infra: stack.StackConfig, schema: tuple[str, asyncpg.Pool], memory_broker: MemoryBroker
) -> None:
    name, pool = schema
    memory_broker.start()
    await stack.create_topics(memory_broker.bootstrap, 3)
    relay = relay_for(name, pool, infra.dsn, memory_broker.bootstrap, broker_check_interval_s=0.5)
    await relay.start()
    try:
        await stage(pool, name, 6)
        await wait_for(all_published(pool), 20, "the rows published")
        await wait_for(recorded_cluster(pool), 20, "a check has recorded the cluster id")
        # Failed sends in the rows' past (a broker trouble long gone): a row published
        # again starts from none, so failures do not add up over replays to a quarantine.
        await pool.execute("UPDATE outbox SET attempts = 4")
        memory_broker.kill()
        memory_broker.start(cluster_id="another-cluster")
        await stack.create_topics(memory_broker.bootstrap, 3)
        await wait_for(all_published(pool, replays=1), 30, "every row published again")
        reasons = await pool.fetch("SELECT reason, rows FROM outbox_replays")
        assert [(r["reason"], r["rows"]) for r in reasons] == [("cluster_changed", 6)]
        assert await pool.fetchval("SELECT max(attempts) FROM outbox") == 0
        assert await pool.fetchval("SELECT cluster_id FROM outbox_broker_cluster") == (
            "another-cluster"
        )
    finally:
        await relay.stop()


async def test_an_operator_replay_sends_what_was_published_since_a_time(
    infra: stack.StackConfig, schema: tuple[str, asyncpg.Pool], memory_broker: MemoryBroker
) -> None:
    name, pool = schema
    memory_broker.start()
    await stack.create_topics(memory_broker.bootstrap, 3)
    relay = relay_for(name, pool, infra.dsn, memory_broker.bootstrap, broker_check_interval_s=60)
    await relay.start()
    try:
        await stage(pool, name, 4)
        await wait_for(all_published(pool), 20, "the first rows published")
        since = datetime.now(UTC)
        await asyncio.sleep(0.1)
        await stage(pool, name, 3)
        await wait_for(all_published(pool), 20, "the later rows published")
        conn = await asyncpg.connect(infra.dsn)
        try:
            assert await replay_since(conn, name, since, by="test") == 3
            assert await replay_since(conn, name, since + timedelta(hours=1), by="test") == 0
        finally:
            await conn.close()
        await wait_for(all_published(pool), 20, "the replayed rows published again")
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE replays = 1") == 3
        values = await read_topic(memory_broker.bootstrap, REVIEW_EVENTS, 10)
        assert len(values) == 10  # 7 + the 3 again; consumers' inboxes drop the repeats
    finally:
        await relay.stop()


async def test_published_rows_older_than_the_retention_are_deleted(
    infra: stack.StackConfig, schema: tuple[str, asyncpg.Pool]
) -> None:
    name, pool = schema
    relay = relay_for(name, pool, infra.dsn, infra.bootstrap, retention_s=3600)
    await stage(pool, name, 3)
    await pool.execute(
        """UPDATE outbox SET published_at = now() - interval '2 hours',
                             published_partition = 0, published_offset = id
           WHERE id = (SELECT min(id) FROM outbox)"""
    )
    await pool.execute(
        """UPDATE outbox SET published_at = now() - interval '10 minutes',
                             published_partition = 0, published_offset = id
           WHERE id = (SELECT max(id) FROM outbox)"""
    )
    assert await relay.prune() == 1
    # The recent published row and the unpublished one stay.
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 2


async def test_a_consumer_reads_a_replaced_log_from_its_beginning(
    infra: stack.StackConfig, schema: tuple[str, asyncpg.Pool], memory_broker: MemoryBroker
) -> None:
    """The case the relays' replay alone left open: the broker restarted empty (a new
    cluster id), an offset from the old log was committed to the new broker by a process
    that lived through the restart, and the relays' re-publishing has grown the new log
    past that offset. A consumer of the group starting there would skip the new log's
    first messages; the epochs make it read the partition from its beginning."""
    name, pool = schema
    group = f"g-{name}"
    tp = TopicPartition(REVIEW_EVENTS, 0)
    epochs = ConsumerEpochs(pool, name)

    async def member() -> AIOKafkaConsumer:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=memory_broker.bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
        )
        await consumer.start()
        consumer.assign([tp])
        return consumer

    async def produce(n: int) -> list[bytes]:
        values = [f"m-{time.monotonic_ns()}-{i}".encode() for i in range(n)]
        producer = AIOKafkaProducer(bootstrap_servers=memory_broker.bootstrap)
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(REVIEW_EVENTS, value, partition=0)
        finally:
            await producer.stop()
        return values

    async def read_all(consumer: AIOKafkaConsumer, want: int) -> list[bytes]:
        got: list[bytes] = []
        deadline = time.monotonic() + 15
        while len(got) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            got += [r.value for rs in batches.values() for r in rs if r.value is not None]
        return got

    memory_broker.start(cluster_id="before-the-restart")
    await stack.create_topics_named(memory_broker.bootstrap, [REVIEW_EVENTS], 1)
    await produce(10)
    old = await member()
    try:
        assert await epochs.reconcile(old, [tp]) == []  # first sight: recorded, no rewind
        assert len(await read_all(old, 10)) == 10
        await old.commit()
    finally:
        await old.stop()
    assert await pool.fetchval("SELECT cluster_id FROM consumer_broker_epochs") == (
        "before-the-restart"
    )

    memory_broker.kill()
    memory_broker.start(cluster_id="after-the-restart")
    await stack.create_topics_named(memory_broker.bootstrap, [REVIEW_EVENTS], 1)
    new_log = await produce(14)  # re-published and new events, past the old offset 10
    survivor = await member()  # the process that lived through the restart
    try:
        await survivor.commit({tp: 10})  # its old position, committed to the new broker
    finally:
        await survivor.stop()

    # The replacement joins the group as a service does: its rebalance listener checks the
    # epochs inside the assignment, before the first fetch.
    hook = AssignmentHook("t", group=group, member_dir=None)
    hook.epochs = epochs
    replacement = AIOKafkaConsumer(
        bootstrap_servers=memory_broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    hook.source = SimpleNamespace(consumer=replacement)
    await replacement.start()
    try:
        assert await replacement.committed(tp) == 10
        replacement.subscribe([REVIEW_EVENTS], listener=hook)
        assert await read_all(replacement, 14) == new_log  # not just offsets 10-13
        assert epochs.rewound == 1 and not hook.unreconciled
        assert await replacement.committed(tp) == 0  # committed before the id is recorded
    finally:
        await replacement.stop()
    assert await pool.fetchval("SELECT cluster_id FROM consumer_broker_epochs") == (
        "after-the-restart"
    )


async def test_after_a_loss_rows_a_reader_cannot_find_at_their_offset_go_again(
    infra: stack.StackConfig, schema: tuple[str, asyncpg.Pool], memory_broker: MemoryBroker
) -> None:
    """After a memory broker's restart tansu once acknowledged a batch at offsets an
    earlier batch held; a sequential reader found the earlier batch's events there and
    never the later ones. Such a row is made here by recording for one re-published row
    the offset of another (what the broker's acknowledgement said, in effect): in the
    window after the loss the relay reads its rows back as a consumer does and sends
    again the one a reader does not find — and only that one."""
    name, pool = schema
    memory_broker.start()
    await stack.create_topics_named(memory_broker.bootstrap, [REVIEW_EVENTS], 1)
    relay = relay_for(name, pool, infra.dsn, memory_broker.bootstrap, broker_check_interval_s=0.5)
    await relay.start()
    try:
        staged = await stage(pool, name, 5)
        await wait_for(all_published(pool), 20, "the rows published")
        await wait_for(recorded_cluster(pool), 20, "a check has recorded the cluster id")
        memory_broker.kill()
        memory_broker.start(cluster_id="after-the-restart")
        await stack.create_topics_named(memory_broker.bootstrap, [REVIEW_EVENTS], 1)
        await wait_for(all_published(pool, replays=1), 30, "every row published again")
        shadowed, holder = await pool.fetch(
            "SELECT id, event_id, published_offset FROM outbox ORDER BY id DESC LIMIT 2"
        )
        await pool.execute(
            "UPDATE outbox SET published_offset = $2 WHERE id = $1",
            shadowed["id"],
            holder["published_offset"],
        )

        async def put_back_as_unreadable() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(*) FROM outbox_replays WHERE reason = 'unreadable'"
                )
            )

        await wait_for(put_back_as_unreadable, 30, "the unreadable row found")
        await wait_for(all_published(pool, replays=1), 30, "it published again")
        replays = {
            r["event_id"]: r["replays"]
            for r in await pool.fetch("SELECT event_id, replays FROM outbox")
        }
        assert replays[shadowed["event_id"]] == 2
        assert sorted(replays.values()) == [1, 1, 1, 1, 2]  # the others once, for the restart
        assert (
            await pool.fetchval("SELECT rows FROM outbox_replays WHERE reason = 'unreadable'") == 1
        )
        values = await read_topic(memory_broker.bootstrap, REVIEW_EVENTS, 6)
        ids = {EventEnvelope.model_validate_json(v).event_id for v in values}
        assert ids == {e.event_id for e in staged}
    finally:
        await relay.stop()
