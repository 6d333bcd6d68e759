"""A consumer's group membership: what it does at each assignment, and taking a killed
consumer out of its group at once instead of after its session.

A SIGKILLed member sends no LeaveGroup: the group coordinator keeps it, and its
partitions, until its session times out, and a replacement's join waits for that (on
tansu with the stack's 3 s session: ~7 s from the kill to consuming again, measured).
A supervisor knows the moment a process dies. So each service notes its group member id
in a file when it is assigned partitions (``CLAIMFLOW_CONSUMER_MEMBER_DIR``), and the
supervisor, seeing the process gone, sends the LeaveGroup the process could not send
(~2 s from the kill to consuming again). Kubernetes would do the same from a preStop
hook or an operator; without one, the session timeout still ends the membership.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRebalanceListener
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.group import LeaveGroupRequest

from shared.messaging.epochs import ConsumerEpochs

log = logging.getLogger(__name__)


def member_file(member_dir: Path, service: str, pid: int) -> Path:
    return member_dir / f"{service}.{pid}.json"


class AssignmentHook(ConsumerRebalanceListener):  # type: ignore[misc]
    """What a service's consumer does each time it is assigned partitions, inside the
    rebalance (before it fetches, so a seek here is the position it reads from):

    * notes its group member id in its member file (with ``member_dir``);
    * reads again from the beginning the partitions last read under another broker
      cluster id (``epochs``, set once the service has its pool; shared/messaging/epochs.py).
      Done here and not from a timer: a seek made while a rebalance is under way is
      overwritten by the assignment that ends it.

    ``source``: the FastStream subscriber (its ``.consumer`` is the aiokafka consumer),
    set once the subscriber exists."""

    def __init__(self, service: str, group: str, member_dir: Path | None) -> None:
        self.service = service
        self.group = group
        self.path = None if member_dir is None else member_file(member_dir, service, os.getpid())
        self.source: Any = None
        self.epochs: ConsumerEpochs | None = None
        self.unreconciled: set[Any] = set()
        """Assigned partitions whose epochs could not be checked (the database was down):
        the consumer watch tries again (``retry``)."""

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        consumer = getattr(self.source, "consumer", None)
        if consumer is None:
            return
        self._note_member(consumer)
        partitions = set(assigned)
        # The fetcher starts from the committed offsets while this runs (it awaits the
        # broker and the database): paused, nothing fetched from a stale offset is handed
        # to the service; a seek below discards what was fetched before it.
        consumer.pause(*partitions)
        try:
            await self._reconcile(consumer, partitions)
        finally:
            consumer.resume(*(partitions & set(consumer.assignment())))

    async def retry(self, consumer: Any) -> None:
        """The partitions whose check failed at their assignment, if still assigned."""
        pending = self.unreconciled & set(consumer.assignment())
        if pending:
            await self._reconcile(consumer, pending)

    async def _reconcile(self, consumer: Any, partitions: set[Any]) -> None:
        if self.epochs is None:
            self.unreconciled |= partitions
            return
        try:
            await self.epochs.reconcile(consumer, partitions)
        except Exception as exc:
            log.error(
                "%s: could not compare the broker cluster id of %d assigned partitions "
                "(retried by the consumer watch): %s",
                self.service,
                len(partitions),
                exc,
            )
            self.unreconciled |= partitions
        else:
            self.unreconciled -= partitions

    def _note_member(self, consumer: Any) -> None:
        member_id = getattr(getattr(consumer, "_coordinator", None), "member_id", None)
        if self.path is None or not member_id:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"group": self.group, "member_id": member_id}))
        temporary.replace(self.path)


async def leave_group_for(bootstrap: str, group: str, member_id: str, timeout_s: float) -> bool:
    """Send the LeaveGroup a dead member could not; True when the coordinator took it."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout_s)
        coordinator = await asyncio.wait_for(client.coordinator_lookup(0, group), timeout_s)
        response = await asyncio.wait_for(
            client.send(coordinator, LeaveGroupRequest(group, member_id)), timeout_s
        )
        return int(response.error_code) == 0
    finally:
        await client.close()


def remove_dead_member(
    bootstrap: str, member_dir: Path, service: str, pid: int, timeout_s: float = 3.0
) -> str | None:
    """For a process that is gone: take its consumer out of its group. Returns the
    member id removed, or None (no file: it never held partitions; or the broker did not
    take it — then its session timeout ends the membership)."""
    path = member_file(member_dir, service, pid)
    try:
        note = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    try:
        taken = asyncio.run(leave_group_for(bootstrap, note["group"], note["member_id"], timeout_s))
    except Exception as exc:
        log.warning("%s: could not remove member %s of pid %d: %s", service, note, pid, exc)
        return None
    return str(note["member_id"]) if taken else None
