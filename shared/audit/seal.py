"""Seals: every chain head of a service hashed into a root, signed, kept outside the
database (issue 12 item 2).

A seal is a JSON file ``<seal dir>/<service>/<sealed_at>-<root prefix>.json``::

    {"format": "claimflow-audit-seal/1", "service": "payout",
     "sealed_at": "2026-11-27T08:00:00.000000Z", "chains": 2,
     "heads": [["<chain id>", <seq>, "<hash>"], ...],      # sorted by chain id
     "root": sha256(canonical({"service": ..., "heads": [...]})),
     "key_id": "payout-…", "signature": base64(Ed25519(SEAL_CONTEXT + canonical(rest)))}

``rest`` is the document without ``signature``. The file lives wherever
``CLAIMFLOW_AUDIT_SEAL_DIR`` points (the dev stack: ``<data folder>/audit-seals``); in
production that is write-once object storage outside the database's blast radius
(docs/audit.md). Deleting the newest entries of a chain, or restoring a backup older
than a seal, leaves a sealed head the log no longer has: ``shared.audit.verify`` says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from shared.audit.chain import canonical, format_time
from shared.audit.keys import KeyRing, ServiceKey
from shared.db import DbConnection

log = logging.getLogger(__name__)

SEAL_FORMAT = "claimflow-audit-seal/1"
SEAL_CONTEXT = b"claimflow-audit-seal/1\n"
"""Prefixed to what a seal's signature covers, so no event signature (made with the same
service key over other bytes) can ever pass for a seal, nor the other way round."""

Head = tuple[str, int, str]


def seal_root(service: str, heads: Sequence[Head]) -> str:
    return hashlib.sha256(
        canonical({"service": service, "heads": [list(h) for h in heads]}).encode()
    ).hexdigest()


def signed_bytes(document: dict[str, Any]) -> bytes:
    unsigned = {k: v for k, v in document.items() if k != "signature"}
    return SEAL_CONTEXT + canonical(unsigned).encode()


async def read_heads(conn: DbConnection, schema: str | None = None) -> list[Head]:
    table = f'"{schema}".audit_heads' if schema else "audit_heads"
    rows = await conn.fetch(f"SELECT chain_id, seq, hash FROM {table} WHERE seq > 0")
    # Sorted here, by code point: the database's collation must not decide the root.
    return sorted((r["chain_id"], r["seq"], r["hash"]) for r in rows)


def build_seal(
    service: str, heads: Sequence[Head], key: ServiceKey, at: datetime
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "format": SEAL_FORMAT,
        "service": service,
        "sealed_at": format_time(at),
        "chains": len(heads),
        "heads": [list(h) for h in heads],
        "root": seal_root(service, heads),
        "key_id": key.key_id,
    }
    document["signature"] = base64.b64encode(key.sign(signed_bytes(document))).decode()
    return document


def seal_files(directory: Path, service: str) -> list[Path]:
    """A service's seals, oldest first (names start with the UTC time)."""
    return sorted((directory / service).glob("*.json"))


async def write_seal(
    conn: DbConnection,
    *,
    service: str,
    key: ServiceKey,
    directory: Path,
    schema: str | None = None,
    now: datetime | None = None,
    force: bool = False,
) -> Path | None:
    """Seal the service's chain heads now; returns the file, or None when nothing changed
    since the newest seal (and not ``force``)."""
    if key.service != service:
        raise ValueError(f"{service} cannot seal with {key.service}'s key")
    async with _snapshot(conn):
        heads = await read_heads(conn, schema)
    at = now or datetime.now(UTC)
    document = build_seal(service, heads, key, at)
    existing = seal_files(directory, service)
    if existing and not force:
        try:
            if json.loads(existing[-1].read_text())["root"] == document["root"]:
                return None
        except (OSError, ValueError, KeyError):
            pass  # an unreadable newest seal: write a fresh one (verify reports the bad one)
    folder = directory / service
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{at.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{document['root'][:12]}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    log.info("%s: sealed %d chain heads into %s", service, len(heads), path.name)
    return path


class _snapshot:
    """A repeatable-read read-only transaction, unless the caller already has one."""

    def __init__(self, conn: DbConnection) -> None:
        self._conn = conn
        self._tx: Any = None

    async def __aenter__(self) -> None:
        if not self._conn.is_in_transaction():
            self._tx = self._conn.transaction(isolation="repeatable_read", readonly=True)
            await self._tx.start()

    async def __aexit__(self, *exc: object) -> None:
        if self._tx is not None:
            await self._tx.commit()


snapshot = _snapshot
"""For readers that want one consistent view (verification, the audit API)."""


class SealInvalid(Exception):
    pass


def check_seal(document: dict[str, Any], service: str, keyring: KeyRing | None) -> None:
    """Raise SealInvalid unless the seal is well formed, its root recomputes from its
    heads, and (given a keyring) it is signed by ``service``'s key."""
    if document.get("format") != SEAL_FORMAT or document.get("service") != service:
        raise SealInvalid(f"not a {SEAL_FORMAT} seal of {service}")
    heads = [tuple(h) for h in document["heads"]]
    if seal_root(service, heads) != document["root"]:
        raise SealInvalid("its root does not recompute from its heads")
    if keyring is None:
        return
    try:
        signer = keyring.verify(
            document["key_id"], base64.b64decode(document["signature"]), signed_bytes(document)
        )
    except Exception as exc:
        raise SealInvalid(f"signature invalid ({type(exc).__name__}: {exc})") from None
    if signer != service:
        raise SealInvalid(f"signed by {signer}'s key, not {service}'s")


async def seal_now(
    dsn: str, services: Sequence[str], keys_dir: Path, seal_dir: Path
) -> dict[str, Path | None]:
    """On demand (``claimflow audit seal``): seal each service's schema with its key."""
    conn = await asyncpg.connect(dsn)
    try:
        done: dict[str, Path | None] = {}
        for service in services:
            key = ServiceKey.load(keys_dir / f"{service}.key")
            done[service] = await write_seal(
                conn, service=service, key=key, directory=seal_dir, schema=service, force=True
            )
        return done
    finally:
        await conn.close()
