"""Seals and verification on the real PostgreSQL (issue 12 items 2-3): the psql
tampering of the issue (amount x10, decided_by rewritten, entries edited and deleted,
the newest finance entry removed) is named break by break; `claimflow audit verify`
exits non-zero; the independent script of docs/audit.md agrees."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from shared.audit.chain import append, append_finance, audit_hook, fund_chain
from shared.audit.keys import KeyRing, ServiceKey, ensure_keys
from shared.audit.seal import seal_files, write_seal
from shared.audit.verify import Break, verify_service
from shared.contracts import BankAccount, ReviewDecidedV1, ReviewTaskDecidedV1
from shared.contracts.topics import REVIEW_EVENTS
from shared.db import create_pool, migrate
from shared.devstack.stack import StackConfig
from shared.unit_of_work import UnitOfWorkFactory

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
PAYEE = BankAccount(
    bank_name="自贡银行", account_name="测试企业", account_number="6222020200001234567"
)


@dataclass
class Books:
    schema: str
    pool: asyncpg.Pool
    key: ServiceKey
    keyring: KeyRing
    seals: Path
    claim: uuid.UUID


async def fill(pool: asyncpg.Pool, claim: uuid.UUID) -> None:
    """A claim decided by two departments and approved; a fund topped up twice."""
    tick = iter(T0 + timedelta(minutes=i) for i in range(100))
    uows = UnitOfWorkFactory("review", REVIEW_EVENTS, clock=lambda: next(tick), hooks=(audit_hook,))
    for dept, who in (("tax", "rev-tax-1"), ("sme", "rev-sme-2")):
        async with uows.acquire(pool) as uow:
            uow.emit(
                ReviewTaskDecidedV1(
                    task_id=uuid.uuid4(), department=dept, decision="approve", decided_by=who
                ),
                claim_id=claim,
            )
    async with uows.acquire(pool) as uow:
        uow.emit(
            ReviewDecidedV1(
                decision="approved",
                approved_amount_fen=5_000_00,
                claim_kind="vat_refund",
                payee=PAYEE,
                claim_received_at=T0,
            ),
            claim_id=claim,
        )
    for amount in (1000_00, 2000_00):
        async with pool.acquire() as conn, conn.transaction():
            await append_finance(
                conn,
                actor="fin-1",
                action="fund.topped_up",
                body={"amount_fen": amount},
                program_id="p1",
                occurred_at=next(tick),
            )


@pytest.fixture
async def books(infra: StackConfig, tmp_path: Path) -> AsyncIterator[Books]:
    schema = f"v_{uuid.uuid4().hex[:10]}"
    empty = tmp_path / "migrations"
    empty.mkdir()
    await migrate(infra.dsn, schema, empty)
    pool = await create_pool(infra.dsn, schema)
    keyring = ensure_keys(tmp_path / "keys", ["review", "payout"])
    key = ServiceKey.load(tmp_path / "keys" / "review.key")
    claim = uuid.uuid4()
    await fill(pool, claim)
    async with pool.acquire() as conn:
        assert await write_seal(conn, service="review", key=key, directory=tmp_path / "seals")
    try:
        yield Books(schema, pool, key, keyring, tmp_path / "seals", claim)
    finally:
        await pool.close()


async def verify(b: Books) -> list[Break]:
    async with b.pool.acquire() as conn:
        report = await verify_service(
            conn, "review", schema=b.schema, seal_dir=b.seals, keyring=b.keyring
        )
    assert report.chains == 2 and report.seals >= 1
    return report.breaks


async def tamper(b: Books, *statements: str) -> None:
    """What a DBA can do with psql: switch the triggers off, change, switch them on."""
    async with b.pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        for statement in statements:
            await conn.execute(statement)


async def test_intact_chains_verify_and_an_unchanged_state_is_not_sealed_twice(
    books: Books,
) -> None:
    assert await verify(books) == []
    async with books.pool.acquire() as conn:
        again = await write_seal(conn, service="review", key=books.key, directory=books.seals)
    assert again is None and len(seal_files(books.seals, "review")) == 1


async def test_the_issues_psql_tampering_is_named_break_by_break(books: Books) -> None:
    claim = str(books.claim)
    fund = fund_chain("p1")
    await tamper(
        books,
        # the approved amount x10, in the body only (the hash no longer recomputes)
        f"""UPDATE audit_log SET body = replace(body, '"approved_amount_fen":"500000"',
               '"approved_amount_fen":"5000000"') WHERE chain_id = '{claim}' AND seq = 3""",
        # decided_by rewritten in the column a screen shows
        f"UPDATE audit_log SET actor = 'someone-else' WHERE chain_id = '{claim}' AND seq = 1",
        # an entry in the middle deleted
        f"DELETE FROM audit_log WHERE chain_id = '{claim}' AND seq = 2",
        # the newest finance entry removed, and the head moved back to hide it
        f"DELETE FROM audit_log WHERE chain_id = '{fund}' AND seq = 2",
        f"""UPDATE audit_heads SET seq = 1,
               hash = (SELECT hash FROM audit_log WHERE chain_id = '{fund}' AND seq = 1)
            WHERE chain_id = '{fund}'""",
    )
    breaks = await verify(books)
    found = {(b.chain, b.seq, b.kind) for b in breaks}
    assert (claim, 3, "tampered") in found  # amount x10: body does not hash
    assert (claim, 1, "tampered") in found  # actor column differs from the body
    assert (claim, 2, "deleted") in found
    assert (fund, 2, "deleted") in found  # only the seal knows: the head was moved too
    texts = "\n".join(b.line() for b in breaks)
    assert "column actor is 'someone-else' but the chained body says 'rev-tax-1'" in texts
    assert "does not hash" in texts and "entries 2 missing" in texts
    assert re.search(r"seal \S+ holds seq 2; the log ends at seq 1", texts)
    assert all(b.service == "review" for b in breaks)


async def test_a_chain_rewritten_with_recomputed_hashes_is_caught_by_the_seal(
    books: Books,
) -> None:
    """A DBA who knows the format rewrites the decision and recomputes every hash after
    it (and the head): the chain is consistent again, but not with the signed seal."""
    from shared.audit.chain import build_entry

    claim = str(books.claim)
    rows = await books.pool.fetch("SELECT * FROM audit_log WHERE chain_id = $1 ORDER BY seq", claim)
    body = json.loads(rows[2]["body"])
    body["data"]["payload"]["approved_amount_fen"] = "5000000"
    forged = build_entry(
        claim,
        3,
        rows[2]["prev_hash"],
        occurred_at=rows[2]["occurred_at"],
        actor=rows[2]["actor"],
        action=rows[2]["action"],
        data=body["data"],
    )
    await tamper(
        books,
        f"""UPDATE audit_log SET body = '{forged.body}', hash = '{forged.hash}'
            WHERE chain_id = '{claim}' AND seq = 3""",
        f"UPDATE audit_heads SET hash = '{forged.hash}' WHERE chain_id = '{claim}'",
    )
    breaks = await verify(books)
    assert [(b.chain, b.seq, b.kind) for b in breaks] == [(claim, 3, "tampered")]
    assert "rewritten since the seal" in breaks[0].detail


async def test_an_inserted_entry_and_a_forged_seal_are_reported(books: Books) -> None:
    claim = str(books.claim)
    await tamper(
        books,
        f"""INSERT INTO audit_log (chain_id, seq, occurred_at, actor, action, body, prev_hash,
               hash) VALUES ('{claim}', 4, now(), 'x', 'review.decided', '{{}}', '{"0" * 64}',
               '{"1" * 64}')""",
    )
    # A seal signed with payout's key, claiming to be review's.
    payout_key = ServiceKey.load(books.seals.parent / "keys" / "payout.key")
    async with books.pool.acquire() as conn:
        forged = await write_seal(
            conn, service="payout", key=payout_key, directory=books.seals, force=True
        )
    assert forged is not None
    target = books.seals / "review" / ("99999999" + forged.name[8:])
    target.write_text(forged.read_text().replace('"service": "payout"', '"service": "review"'))
    breaks = await verify(books)
    kinds = {(b.chain, b.seq, b.kind) for b in breaks}
    assert (claim, 4, "inserted") in kinds  # prev_hash is not entry 3's hash
    assert (claim, 4, "tampered") in kinds  # and its hash does not recompute
    assert (target.name, None, "seal") in kinds


async def test_update_and_delete_without_disabling_the_trigger_are_refused(books: Books) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await books.pool.execute("UPDATE audit_log SET actor = 'x'")
    assert await verify(books) == []


# --- the CLI over three services, and the auditor's own script --------------------------


@pytest.fixture
async def three_services(infra: StackConfig, tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    """A database of its own with the three services' schemas (their own migrations:
    the verifier compares their state tables too)."""
    name = f"audit_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(infra.dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = infra.dsn.rsplit("/", 1)[0] + f"/{name}"
    empty = tmp_path / "migrations"
    empty.mkdir()
    try:
        for service in ("intake", "review", "payout"):
            await migrate(dsn, service, REPO / "services" / service / "migrations")
        yield dsn, tmp_path
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shared.devstack.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_claimflow_audit_verify_exits_non_zero_naming_service_chain_and_seq(
    three_services: tuple[str, Path],
) -> None:
    dsn, folder = three_services
    claim = str(uuid.uuid4())
    conn = await asyncpg.connect(dsn)
    try:
        for service in ("intake", "review", "payout"):
            async with conn.transaction():
                await conn.execute(f'SET LOCAL search_path TO "{service}"')
                for i in range(3):
                    await append(conn, claim, "u", f"{service}.step", {"amount_fen": i + 1})
    finally:
        await conn.close()
    ensure_keys(folder / "keys", ("intake", "review", "payout"))
    common = ["--database-url", dsn, "--data-dir", str(folder)]
    sealed = cli("audit", "seal", *common)
    assert sealed.returncode == 0, sealed.stderr
    good = cli("audit", "verify", "--claim", claim, *common)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "payout: 1 chains, 3 entries, 1 seals" in good.stderr
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("DELETE FROM payout.audit_log WHERE seq = 3")
            await conn.execute("UPDATE payout.audit_heads SET seq = 2")
    finally:
        await conn.close()
    bad = cli("audit", "verify", *common)
    assert bad.returncode == 1
    assert f"payout chain {claim} seq 3: deleted: seal" in bad.stdout
    assert "intake" not in bad.stdout and "review chain" not in bad.stdout


def docs_script() -> str:
    text = (REPO / "docs" / "audit.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(# verify_chain\.py.*?)```", text, re.S)
    assert match, "docs/audit.md lost its verify_chain.py"
    script = match.group(1)
    assert len(script.strip().splitlines()) <= 12  # ten lines of code and a header
    return script


async def test_the_ten_line_script_of_the_docs_verifies_a_chain_independently(
    books: Books, tmp_path: Path
) -> None:
    script = tmp_path / "verify_chain.py"
    script.write_text(docs_script())

    async def export() -> str:
        rows = await books.pool.fetch(
            """SELECT json_build_object('seq', seq, 'prev_hash', prev_hash, 'hash', hash,
                                        'body', body)::text AS line
               FROM audit_log WHERE chain_id = $1 ORDER BY seq""",
            str(books.claim),
        )
        return "".join(r["line"] + "\n" for r in rows)

    def run(lines: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(script)], input=lines, capture_output=True, text=True, check=False
        )

    ok = run(await export())
    assert ok.returncode == 0 and "3 entries ok" in ok.stdout, ok.stdout + ok.stderr
    await tamper(
        books,
        f"""UPDATE audit_log SET body = replace(body, '"500000"', '"5000000"')
            WHERE chain_id = '{books.claim}' AND seq = 3""",
    )
    broken = run(await export())
    assert broken.returncode != 0 and "seq 3" in broken.stdout + broken.stderr


async def test_the_services_own_round_seals_verifies_and_exports_the_breaks(
    three_services: tuple[str, Path],
) -> None:
    """shared.audit.loop: what each service runs every CLAIMFLOW_AUDIT_SEAL_INTERVAL_S."""
    from shared.audit.loop import seal_and_verify
    from shared.config import ServiceSettings
    from shared.metrics import REGISTRY
    from shared.service_app import ServiceRuntime

    dsn, folder = three_services
    ensure_keys(folder / "keys", ("intake", "review", "payout"))
    settings = ServiceSettings(
        database_url=dsn,
        event_signing_key=str(folder / "keys" / "payout.key"),
        event_public_keys=str(folder / "keys" / "public.json"),
        audit_seal_dir=str(folder / "seals"),
    )
    runtime = ServiceRuntime(name="payout", settings=settings)
    runtime.pool = await create_pool(dsn, "payout")
    try:
        async with runtime.db.acquire() as conn, conn.transaction():
            await append_finance(
                conn, actor="fin-1", action="fund.topped_up", body={"amount_fen": 5}, program_id="p"
            )
            await append_finance(
                conn, actor="fin-1", action="fund.topped_up", body={"amount_fen": 6}, program_id="p"
            )
        assert await seal_and_verify(runtime) == 0
        assert len(seal_files(folder / "seals", "payout")) == 1
        breaks = {"service": "payout"}
        assert REGISTRY.get_sample_value("claimflow_audit_breaks", breaks) == 0
        async with runtime.db.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("DELETE FROM audit_log WHERE seq = 2")
        assert await seal_and_verify(runtime) == 2  # missing at the tail (head), and sealed
        assert REGISTRY.get_sample_value("claimflow_audit_breaks", breaks) == 2
        ran = REGISTRY.get_sample_value(
            "claimflow_audit_verifications_total", {"service": "payout", "result": "broken"}
        )
        assert ran is not None and ran >= 1
    finally:
        await runtime.pool.close()
