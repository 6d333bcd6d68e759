"""State tables against the chain (issue 12 item 3): a row edited with psql while
``audit_log`` is left alone is still a break.

The chains prove what happened; the services answer from their state tables
(``review_tasks``, ``payouts``, ``claims``, ``claim_timeline`` …). Someone who edits a
state row alone (the issue's psql attacker multiplied a paid amount by ten and rewrote a
decision's ``decided_by``) leaves every hash intact, so the chain checks of
``shared.audit.verify`` see nothing. Here each service declares, as data, which columns
of which table the newest chained entries fix (``PROJECTIONS``), and ``compare_state``
reports every row whose value is not the chained one as ``state_differs``, naming table,
row, column, the value found and the value chained.

Covered (docs/audit.md keeps this list for auditors): the fields that move money or
record a decision — amounts, payee accounts, who decided and what, the statuses a
chained event fixes — plus intake's timeline rows (each one is an event some service
chained) and payout's ``finance_audit`` rows (each one is an entry of a finance chain).
Fields no event carries (deadlines, holders, hop details) are not compared.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.audit.chain import canonical, format_time, plain
from shared.db import DbConnection

STATE_DIFFERS = "state_differs"


@dataclass(frozen=True)
class ChainedEntry:
    """One parsed chain entry: what the state comparison reads of it."""

    service: str
    chain: str
    seq: int
    action: str
    actor: str
    at: str
    data: Mapping[str, Any]

    @property
    def payload(self) -> Mapping[str, Any]:
        payload = self.data.get("payload")
        return payload if isinstance(payload, Mapping) else {}


def parse_entries(service: str, rows: Iterable[Any]) -> dict[str, list[ChainedEntry]]:
    """``audit_log`` rows (chain_id, seq, body) as entries by chain, in seq order. A
    body that does not parse is left out: the chain checks already report it."""
    chains: dict[str, list[ChainedEntry]] = {}
    for r in rows:
        try:
            body = json.loads(r["body"])
        except ValueError:
            continue
        if not isinstance(body, dict):
            continue
        data = body.get("data")
        chains.setdefault(r["chain_id"], []).append(
            ChainedEntry(
                service=service,
                chain=r["chain_id"],
                seq=r["seq"],
                action=str(body.get("action", "")),
                actor=str(body.get("actor", "")),
                at=str(body.get("at", "")),
                data=data if isinstance(data, Mapping) else {},
            )
        )
    for entries in chains.values():
        entries.sort(key=lambda e: e.seq)
    return chains


@dataclass(frozen=True)
class Difference:
    """A state row that is not what the chain says."""

    service: str
    chain: str
    seq: int | None
    """The chained entry the value should come from (None: no entry at all)."""
    table: str
    row: str
    column: str
    found: str | None
    chained: str | None
    detail: str

    def __post_init__(self) -> None:
        # A payee that differs is shown as ``****1234``: breaks are printed, logged and
        # shown to auditors, who see account numbers masked everywhere else too.
        for name in ("found", "chained", "detail"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, mask_accounts(value))


_ACCOUNT = re.compile(r'("account_number"\s*:\s*")[0-9]*([0-9]{4})"')


def mask_accounts(text: str) -> str:
    """Every ``"account_number": "6222…4567"`` in ``text`` as ``"****4567"``."""
    return _ACCOUNT.sub(r'\1****\2"', text)


# --- the declarative part ------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A column of a state table that the newest of ``actions`` (about the row) fixes.

    ``field``: the payload field holding the value (None: the entry's action is the
    value). ``values``: maps that value to the column's (e.g. ``approve`` → ``approved``);
    a value it does not map fixes nothing, but a row holding one of the mapped column
    values while the newest entry maps to none is a difference (a status the chain never
    put there). ``json``: the column is jsonb (compared as canonical JSON)."""

    column: str
    actions: tuple[str, ...]
    field: str | None = None
    values: Mapping[str, str] | None = None
    json: bool = False


@dataclass(frozen=True)
class RowProjection:
    """Which rows of ``table`` a claim's chain fixes, and how.

    ``match``: the payload field naming the row's ``key`` (``task_id``, ``payout_id``);
    None: one row per claim. ``chained_if``: an SQL condition on rows that must have at
    least one entry about them (a decided task without a chained decision was made up)."""

    table: str
    key: str
    claim_column: str
    columns: tuple[Column, ...]
    match: str | None = None
    chained_if: str | None = None


_PAYOUT_AMOUNT_EVENTS = (
    "payout.queued",
    "payout.held",
    "payout.requested",
    "payout.issued",
    "payout.sent",
    "payout.confirmed",
    "payout.returned",
)
_PAYOUT_EVENTS = (
    *_PAYOUT_AMOUNT_EVENTS,
    "payout.accepted",
    "payout.retry_scheduled",
    "payout.failed",
    "payout.account_corrected",
    "payout.released",
)

PROJECTIONS: Mapping[str, tuple[RowProjection, ...]] = {
    "intake": (
        RowProjection(
            table="claims",
            key="claim_id",
            claim_column="claim_id",
            chained_if="true",
            columns=(
                Column("requested_amount_fen", ("claim.submitted",), "requested_amount_fen"),
                Column("eligible_amount_fen", ("claim.submitted",), "eligible_amount_fen"),
                Column("payee", ("claim.submitted",), "payee", json=True),
                Column("uscc", ("claim.submitted",), "uscc"),
                Column("registered_by", ("claim.submitted",), "registered_by"),
                # The statuses intake's own events fix; the others are folded from review's
                # and payout's events (their chains, and the timeline rows, are compared).
                Column(
                    "status",
                    ("claim.withdrawn", "claim.lapsed"),
                    values={"claim.withdrawn": "withdrawn", "claim.lapsed": "lapsed"},
                ),
            ),
        ),
    ),
    "review": (
        RowProjection(
            table="review_tasks",
            key="task_id",
            claim_column="claim_id",
            match="task_id",
            chained_if="decided_by IS NOT NULL",
            # A department's decision is review.task_decided; the approver's on the
            # sign-off task is review.signed_off.
            columns=(
                Column("decided_by", ("review.task_decided", "review.signed_off"), "decided_by"),
                Column(
                    "status",
                    ("review.task_decided", "review.signed_off"),
                    "decision",
                    values={"approve": "approved", "reject": "rejected", "return": "returned"},
                ),
            ),
        ),
        RowProjection(
            table="review_cases",
            key="claim_id",
            claim_column="claim_id",
            chained_if="status IN ('approved', 'rejected')",
            columns=(
                Column(
                    "status",
                    ("review.decided",),
                    "decision",
                    values={"approved": "approved", "rejected": "rejected"},
                ),
                Column("approved_amount_fen", ("review.decided",), "approved_amount_fen"),
                Column("payee", ("review.decided",), "payee", json=True),
            ),
        ),
    ),
    "payout": (
        RowProjection(
            table="payouts",
            key="payout_id",
            claim_column="claim_id",
            match="payout_id",
            chained_if="true",
            columns=(
                Column("amount_fen", _PAYOUT_AMOUNT_EVENTS, "amount_fen"),
                Column(
                    "payee", ("payout.requested", "payout.account_corrected"), "payee", json=True
                ),
                Column(
                    "status",
                    _PAYOUT_EVENTS,
                    values={"payout.confirmed": "paid", "payout.released": "released"},
                ),
                Column(
                    "paid_amount_fen",
                    ("payout.confirmed",),
                    "amount_fen",
                ),
            ),
        ),
    ),
}
"""Per service: the state columns its chained entries fix (docs/audit.md lists them)."""

LINKED_CHAINS: Mapping[str, str] = {
    "payout": "SELECT 'payout:' || payout_id::text FROM {schema}.payouts WHERE claim_id = $1",
}
"""Per service: the chains besides the claim's own that belong to a claim (payout's
finance chain of the claim's payout)."""


# --- the comparison -------------------------------------------------------------------------


def _norm(value: Any, key: str, is_json: bool) -> str | None:
    if value is None:
        return None
    if is_json and isinstance(value, str):
        value = json.loads(value)
    # Both sides through ``plain`` (money as strings, times in one format), then
    # canonical JSON for anything but text: jsonb re-orders keys, the chain sorts them.
    normalised = plain(value, key)
    return normalised if isinstance(normalised, str) else canonical(normalised)


def _show(value: str | None) -> str:
    return "nothing" if value is None else repr(value)


def _check_row(
    service: str, p: RowProjection, row: Mapping[str, Any], entries: Sequence[ChainedEntry]
) -> list[Difference]:
    key = str(row[p.key])
    chain = str(row[p.claim_column])
    about = [e for e in entries if p.match is None or str(e.payload.get(p.match, "")) == key]
    found_diffs: list[Difference] = []

    def differs(
        column: str, seq: int | None, found: str | None, chained: str | None, why: str
    ) -> None:
        found_diffs.append(
            Difference(
                service,
                chain,
                seq,
                p.table,
                key,
                column,
                found,
                chained,
                f"{p.table} {p.key}={key} column {column} is {_show(found)}; {why}",
            )
        )

    if not about and row.get("_must_be_chained"):
        differs("*", None, None, None, "no chained entry is about this row (made up)")
        return found_diffs
    for c in p.columns:
        found = _norm(row[c.column], c.column, c.json)
        candidates = [
            e for e in about if e.action in c.actions and (c.field is None or c.field in e.payload)
        ]
        if not candidates:
            if c.values and found in c.values.values():
                differs(c.column, None, found, None, "no chained entry puts it there")
            continue
        newest = candidates[-1]
        raw = newest.action if c.field is None else newest.payload.get(c.field)
        if c.values is not None:
            mapped = c.values.get(str(raw))
            if mapped is None:
                if found in c.values.values():
                    differs(
                        c.column,
                        newest.seq,
                        found,
                        str(raw),
                        f"the newest chained entry (seq {newest.seq}) is {raw}",
                    )
                continue
            raw = mapped
        chained = _norm(raw, c.field or c.column, c.json)
        if found != chained:
            differs(
                c.column,
                newest.seq,
                found,
                chained,
                f"the chain says {_show(chained)} ({newest.action}, seq {newest.seq})",
            )
    return found_diffs


async def _rows(
    conn: DbConnection, schema: str, p: RowProjection, claims: Sequence[uuid.UUID] | None
) -> list[dict[str, Any]]:
    where = f"WHERE {p.claim_column} = ANY($1::uuid[])" if claims is not None else ""
    must = p.chained_if or "false"
    rows = await conn.fetch(
        f'SELECT *, ({must}) AS _must_be_chained FROM "{schema}".{p.table} {where}',
        *([list(claims)] if claims is not None else []),
    )
    return [dict(r) for r in rows]


def claim_ids(chains: Sequence[str] | None) -> list[uuid.UUID] | None:
    """The claim ids among chain ids (None: all)."""
    if chains is None:
        return None
    found: list[uuid.UUID] = []
    for c in chains:
        try:
            found.append(uuid.UUID(c))
        except ValueError:
            continue
    return found


async def compare_state(
    conn: DbConnection,
    service: str,
    entries: Mapping[str, Mapping[str, Sequence[ChainedEntry]]],
    *,
    schema: str | None = None,
    chains: Sequence[str] | None = None,
    now: datetime | None = None,
    timeline_grace: timedelta = timedelta(minutes=5),
) -> list[Difference]:
    """Every state row of ``service`` (of the claims among ``chains``; all when None)
    that is not what its newest chained entries say.

    ``entries``: the parsed chains by service — at least ``service``'s own; intake's
    timeline rows of other services' events are compared only where those services'
    chains are given (``claimflow audit verify`` reads all three; intake's API reads its
    own schema only)."""
    schema = schema or service
    own = entries.get(service, {})
    claims = claim_ids(chains)
    diffs: list[Difference] = []
    for p in PROJECTIONS.get(service, ()):
        for row in await _rows(conn, schema, p, claims):
            chained = own.get(str(row[p.claim_column]))
            # A claim without a chain here pre-dates the chains (a database upgraded to
            # issue 12): nothing to compare with. A chain removed entirely is no escape:
            # its head row (the chain checks) and the seals still name it.
            if chained:
                diffs.extend(_check_row(service, p, row, chained))
    if service == "intake":
        diffs.extend(await _compare_timeline(conn, schema, entries, claims, now, timeline_grace))
    if service == "payout":
        diffs.extend(await _compare_finance(conn, schema, own, chains))
    return diffs


async def _compare_timeline(
    conn: DbConnection,
    schema: str,
    entries: Mapping[str, Mapping[str, Sequence[ChainedEntry]]],
    claims: Sequence[uuid.UUID] | None,
    now: datetime | None,
    grace: timedelta,
) -> list[Difference]:
    """Each timeline row is an event its producer chained: same type, time and payload.
    A chained event without its row was deleted from the timeline — for intake's own
    events at once (recorded in the same transaction), for the others' after ``grace``
    (intake's consumer may not have read them yet)."""
    where = "WHERE claim_id = ANY($1::uuid[])" if claims is not None else ""
    rows = await conn.fetch(
        f"""SELECT event_id, claim_id, event_type, producer, occurred_at, payload
            FROM "{schema}".claim_timeline {where}""",
        *([list(claims)] if claims is not None else []),
    )
    by_event: dict[str, ChainedEntry] = {}
    wanted = None if claims is None else {str(c) for c in claims}
    for chains in entries.values():
        for chain, chain_entries in chains.items():
            if wanted is not None and chain not in wanted:
                continue
            for entry in chain_entries:
                if "event_id" in entry.data:
                    by_event[str(entry.data["event_id"])] = entry
    diffs: list[Difference] = []
    seen: set[str] = set()
    for r in rows:
        event_id, claim = str(r["event_id"]), str(r["claim_id"])
        seen.add(event_id)
        e = by_event.get(event_id)  # type: ChainedEntry | None
        if e is None:
            # Only where the producer keeps a chain of the claim (a chain not given, or
            # a claim older than the chains, proves nothing either way).
            if claim in entries.get(r["producer"], {}):
                diffs.append(
                    Difference(
                        "intake",
                        claim,
                        None,
                        "claim_timeline",
                        event_id,
                        "*",
                        r["event_type"],
                        None,
                        f"claim_timeline event_id={event_id} ({r['event_type']}) is chained "
                        f"nowhere in {r['producer']}'s chain of the claim (inserted)",
                    )
                )
            continue
        payload = json.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"]
        found: dict[str, Any] = {
            "event_type": r["event_type"],
            "producer": r["producer"],
            "occurred_at": format_time(r["occurred_at"]),
        }
        chained_values: dict[str, Any] = {
            "event_type": e.data.get("event_type"),
            "producer": e.data.get("producer"),
            "occurred_at": e.at,
        }
        chained_payload = e.payload
        for k in sorted(set(payload) | set(chained_payload)):
            found[f"payload.{k}"] = payload.get(k)
            chained_values[f"payload.{k}"] = chained_payload.get(k)
        for column in found:
            a = _norm(found[column], column.removeprefix("payload."), False)
            b = _norm(chained_values[column], column.removeprefix("payload."), False)
            if a != b:
                diffs.append(
                    Difference(
                        "intake",
                        claim,
                        e.seq,
                        "claim_timeline",
                        event_id,
                        column,
                        a,
                        b,
                        f"claim_timeline event_id={event_id} column {column} is {_show(a)}; "
                        f"{e.service}'s chain says {_show(b)} ({e.action}, seq {e.seq})",
                    )
                )
    cutoff = None if now is None else format_time(now - grace)
    for event_id, e in sorted(by_event.items(), key=lambda kv: (kv[1].chain, kv[1].at)):
        if event_id in seen:
            continue
        if e.service != "intake" and (cutoff is None or e.at > cutoff):
            continue  # maybe not consumed yet
        if e.chain not in entries.get("intake", {}):
            continue  # a claim intake never registered (or older than its chain) has no timeline
        diffs.append(
            Difference(
                "intake",
                e.chain,
                e.seq,
                "claim_timeline",
                event_id,
                "*",
                None,
                e.action,
                f"claim_timeline has no row for event {event_id} ({e.action}) that "
                f"{e.service} chained at seq {e.seq} (deleted)",
            )
        )
    return diffs


async def _compare_finance(
    conn: DbConnection,
    schema: str,
    own: Mapping[str, Sequence[ChainedEntry]],
    chains: Sequence[str] | None,
) -> list[Difference]:
    """Each ``finance_audit`` row is one entry of its fund's and its payout's chain, in
    the same order: same actor, action and amount."""
    finance = sorted(
        c for c in (own if chains is None else chains) if c.startswith(("fund:", "payout:"))
    )
    if not finance:
        return []
    rows = await conn.fetch(
        f"""SELECT id, at, actor, action, fund_id, payout_id::text AS payout_id, amount_fen
            FROM "{schema}".finance_audit
            WHERE 'fund:' || fund_id = ANY($1::text[])
               OR 'payout:' || payout_id::text = ANY($1::text[])
            ORDER BY id""",
        finance,
    )
    diffs: list[Difference] = []
    for chain in finance:
        kind, _, ident = chain.partition(":")
        chained = list(own.get(chain, ()))
        if not chained:
            continue  # no chain (yet): rows older than the chains, or the head says more
        # Rows written before the chain began (an upgraded database) pair with nothing:
        # the first entry was written in the same transaction as its row, whose ``at``
        # is that transaction's start — a minute is ample.
        since = chained[0].at
        mine = [
            r
            for r in rows
            if (r["fund_id"] if kind == "fund" else r["payout_id"]) == ident
            and format_time(r["at"] + timedelta(minutes=1)) >= since
        ]
        for i in range(max(len(mine), len(chained))):
            r = mine[i] if i < len(mine) else None
            e = chained[i] if i < len(chained) else None
            if r is None and e is not None:
                diffs.append(
                    Difference(
                        "payout",
                        chain,
                        e.seq,
                        "finance_audit",
                        "-",
                        "*",
                        None,
                        f"{e.action} by {e.actor}",
                        f"finance_audit has no row for {chain} entry {e.seq} "
                        f"({e.action} by {e.actor}): deleted",
                    )
                )
                continue
            if r is None:
                continue
            if e is None:
                diffs.append(
                    Difference(
                        "payout",
                        chain,
                        None,
                        "finance_audit",
                        str(r["id"]),
                        "*",
                        f"{r['action']} by {r['actor']}",
                        None,
                        f"finance_audit id={r['id']} ({r['action']} by {r['actor']}) is chained "
                        f"nowhere in {chain} (inserted)",
                    )
                )
                continue
            for column, a, b in (
                ("actor", r["actor"], e.actor),
                ("action", r["action"], e.action),
                (
                    "amount_fen",
                    _norm(r["amount_fen"], "amount_fen", False),
                    _norm(e.data.get("amount_fen"), "amount_fen", False),
                ),
            ):
                if a != b:
                    diffs.append(
                        Difference(
                            "payout",
                            chain,
                            e.seq,
                            "finance_audit",
                            str(r["id"]),
                            column,
                            a,
                            b,
                            f"finance_audit id={r['id']} column {column} is {_show(a)}; "
                            f"{chain} seq {e.seq} says {_show(b)}",
                        )
                    )
    return diffs
