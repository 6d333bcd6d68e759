"""Wake a polling loop when PostgreSQL says there is work: LISTEN on one channel.

``pg_notify`` is delivered when the notifying transaction commits, and only then, so a
loop woken this way never sees a change that was rolled back, and never misses one that
committed while it slept: it waits at most its poll interval either way. Without a
listening connection (the database restarting) it simply polls at that interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

log = logging.getLogger(__name__)


class Wakeup:
    def __init__(self, dsn: str, channel: str) -> None:
        self._dsn = dsn
        self.channel = channel
        self._event = asyncio.Event()
        self._conn: asyncpg.Connection | None = None

    def set(self) -> None:
        """Wake the waiter now (work found in-process, or stopping)."""
        self._event.set()

    async def listen(self) -> None:
        """Hold a listening connection; open it again when it was lost."""
        if self._conn is not None and not self._conn.is_closed():
            return
        try:
            self._conn = await asyncpg.connect(self._dsn)
            await self._conn.add_listener(self.channel, lambda *_: self._event.set())
        except (OSError, asyncpg.PostgresError) as exc:
            self._conn = None
            log.warning("cannot LISTEN on %s (polling only for now): %s", self.channel, exc)

    async def wait(self, timeout_s: float) -> bool:
        """Until notified (or set) or ``timeout_s`` passed, whichever is first; True when
        woken. A notification that came while nobody waited wakes the next wait."""
        woken = True
        try:
            await asyncio.wait_for(self._event.wait(), timeout=timeout_s)
        except TimeoutError:
            woken = False
        self._event.clear()
        return woken

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
