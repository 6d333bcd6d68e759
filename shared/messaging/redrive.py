"""Dead letters, quarantined outbox rows and held events: list them, send them again.

Re-driving happens through the service's own outbox, in one transaction with the
bookkeeping, so it is never half done:

* a **consumed** dead letter (a message the service could not apply): its inbox row is
  removed (the inbox lets the event through once more: only this service's inbox, so
  the other services still skip it as a duplicate), and the exact bytes are staged for
  the topic they came from, with their key;
* an **outbox** dead letter (a row of the service's outbox the broker would not take):
  the row is taken out of quarantine with its attempts reset, and the relay sends it;
* a **held** event (no handler for its version): staged for its topic again and removed
  from ``held_events``; a service that has a handler now applies it, one that still has
  none holds it again. (Services also release held events themselves when they start.)

The dead letter is marked ``redriven_at``; a second re-drive of it is refused.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import asyncpg

from shared.db import DbConnection
from shared.messaging.outbox import notify_channel


class RedriveRefused(Exception):
    """The letter cannot be re-driven (unknown, already re-driven, or not text)."""


@dataclass(frozen=True)
class OpenLetter:
    service: str
    kind: str  # consumed | outbox | held
    id: str
    at: datetime
    topic: str
    partition: int | None
    offset: int | None
    event_type: str | None
    event_id: str | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.isoformat()
        return data


async def _has_tables(conn: DbConnection, schema: str) -> bool:
    found = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.held_events")
    return bool(found)


async def list_open(conn: DbConnection, schemas: list[str] | tuple[str, ...]) -> list[OpenLetter]:
    """Every dead letter not yet re-driven and every held event, oldest first."""
    letters: list[OpenLetter] = []
    for schema in schemas:
        if not await _has_tables(conn, schema):
            continue
        rows = await conn.fetch(
            f"""SELECT dead_letter_id::text AS id, kind, failed_at AS at, source_topic,
                       source_partition, source_offset, event_type, event_id::text, reason
                FROM "{schema}".dead_letters WHERE redriven_at IS NULL
                UNION ALL
                SELECT message_id, 'held', held_at, source_topic, source_partition,
                       source_offset, event_type || ' v' || version, message_id, reason
                FROM "{schema}".held_events
                ORDER BY at"""
        )
        letters.extend(
            OpenLetter(
                service=schema,
                kind=r["kind"],
                id=r["id"],
                at=r["at"],
                topic=r["source_topic"],
                partition=r["source_partition"],
                offset=r["source_offset"],
                event_type=r["event_type"],
                event_id=r["event_id"],
                reason=r["reason"],
            )
            for r in rows
        )
    letters.sort(key=lambda letter: letter.at)
    return letters


def _as_text(raw: bytes, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RedriveRefused(f"{what}: the raw value is not UTF-8 text") from None
    if "\x00" in text:
        raise RedriveRefused(f"{what}: the raw value contains NUL bytes; it cannot be an event")
    return text


def _peek_event_id(text: str) -> str | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    found = data.get("event_id") if isinstance(data, dict) else None
    return found if isinstance(found, str) else None


async def _stage_copy(
    conn: DbConnection,
    topic: str,
    key: bytes | None,
    event_type: str | None,
    payload: str,
    source: asyncpg.Record,
) -> None:
    """Stage the exact bytes again, with the signature they arrived with (if any): the
    re-drive is not re-signed by this service, so a forgery stays refused."""
    key_id, signature = source["source_key_id"], source["source_signature"]
    if key_id is None or signature is None:
        key_id = signature = None
    await conn.execute(
        """INSERT INTO outbox (event_id, topic, message_key, event_type, payload, key_id,
                               signature)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        uuid.uuid4(),  # the outbox row's own id; the message keeps its event id
        topic,
        _as_text(key, "key") if key is not None else None,
        event_type or "redrive",
        payload,
        key_id,
        signature,
    )


async def redrive(conn: asyncpg.Connection, schema: str, letter_id: str) -> str:
    """Re-drive one dead letter or held event of ``schema``; returns what was done."""
    async with conn.transaction():
        await conn.execute(f'SET LOCAL search_path TO "{schema}"')
        try:
            as_uuid = uuid.UUID(letter_id)  # dead letter ids and held event ids alike
        except ValueError:
            raise RedriveRefused(f"{letter_id!r} is not an id") from None
        letter = await conn.fetchrow(
            "SELECT * FROM dead_letters WHERE dead_letter_id = $1 FOR UPDATE", as_uuid
        )
        if letter is not None:
            done = await _redrive_letter(conn, letter)
        else:
            held = await conn.fetchrow(
                "DELETE FROM held_events WHERE message_id = $1 RETURNING *", str(as_uuid)
            )
            if held is None:
                raise RedriveRefused(f"{schema}: no dead letter or held event {letter_id}")
            payload = _as_text(bytes(held["raw_value"]), letter_id)
            await _stage_copy(
                conn, held["source_topic"], held["source_key"], held["event_type"], payload, held
            )
            done = f"held event {letter_id} published again to {held['source_topic']}"
        await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))
        return f"{schema}: {done}"


async def _redrive_letter(conn: DbConnection, letter: asyncpg.Record) -> str:
    letter_id = str(letter["dead_letter_id"])
    if letter["redriven_at"] is not None:
        raise RedriveRefused(f"dead letter {letter_id} was re-driven at {letter['redriven_at']}")
    if letter["kind"] == "outbox":
        await conn.execute(
            """UPDATE outbox SET quarantined_at = NULL, attempts = 0, last_error = NULL
               WHERE id = $1 AND published_at IS NULL""",
            letter["outbox_id"],
        )
        done = f"outbox row {letter['outbox_id']} released from quarantine"
    else:
        payload = _as_text(bytes(letter["raw_value"]), letter_id)
        event_id = str(letter["event_id"]) if letter["event_id"] else _peek_event_id(payload)
        if event_id is not None:
            await conn.execute("DELETE FROM inbox WHERE message_id = $1", event_id)
        await _stage_copy(
            conn,
            letter["source_topic"],
            letter["source_key"],
            letter["event_type"],
            payload,
            letter,
        )
        done = f"dead letter {letter_id} published again to {letter['source_topic']}"
    await conn.execute(
        "UPDATE dead_letters SET redriven_at = now() WHERE dead_letter_id = $1",
        letter["dead_letter_id"],
    )
    return done
