"""The audit chain (issue 12, DESIGN.md invariant 5): every state change appended to a
hash chain in the same transaction as the change.

One chain per claim (``chain_id`` = the claim id), per fund (``fund:<program id>``) and
per payout (``payout:<payout id>``), in each service's own ``audit_log`` table
(shared/migrations/0004_audit_chain.sql). An entry's **body** is RFC 8785 canonical JSON
text::

    {"action": ..., "actor": ..., "at": "2026-11-27T08:00:00.000000Z",
     "chain": ..., "data": {...}, "seq": 3}

and its hash is ``sha256(prev_hash || body)`` over the UTF-8 bytes of the previous
entry's hash (64 lowercase hex digits; 64 zeros for the first entry) followed by the
body. Money is written as strings (integer fen: ``"approved_amount_fen": "500000"``), so
no reader ever parses it as a float; timestamps are UTC in one fixed format
(``TIMESTAMP_FORMAT``). docs/audit.md has the ten-line independent verifier.

Appending locks the chain's row in ``audit_heads`` (``SELECT ... FOR UPDATE``), so two
transactions appending to one chain run one after the other; a writer that somehow got
past the lock fails on ``UNIQUE (chain_id, seq)`` instead of forking the chain.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import rfc8785

from shared.db import DbConnection

if TYPE_CHECKING:
    from shared.contracts import EventEnvelope
    from shared.unit_of_work import UnitOfWork

GENESIS = "0" * 64
"""The ``prev_hash`` of a chain's first entry."""

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
"""Every timestamp in a body: UTC, microseconds, a literal Z (``2026-11-27T08:00:00.000000Z``)."""

ACTOR_FIELDS = (
    "decided_by",
    "registered_by",
    "recorded_by",
    "withdrawn_by",
    "corrected_by",
    "requested_by",
    "by",
)
"""Payload fields naming the person behind an event, in order of preference."""

_actor: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "claimflow_audit_actor", default=None
)


@contextlib.contextmanager
def acting_as(subject: str) -> Iterator[None]:
    """Entries appended inside this block name ``subject`` (the token subject) as actor.

    Issue 11 wires the verified token's subject here (an HTTP dependency); until then the
    hook takes the actor from the event's payload (``ACTOR_FIELDS``), and work that no
    person started (a consumer, a deadline loop) is ``system:<service>``.
    """
    token = _actor.set(subject)
    try:
        yield
    finally:
        _actor.reset(token)


def bind_actor(subject: str) -> None:
    """For the rest of the current request (its task's context): entries name
    ``subject``. Called by the HTTP authorisation once the token is verified."""
    _actor.set(subject)


def format_time(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return at.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def canonical(value: Any) -> str:
    """RFC 8785 canonical JSON text of ``value`` after ``plain`` (money, times, ids)."""
    return rfc8785.dumps(plain(value)).decode("utf-8")


def plain(value: Any, key: str = "") -> Any:
    """The JSON a body holds: money (``*_fen``, ``amount*``), integers beyond 2**53 and
    floats as strings, times in ``TIMESTAMP_FORMAT``, ids as text. Only small integers
    stay numbers, so RFC 8785's float printing never matters to anyone re-hashing.

    Money as a float is refused: it is never a float (integer fen).
    """
    if isinstance(value, Mapping):
        return {str(k): plain(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, key) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if _is_money(key) or abs(value) > 2**53:
            return str(value)
        return value
    if isinstance(value, float):
        if _is_money(key):
            raise TypeError(f"audit body field {key!r} is money as a float; use integer fen")
        # A measurement (seconds): as text, so no language's float printing is hashed.
        return repr(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        return value
    # Decimal, date and the like: their str() is exact.
    return str(value)


def _is_money(key: str) -> bool:
    return key.endswith("_fen") or key.startswith("amount") or key.endswith("_amount")


def entry_hash(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Entry:
    """One entry about to be appended (or read back)."""

    chain_id: str
    seq: int
    occurred_at: datetime
    actor: str
    action: str
    body: str
    prev_hash: str
    hash: str


def build_entry(
    chain_id: str,
    seq: int,
    prev_hash: str,
    *,
    occurred_at: datetime,
    actor: str,
    action: str,
    data: Mapping[str, Any],
) -> Entry:
    body = canonical(
        {
            "chain": chain_id,
            "seq": seq,
            "at": occurred_at,
            "actor": actor,
            "action": action,
            "data": data,
        }
    )
    return Entry(
        chain_id=chain_id,
        seq=seq,
        occurred_at=occurred_at,
        actor=actor,
        action=action,
        body=body,
        prev_hash=prev_hash,
        hash=entry_hash(prev_hash, body),
    )


@dataclass(frozen=True)
class Append:
    """What to append: the chain, who, what, the data, and when."""

    chain_id: str
    actor: str
    action: str
    data: Mapping[str, Any]
    occurred_at: datetime


async def append_many(conn: DbConnection, appends: Sequence[Append]) -> list[Entry]:
    """Append entries (possibly to several chains) in the caller's transaction.

    Four statements whatever the count: create missing heads, lock the heads (in chain id
    order, so two writers over the same chains never deadlock), insert the entries, move
    the heads. Raises when called outside a transaction: the lock would be released at
    once and the entries would not commit with the change they record.
    """
    if not appends:
        return []
    if not conn.is_in_transaction():
        raise RuntimeError("audit entries are appended inside the change's transaction")
    chains = sorted({a.chain_id for a in appends})
    await conn.execute(
        """INSERT INTO audit_heads (chain_id, seq, hash)
           SELECT c, 0, $2 FROM unnest($1::text[]) AS c
           ON CONFLICT (chain_id) DO NOTHING""",
        chains,
        GENESIS,
    )
    rows = await conn.fetch(
        """SELECT chain_id, seq, hash FROM audit_heads
           WHERE chain_id = ANY($1::text[]) ORDER BY chain_id FOR UPDATE""",
        chains,
    )
    heads = {r["chain_id"]: (r["seq"], r["hash"]) for r in rows}
    entries: list[Entry] = []
    for a in appends:
        seq, prev = heads[a.chain_id]
        entry = build_entry(
            a.chain_id,
            seq + 1,
            prev,
            occurred_at=a.occurred_at,
            actor=a.actor,
            action=a.action,
            data=a.data,
        )
        heads[a.chain_id] = (entry.seq, entry.hash)
        entries.append(entry)
    await conn.execute(
        """INSERT INTO audit_log (chain_id, seq, occurred_at, actor, action, body,
                                  prev_hash, hash)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::text[],
                                $5::text[], $6::text[], $7::text[], $8::text[])""",
        [e.chain_id for e in entries],
        [e.seq for e in entries],
        [e.occurred_at for e in entries],
        [e.actor for e in entries],
        [e.action for e in entries],
        [e.body for e in entries],
        [e.prev_hash for e in entries],
        [e.hash for e in entries],
    )
    await conn.execute(
        """UPDATE audit_heads h SET seq = n.seq, hash = n.hash
           FROM unnest($1::text[], $2::bigint[], $3::text[]) AS n(chain_id, seq, hash)
           WHERE h.chain_id = n.chain_id""",
        list(heads),
        [s for s, _ in heads.values()],
        [h for _, h in heads.values()],
    )
    return entries


async def append(
    conn: DbConnection,
    chain_id: str,
    actor: str,
    action: str,
    body: Mapping[str, Any],
    *,
    occurred_at: datetime | None = None,
) -> Entry:
    """Append one entry to ``chain_id`` in the caller's transaction; returns it."""
    at = occurred_at or datetime.now(UTC)
    (entry,) = await append_many(conn, [Append(chain_id, actor, action, body, at)])
    return entry


# --- finance chains ----------------------------------------------------------------------


def fund_chain(program_id: str) -> str:
    return f"fund:{program_id}"


def payout_chain(payout_id: uuid.UUID | str) -> str:
    return f"payout:{payout_id}"


async def append_finance(
    conn: DbConnection,
    *,
    actor: str,
    action: str,
    body: Mapping[str, Any],
    program_id: str | None = None,
    payout_id: uuid.UUID | str | None = None,
    occurred_at: datetime | None = None,
) -> list[Entry]:
    """A finance action (a top-up, an account correction, a statement import) on the
    chain of its fund, of its payout, or both (the same body on each)."""
    chains = ([fund_chain(program_id)] if program_id else []) + (
        [payout_chain(payout_id)] if payout_id else []
    )
    if not chains:
        raise ValueError("a finance entry belongs to a fund, a payout or both")
    at = occurred_at or datetime.now(UTC)
    return await append_many(conn, [Append(c, actor, action, body, at) for c in chains])


# --- the unit-of-work hook -----------------------------------------------------------------


def actor_of(envelope: EventEnvelope, service: str) -> str:
    """Who is behind an event: the token subject in force (``acting_as``), a person the
    payload names (``ACTOR_FIELDS``), or the service itself."""
    subject = _actor.get()
    if subject:
        return subject
    for name in ACTOR_FIELDS:
        value = envelope.payload.get(name)
        if isinstance(value, str) and value:
            return value
    return f"system:{service}"


def event_data(envelope: EventEnvelope) -> dict[str, Any]:
    """What a claim chain records of an event: its identity, cause and payload."""
    return {
        "event_id": envelope.event_id,
        "event_type": envelope.event_type,
        "version": envelope.version,
        "producer": envelope.producer,
        "correlation_id": envelope.correlation_id,
        "causation_id": envelope.causation_id,
        "payload": envelope.payload,
    }


async def audit_hook(uow: UnitOfWork, events: Sequence[EventEnvelope]) -> None:
    """``EmitHook``: one entry per emitted event on the claim's chain, same transaction.

    Wire it once per service: ``UnitOfWorkFactory(SERVICE, TOPIC, hooks=(audit_hook,))``.
    """
    await append_many(
        uow.conn,
        [
            Append(
                chain_id=str(e.claim_id),
                actor=actor_of(e, uow.service),
                action=e.event_type,
                data=event_data(e),
                occurred_at=e.occurred_at,
            )
            for e in events
        ],
    )
