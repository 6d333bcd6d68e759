"""Gauges computed from whole-table counts (claims with documents pending, open review
tasks) are exported by one instance of a service only. Every instance reads the same
tables, so two instances would export the same number twice and a dashboard's
``sum by (...)`` would double it.

The exporter is whoever holds a PostgreSQL session advisory lock named after the
gauges, on a connection it keeps for that purpose: when that instance stops or loses
its connection, the lock goes with the session and the next instance to ask takes it
over. The others clear their copies of the gauges, so no stale series remains.
"""

from __future__ import annotations

import contextlib
import logging

import asyncpg
from prometheus_client import Gauge

log = logging.getLogger(__name__)

# What a lost or broken connection raises. A session the server ended can leave the
# client's protocol mid-operation, which asyncpg reports as an InternalClientError.
_LOST = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)


class SingleExporter:
    def __init__(self, name: str, gauges: list[Gauge]) -> None:
        self.name = name
        self.gauges = gauges
        self._conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record] | None = None
        self._pool: asyncpg.Pool | None = None

    async def holds(self, pool: asyncpg.Pool) -> bool:
        """True when this instance exports the gauges (it holds the lock)."""
        if self._conn is not None and not self._conn.is_closed():
            try:
                # The session lives, so its lock does (a server restart ends both).
                await self._conn.fetchval("SELECT 1")
                return True
            except _LOST:
                log.warning("lost the connection holding the %s gauge lock", self.name)
        await self.release()
        got = False
        try:
            conn = await pool.acquire()
        except _LOST:
            # Unsure who exports: withdraw ours rather than fail the caller's loop.
            log.warning("could not ask for the %s gauge lock", self.name)
        else:
            try:
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_lock(hashtext('claimflow_table_gauges:' || $1))",
                    self.name,
                )
            except _LOST:
                log.warning("could not ask for the %s gauge lock", self.name)
            finally:
                if not got:
                    await pool.release(conn)
        if not got:
            for gauge in self.gauges:
                gauge.clear()  # another instance exports them (or we cannot tell)
            return False
        log.info("this instance exports the %s gauges", self.name)
        self._conn, self._pool = conn, pool
        return True

    async def release(self) -> None:
        if self._conn is not None and self._pool is not None:
            conn, pool = self._conn, self._pool
            self._conn = self._pool = None
            unlocked = False
            try:
                if not conn.is_closed():
                    unlocked = await conn.fetchval(
                        "SELECT pg_advisory_unlock(hashtext('claimflow_table_gauges:' || $1))",
                        self.name,
                    )
            except _LOST:
                # A broken session took its lock with it (and a lost connection is
                # already back in the pool).
                log.warning("could not release the %s gauge lock cleanly", self.name)
            finally:
                if not unlocked:
                    # The pool does not reset sessions (shared/db.py keep_session): a
                    # session that may still hold the lock must not serve anyone else.
                    # (A lost one is back in the pool already, as a dead connection.)
                    with contextlib.suppress(asyncpg.InterfaceError):
                        conn.terminate()
            try:
                # Always handed back, so the pool never leaks it (its close would wait);
                # a terminated connection is replaced by a new one.
                await pool.release(conn)
            except _LOST:
                log.warning("could not return the %s gauge connection cleanly", self.name)
