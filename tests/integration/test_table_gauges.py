"""Issue 9, item 15: gauges computed from whole-table counts are exported by one
instance of a service only, so two instances never double a dashboard's sum."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, Gauge

from shared.devstack.stack import StackConfig
from shared.table_gauges import SingleExporter

pytestmark = pytest.mark.integration


async def test_one_instance_exports_and_the_next_takes_over(infra: StackConfig) -> None:
    registry = CollectorRegistry()
    gauge = Gauge("t_pending", "test", ["kind"], registry=registry)
    first_pool = await asyncpg.create_pool(infra.dsn, min_size=1, max_size=3)
    second_pool = await asyncpg.create_pool(infra.dsn, min_size=1, max_size=3)
    assert first_pool is not None and second_pool is not None
    first, second = SingleExporter("t", [gauge]), SingleExporter("t", [gauge])
    try:
        assert await first.holds(first_pool)
        assert await first.holds(first_pool)  # still, without asking again
        gauge.labels("vat_refund").set(7)
        assert not await second.holds(second_pool)
        assert registry.get_sample_value("t_pending", {"kind": "vat_refund"}) is None
        await first.release()  # the first instance stops
        assert await second.holds(second_pool)
        assert not await first.holds(first_pool)
    finally:
        await first.release()
        await second.release()
        await first_pool.close()
        await second_pool.close()


async def test_release_after_the_session_died_returns_the_connection(infra: StackConfig) -> None:
    """A lock holder whose session the server ended releases without raising and hands
    its connection back, so the pool still closes (a leaked one would block close)."""
    gauge = Gauge("t_broken", "test", registry=CollectorRegistry())
    pool = await asyncpg.create_pool(infra.dsn, min_size=1, max_size=2)
    assert pool is not None
    exporter = SingleExporter("t_broken", [gauge])
    try:
        assert await exporter.holds(pool)
        pid = await exporter._conn.fetchval("SELECT pg_backend_pid()")  # type: ignore[union-attr]
        killer = await asyncpg.connect(infra.dsn)
        try:
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await killer.close()
        await exporter.release()
        await asyncio.wait_for(pool.close(), timeout=10)
    finally:
        pool.terminate()
