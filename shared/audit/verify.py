"""Verify every audit chain of a service against its hashes, its heads and its seals
(issue 12 item 3); each break names the service, the chain, the seq and what differs.

What each check catches:

* the hash of an entry does not recompute from ``prev_hash || body`` — the body (or the
  hash) was changed: **tampered**;
* a column (actor, action, occurred_at, chain, seq) differs from the chained body —
  the column was changed: **tampered**;
* a body that is not canonical JSON as written — **tampered** (hand-edited);
* a seq missing in the middle — **deleted**;
* ``prev_hash`` not the hash of the entry before — an entry **inserted** or replaced;
* the log ends before ``audit_heads`` says, or goes past it — **deleted** at the tail /
  **inserted** at the tail;
* a sealed head (seq, hash) the log no longer has, or has with another hash — the tail
  was **deleted**, a backup restored, or the chain **rewritten** with recomputed hashes
  since the seal (nothing inside the database can hide this: the seal is outside it and
  signed).

``verify_services`` adds the state tables against the chains (``shared.audit.state``):
a row edited alone is **state_differs**, naming table, row, column and both values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.audit.chain import GENESIS, canonical, entry_hash, format_time
from shared.audit.keys import KeyRing
from shared.audit.seal import SealInvalid, check_seal, seal_files, snapshot
from shared.audit.state import STATE_DIFFERS, Difference, compare_state, parse_entries
from shared.db import DbConnection


@dataclass(frozen=True)
class Break:
    service: str
    chain: str
    seq: int | None
    kind: str
    """tampered | deleted | inserted | seal | state_differs"""
    detail: str
    # For state_differs (shared/audit/state.py): the row and the values that differ.
    table: str | None = None
    row: str | None = None
    column: str | None = None
    found: str | None = None
    chained: str | None = None

    def line(self) -> str:
        at = f"seq {self.seq}" if self.seq is not None else "-"
        return f"{self.service} chain {self.chain} {at}: {self.kind}: {self.detail}"


@dataclass
class Report:
    service: str
    chains: int = 0
    entries: int = 0
    seals: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


async def verify_service(
    conn: DbConnection,
    service: str,
    *,
    schema: str | None = None,
    seal_dir: Path | None = None,
    keyring: KeyRing | None = None,
    chains: Sequence[str] | None = None,
    seals: Seals | None = None,
) -> Report:
    """Check ``service``'s chains (all, or only ``chains``) in ``schema`` (default: the
    service's name) against themselves, ``audit_heads`` and the seals in ``seal_dir``
    (``seals``: those seals already loaded with ``load_seals``)."""
    schema = schema or service
    report = Report(service)
    wanted = list(chains) if chains is not None else None
    where = "WHERE chain_id = ANY($1::text[])" if wanted is not None else ""
    args: list[Any] = [wanted] if wanted is not None else []
    rows = await read_log(conn, schema, wanted)
    heads = {
        r["chain_id"]: (r["seq"], r["hash"])
        for r in await conn.fetch(
            f'SELECT chain_id, seq, hash FROM "{schema}".audit_heads {where}', *args
        )
    }
    log: dict[str, dict[int, str]] = {}
    for chain, entries in _group(rows):
        report.chains += 1
        report.entries += len(entries)
        log[chain] = {e["seq"]: e["hash"] for e in entries}
        report.breaks.extend(_check_chain(service, chain, entries))
        last = entries[-1]
        head = heads.pop(chain, None)
        report.breaks.extend(_check_head(service, chain, last["seq"], last["hash"], head))
    for chain, (seq, _) in sorted(heads.items()):
        if seq > 0:
            report.breaks.append(
                Break(service, chain, seq, "deleted", f"the head says seq {seq}; no entry left")
            )
    if seal_dir is not None:
        loaded = seals or load_seals(service, seal_dir, keyring, wanted)
        report.breaks.extend(_check_seals(service, loaded, log, report))
    return report


async def read_log(conn: DbConnection, schema: str, chains: Sequence[str] | None) -> list[Any]:
    """The entries of ``schema``'s chains (all, or only ``chains``), by chain and seq."""
    where = "WHERE chain_id = ANY($1::text[])" if chains is not None else ""
    return list(
        await conn.fetch(
            f"""SELECT chain_id, seq, occurred_at, actor, action, body, prev_hash, hash
                FROM "{schema}".audit_log {where} ORDER BY chain_id, seq""",
            *([list(chains)] if chains is not None else []),
        )
    )


def state_break(d: Difference) -> Break:
    return Break(
        d.service,
        d.chain,
        d.seq,
        STATE_DIFFERS,
        d.detail,
        table=d.table,
        row=d.row,
        column=d.column,
        found=d.found,
        chained=d.chained,
    )


async def verify_services(
    conn: DbConnection,
    services: Sequence[str],
    *,
    seal_dir: Path | None = None,
    keyring: KeyRing | None = None,
    chains: Sequence[str] | None = None,
    state: bool = True,
    timeline_grace: timedelta = timedelta(minutes=5),
) -> list[Report]:
    """``claimflow audit verify``: each service's chains (``verify_service``), then its
    state tables against them (``shared.audit.state``), with every named service's
    chains at hand (intake's timeline rows are other services' events). Reads one
    snapshot, so a change committing meanwhile cannot look like a difference."""
    async with snapshot(conn):
        reports = [
            await verify_service(conn, s, seal_dir=seal_dir, keyring=keyring, chains=chains)
            for s in services
        ]
        if state:
            entries = {s: parse_entries(s, await read_log(conn, s, chains)) for s in services}
            now = datetime.now(UTC)
            for report in reports:
                diffs = await compare_state(
                    conn,
                    report.service,
                    entries,
                    chains=chains,
                    now=now,
                    timeline_grace=timeline_grace,
                )
                report.breaks.extend(state_break(d) for d in diffs)
    return reports


def _group(rows: Sequence[Any]) -> list[tuple[str, list[Any]]]:
    groups: list[tuple[str, list[Any]]] = []
    for r in rows:
        if not groups or groups[-1][0] != r["chain_id"]:
            groups.append((r["chain_id"], []))
        groups[-1][1].append(r)
    return groups


def _check_chain(service: str, chain: str, entries: list[Any]) -> list[Break]:
    breaks: list[Break] = []
    expected, prev = 1, GENESIS
    for e in entries:
        seq = e["seq"]
        if seq != expected:
            gone = f"{expected}" if seq == expected + 1 else f"{expected}..{seq - 1}"
            breaks.append(Break(service, chain, expected, "deleted", f"entries {gone} missing"))
        elif e["prev_hash"] != prev:
            breaks.append(
                Break(
                    service,
                    chain,
                    seq,
                    "inserted",
                    f"prev_hash {e['prev_hash'][:16]}… is not the hash of entry {seq - 1} "
                    f"({prev[:16]}…): an entry was inserted or replaced",
                )
            )
        if entry_hash(e["prev_hash"], e["body"]) != e["hash"]:
            breaks.append(
                Break(
                    service,
                    chain,
                    seq,
                    "tampered",
                    "the body does not hash to the stored hash (body or hash changed)",
                )
            )
        breaks.extend(_check_columns(service, chain, e))
        expected, prev = seq + 1, e["hash"]
    return breaks


def _check_columns(service: str, chain: str, e: Any) -> list[Break]:
    seq = e["seq"]
    try:
        body = json.loads(e["body"])
        canonical_text = canonical(body)
    except (ValueError, TypeError) as exc:
        return [Break(service, chain, seq, "tampered", f"the body is not canonical JSON: {exc}")]
    found: list[Break] = []
    if canonical_text != e["body"]:
        found.append(
            Break(service, chain, seq, "tampered", "the body is not in canonical form (edited)")
        )
    if not isinstance(body, dict):
        return [*found, Break(service, chain, seq, "tampered", "the body is not an object")]
    columns = {
        "chain": chain,
        "seq": seq,
        "actor": e["actor"],
        "action": e["action"],
        "at": format_time(e["occurred_at"]),
    }
    for name, value in columns.items():
        if body.get(name) != value:
            found.append(
                Break(
                    service,
                    chain,
                    seq,
                    "tampered",
                    f"column {name} is {value!r} but the chained body says {body.get(name)!r}",
                )
            )
    return found


def _check_head(
    service: str, chain: str, last_seq: int, last_hash: str, head: tuple[int, str] | None
) -> list[Break]:
    if head is None:
        return [Break(service, chain, None, "tampered", "the chain has no head row")]
    seq, hash_ = head
    if seq > last_seq:
        return [
            Break(
                service,
                chain,
                last_seq + 1,
                "deleted",
                f"the log ends at seq {last_seq}; the head says {seq}: entries deleted at the tail",
            )
        ]
    if seq < last_seq:
        return [
            Break(
                service,
                chain,
                seq + 1,
                "inserted",
                f"entries {seq + 1}..{last_seq} lie beyond the head (seq {seq}): inserted",
            )
        ]
    if hash_ != last_hash:
        return [Break(service, chain, seq, "tampered", "the head's hash is not the entry's")]
    return []


@dataclass
class Seals:
    """What a service's valid seals hold: every sealed (seq, hash) per chain and the file
    that sealed it; the seals that are not usable, as breaks."""

    count: int = 0
    sealed: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    bad: list[Break] = field(default_factory=list)


def load_seals(
    service: str, seal_dir: Path, keyring: KeyRing | None, wanted: Sequence[str] | None
) -> Seals:
    seals = Seals()
    for path in seal_files(seal_dir, service):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            check_seal(document, service, keyring)
        except (OSError, ValueError, KeyError, TypeError, SealInvalid) as exc:
            seals.bad.append(Break(service, path.name, None, "seal", f"seal not usable: {exc}"))
            continue
        seals.count += 1
        for chain, seq, hash_ in document["heads"]:
            if wanted is None or chain in wanted:
                seals.sealed.setdefault(chain, {})[seq] = (hash_, path.name)
    return seals


def _check_seals(
    service: str, seals: Seals, log: dict[str, dict[int, str]], report: Report
) -> list[Break]:
    # Every (seq, hash) any valid seal recorded for a chain: each one must still be there.
    report.seals += seals.count
    breaks = list(seals.bad)
    sealed = seals.sealed
    for chain in sorted(sealed):
        entries = log.get(chain, {})
        last = max(entries, default=0)
        for seq, (hash_, name) in sorted(sealed[chain].items()):
            have = entries.get(seq)
            if have is None:
                breaks.append(
                    Break(
                        service,
                        chain,
                        seq,
                        "deleted",
                        f"seal {name} holds seq {seq}; the log "
                        + (f"ends at seq {last}" if last else "has no entry of this chain")
                        + " (tail deleted or an older backup restored)",
                    )
                )
            elif have != hash_:
                breaks.append(
                    Break(
                        service,
                        chain,
                        seq,
                        "tampered",
                        f"seal {name} holds hash {hash_[:16]}… for seq {seq}; the log has "
                        f"{have[:16]}… (rewritten since the seal)",
                    )
                )
    return breaks
