"""Which broker a consumer's offsets belong to.

A broker that loses its log (tansu on memory storage, restarted) begins new, empty logs
under the same topic names, and the relays publish what it lost into them again
(shared/messaging/outbox.py). An offset from the old log means nothing in the new one,
yet it can reach the new broker: a consumer that lived through the restart keeps its
position and commits it there, and its replacement starts from that commit. When the
re-published log has grown past that offset the consumer reads on from it and never sees
the new log's first messages — among them events published for the first time after the
restart. Nothing in the partition says the log was replaced; the broker's cluster id does
(the embedded stack gives a memory broker a new one at every start; production Kafka and
tansu on S3 keep theirs, so this never fires there unless the cluster really changed).

So each consumer keeps, in its own schema, the cluster id under which it last read each
of its partitions. A partition assigned under another cluster id is read again from the
beginning — the rewound offset committed to the group *before* the new id is recorded, so
a process killed in between is followed by one that rewinds again — and the inbox, keyed
by event id, drops what was already handled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import asyncpg
from aiokafka.protocol.metadata import MetadataRequest

log = logging.getLogger(__name__)


async def broker_cluster_id(client: Any) -> str | None:
    """The cluster id the broker reports (None when no broker is known yet).

    ``client``: an ``AIOKafkaClient`` (a consumer's or admin's ``_client``)."""
    node_id = client.get_random_node()
    if node_id is None:
        return None
    response = await client.send(node_id, MetadataRequest([]))
    cluster_id = getattr(response, "cluster_id", None)
    return str(cluster_id) if cluster_id else None


class ConsumerEpochs:
    """The cluster id each assigned partition was last read under (table
    ``consumer_broker_epochs``, shared migration 0007)."""

    def __init__(self, pool: asyncpg.Pool, service: str) -> None:
        self._pool = pool
        self.service = service
        self.rewound = 0
        """Partitions read again from the beginning because their broker changed."""

    async def reconcile(self, consumer: Any, assignment: Iterable[Any]) -> list[Any]:
        """Rewind every assigned partition last read under another cluster id; record
        the current id for the others. Returns the partitions rewound."""
        tps = sorted(assignment, key=lambda tp: (tp.topic, tp.partition))
        if not tps:
            return []
        cluster_id = await broker_cluster_id(consumer._client)
        if cluster_id is None:
            return []
        rows = await self._pool.fetch(
            """SELECT topic, partition, cluster_id FROM consumer_broker_epochs
                WHERE topic = ANY($1::text[])""",
            sorted({tp.topic for tp in tps}),
        )
        known = {(r["topic"], r["partition"]): r["cluster_id"] for r in rows}
        stale = [tp for tp in tps if known.get((tp.topic, tp.partition)) not in (None, cluster_id)]
        if stale:
            beginnings = await consumer.beginning_offsets(stale)
            # Seek first: a batch finishing meanwhile commits the consumer's positions,
            # which are then the beginnings too.
            for tp in stale:
                consumer.seek(tp, beginnings[tp])
            await consumer.commit({tp: beginnings[tp] for tp in stale})
            for tp in stale:
                log.warning(
                    "%s: %s[%d] was last read under broker cluster %r, now %r: its log was "
                    "replaced; reading it again from offset %d (the inbox drops repeats)",
                    self.service,
                    tp.topic,
                    tp.partition,
                    known[(tp.topic, tp.partition)],
                    cluster_id,
                    beginnings[tp],
                )
            self.rewound += len(stale)
        unrecorded = [tp for tp in tps if known.get((tp.topic, tp.partition)) != cluster_id]
        if unrecorded:
            await self._pool.executemany(
                """INSERT INTO consumer_broker_epochs (topic, partition, cluster_id)
                   VALUES ($1, $2, $3)
                   ON CONFLICT (topic, partition) DO UPDATE
                       SET cluster_id = excluded.cluster_id, seen_at = now()""",
                [(tp.topic, tp.partition, cluster_id) for tp in unrecorded],
            )
        return stale
