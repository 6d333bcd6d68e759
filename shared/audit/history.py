"""``GET /claims/{claim_id}/audit`` (issue 12 item 3), one implementation for the three
services: a claim's chain in the service (and the chains linked to it: payout's
``payout:<id>``), every entry with its verification status computed here, on the
server, by the same verifier as ``claimflow audit verify`` — hashes, links, heads, the
signed seals, and the service's state rows against the chain (``shared.audit.state``).

Per entry ``status``: ``ok``; ``tampered`` (the body does not hash to the stored hash,
or a column differs from the chained body); ``inserted`` (its ``prev_hash`` is not the
hash before it, or it lies beyond the head); ``deleted`` (the entry itself is missing:
reported in ``breaks`` with its seq, and the console shows a placeholder row);
``state_differs`` (the entry is intact, but a state row says something else than it).
Per chain ``seal``: ``sealed`` (the newest entry is in a valid seal), ``not_sealed_yet``
(entries newer than the last seal — the seal interval), ``bad_seal`` (a seal file that
does not verify, or a sealed head the log no longer has).

Bank account numbers in the bodies are shown as ``****1234`` (the auditor reads
payouts masked too); the verification itself ran on the stored text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.audit.keys import KeyRing
from shared.audit.seal import snapshot
from shared.audit.state import LINKED_CHAINS, PROJECTIONS, compare_state, parse_entries
from shared.audit.verify import Break, load_seals, read_log, state_break, verify_service
from shared.config import ServiceSettings
from shared.contracts.common import mask_account_number
from shared.db import DbConnection
from shared.problems import NotFound

EntryStatus = Literal["ok", "tampered", "inserted", "deleted", "state_differs"]
SealStatus = Literal["sealed", "not_sealed_yet", "bad_seal"]
_SEVERITY = {"tampered": 4, "inserted": 3, "deleted": 2, "state_differs": 1}


class AuditBreak(BaseModel):
    """One break: where (service, chain, seq) and what differs."""

    service: str
    chain: str
    seq: int | None
    kind: Literal["tampered", "deleted", "inserted", "seal", "state_differs"]
    detail: str
    table: str | None = None
    row: str | None = None
    column: str | None = None
    found: str | None = Field(default=None, description="state_differs: the value in the table")
    chained: str | None = Field(default=None, description="state_differs: the value chained")


class AuditEntry(BaseModel):
    chain: str
    seq: int
    occurred_at: datetime
    actor: str
    action: str
    body: dict[str, Any] | None = Field(
        description="the chained body, parsed (None: it does not parse); account numbers "
        "masked ****1234"
    )
    hash: str
    prev_hash: str
    status: EntryStatus
    problems: list[str] = Field(description="what is wrong with this entry (empty when ok)")
    sealed: bool = Field(description="covered by a valid seal (outside the database)")


class AuditChain(BaseModel):
    chain: str
    entries: int
    head_seq: int | None = Field(description="audit_heads' seq (None: no head row)")
    seal: SealStatus
    sealed_seq: int | None = Field(description="the newest seq a valid seal holds")
    sealed_by: str | None = Field(description="the seal file that holds it")


class ClaimAudit(BaseModel):
    """A claim's audit history in one service, verified on the server just now."""

    service: str
    claim_id: uuid.UUID
    verified_at: datetime
    ok: bool = Field(description="no break of any kind (seals included)")
    seals_checked: int = Field(description="valid seal files of the service")
    signatures_checked: bool = Field(description="seal signatures verified with public keys")
    chains: list[AuditChain]
    entries: list[AuditEntry]
    breaks: list[AuditBreak]
    state_covered: list[str] = Field(
        description="table.column pairs compared with the chain (docs/audit.md)"
    )


def _entry_status(kind: str) -> EntryStatus:
    if kind == "tampered":
        return "tampered"
    if kind == "inserted":
        return "inserted"
    return "state_differs" if kind == "state_differs" else "deleted"


def covered(service: str) -> list[str]:
    """The state columns compared for ``service`` (also shown in docs/audit.md)."""
    found = [f"{p.table}.{c.column}" for p in PROJECTIONS.get(service, ()) for c in p.columns]
    if service == "intake":
        found.append("claim_timeline.*")
    if service == "payout":
        found.append("finance_audit.*")
    return found


def _masked(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: mask_account_number(str(v)) if k == "account_number" and v else _masked(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _body(text: str) -> dict[str, Any] | None:
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return _masked(body) if isinstance(body, dict) else None


async def claim_audit(
    conn: DbConnection,
    service: str,
    claim_id: uuid.UUID,
    *,
    seal_dir: Path | None,
    keyring: KeyRing | None,
    schema: str | None = None,
) -> ClaimAudit:
    """The verified audit history of ``claim_id`` in ``service``; NotFound (404) when the
    service has neither a chain nor a state row for the claim."""
    schema = schema or service
    async with snapshot(conn):
        linked_sql = LINKED_CHAINS.get(service)
        linked = (
            [r[0] for r in await conn.fetch(linked_sql.format(schema=f'"{schema}"'), claim_id)]
            if linked_sql
            else []
        )
        chains = [str(claim_id), *sorted(linked)]
        seals = load_seals(service, seal_dir, keyring, chains) if seal_dir else None
        report = await verify_service(
            conn,
            service,
            schema=schema,
            seal_dir=seal_dir,
            keyring=keyring,
            chains=chains,
            seals=seals,
        )
        rows = await read_log(conn, schema, chains)
        heads = {
            r["chain_id"]: r["seq"]
            for r in await conn.fetch(
                f'SELECT chain_id, seq FROM "{schema}".audit_heads WHERE chain_id = ANY($1)',
                chains,
            )
        }
        diffs = await compare_state(
            conn, service, {service: parse_entries(service, rows)}, schema=schema, chains=chains
        )
        if (
            not rows
            and not heads
            and not diffs
            and not await _has_state(conn, schema, service, claim_id)
        ):
            raise NotFound(
                f"{service} has no audit history for claim {claim_id}",
                field="claim_id",
                rule="exists",
            )
    breaks = [*report.breaks, *(state_break(d) for d in diffs)]
    at: dict[tuple[str, int], list[Break]] = {}
    for b in breaks:
        if b.seq is not None:
            at.setdefault((b.chain, b.seq), []).append(b)
    seal_broken = {
        b.chain for b in breaks if b.kind in ("deleted", "tampered") and "seal " in b.detail
    }
    any_bad_seal = bool(seals and seals.bad)
    entries: list[AuditEntry] = []
    last: dict[str, int] = {}
    for r in rows:
        chain, seq = r["chain_id"], r["seq"]
        last[chain] = seq
        mine = [b for b in at.get((chain, seq), []) if b.kind != "seal"]
        # A "deleted" break at an existing seq is the log ending where the head says more,
        # or the entries before it missing: that entry itself is intact.
        own = [b for b in mine if b.kind != "deleted"]
        status: EntryStatus = "ok"
        if own:
            status = _entry_status(max((b.kind for b in own), key=lambda k: _SEVERITY.get(k, 0)))
        sealed_seqs = seals.sealed.get(chain, {}) if seals else {}
        entries.append(
            AuditEntry(
                chain=chain,
                seq=seq,
                occurred_at=r["occurred_at"],
                actor=r["actor"],
                action=r["action"],
                body=_body(r["body"]),
                hash=r["hash"],
                prev_hash=r["prev_hash"],
                status=status,
                problems=[b.detail for b in own],
                sealed=any(s >= seq for s in sealed_seqs),
            )
        )
    views: list[AuditChain] = []
    for chain in chains:
        if chain not in last and chain not in heads:
            continue
        sealed = seals.sealed.get(chain, {}) if seals else {}
        sealed_seq = max(sealed, default=None)
        seal: SealStatus
        if any_bad_seal or chain in seal_broken:
            seal = "bad_seal"
        elif sealed_seq is not None and sealed_seq >= last.get(chain, 0):
            seal = "sealed"
        else:
            seal = "not_sealed_yet"
        views.append(
            AuditChain(
                chain=chain,
                entries=sum(1 for e in entries if e.chain == chain),
                head_seq=heads.get(chain),
                seal=seal,
                sealed_seq=sealed_seq,
                sealed_by=sealed[sealed_seq][1] if sealed_seq is not None else None,
            )
        )
    return ClaimAudit(
        service=service,
        claim_id=claim_id,
        verified_at=datetime.now(UTC),
        ok=not breaks,
        seals_checked=seals.count if seals else 0,
        signatures_checked=keyring is not None,
        chains=views,
        entries=entries,
        breaks=[AuditBreak.model_validate(b, from_attributes=True) for b in breaks],
        state_covered=covered(service),
    )


async def _has_state(conn: DbConnection, schema: str, service: str, claim_id: uuid.UUID) -> bool:
    """Whether any state table the service keeps for claims has a row of this one (a
    claim whose chain is gone entirely is still shown — as broken)."""
    for p in PROJECTIONS.get(service, ()):
        found = await conn.fetchval(
            f'SELECT EXISTS (SELECT 1 FROM "{schema}".{p.table} WHERE {p.claim_column} = $1)',
            claim_id,
        )
        if found:
            return True
    return False


async def service_claim_audit(
    conn: DbConnection, service: str, settings: ServiceSettings, claim_id: uuid.UUID
) -> ClaimAudit:
    """``claim_audit`` with the service's own seal folder and trusted public keys."""
    return await claim_audit(
        conn,
        service,
        claim_id,
        seal_dir=Path(settings.audit_seal_dir) if settings.audit_seal_dir else None,
        keyring=KeyRing.load(settings.event_public_keys) if settings.event_public_keys else None,
    )
