"""The issue 12 psql attacker against the running services' own chains and tables (item
3): claims go through the stack, then the database administrator — triggers switched
off with ``session_replication_role = replica`` — multiplies a paid payout's amount by
ten, rewrites a decision's ``decided_by``, edits and deletes intake timeline rows and
removes the newest finance audit rows. ``claimflow audit verify --json`` exits 1 naming
each break, and ``GET /claims/{id}/audit`` (auditor only) names them per service; an
untouched claim verifies clean in both. What the test changed is put back at the end
(the deleted rows re-inserted as they were), so the session's stack stays honest."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from shared.audit.seal import seal_now
from shared.devstack import stack
from shared.devstack.stack import StackConfig
from tests.e2e.helpers import approve_through_review, submit_claim, wait_status
from tests.e2e.test_payout_flow import (
    FINANCE,
    SUPERVISOR,
    account,
    approve_all,
    decide_request,
    once,
    payout_of,
)
from tests.tokens import AUDITOR, finance_clerk, reviewer, window

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "review", "payout")


async def audit(client: httpx.AsyncClient, cfg: StackConfig, service: str, claim: str) -> Any:
    r = await client.get(f"{cfg.url(service)}/claims/{claim}/audit", headers=dict(AUDITOR))
    assert r.status_code == 200, r.text
    return r.json()


def cli_verify(cfg: StackConfig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "shared.devstack.cli",
            "audit",
            "verify",
            "--json",
            "--timeline-grace",
            "0",
            "--database-url",
            cfg.admin_dsn,
            "--seals",
            str(stack.seal_dir(cfg)),
            "--keys",
            str(stack.keys_dir(cfg) / "public.json"),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def paid_claim_with_a_correction(client: httpx.AsyncClient, cfg: StackConfig) -> str:
    """Returned by the bank, corrected under dual control, paid: the payout's finance
    chain has entries, and so has ``finance_audit``."""
    claim_id = await submit_claim(client, cfg, bank_account=account("0000000003"))
    await approve_all(client, cfg, claim_id)
    payout = await payout_of(client, cfg, claim_id, "returned")
    url = f"{cfg.url('payout')}/payouts/{payout['payout_id']}/account-correction"
    r = await client.post(
        url,
        json={"payee": account("0000000042"), "reason": "账号有误"},
        headers=once(FINANCE),
    )
    assert r.status_code == 202, r.text
    approved = await decide_request(client, cfg, r.json()["request_id"], SUPERVISOR)
    assert approved.status_code == 200, approved.text
    await wait_status(client, cfg, claim_id, "paid")
    return claim_id


async def test_psql_tampering_is_named_by_the_cli_and_the_audit_api(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    tampered = await paid_claim_with_a_correction(client, services)
    clean = await submit_claim(client, services)
    await approve_through_review(client, services, clean)
    await wait_status(client, services, clean, "paid")

    # Who may read it: the auditor only; no token, no answer.
    url = f"{services.url('review')}/claims/{clean}/audit"
    anonymous = await client.get(url, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    for who in (window(), reviewer("tax", "tax-reviewer"), finance_clerk()):
        r = await client.get(url, headers=dict(who))
        assert r.status_code == 403, r.text
        assert r.json()["errors"][0]["rule"] == "permission"
    missing = await client.get(
        f"{services.url('intake')}/claims/{uuid.uuid4()}/audit", headers=dict(AUDITOR)
    )
    assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "claim_id"

    # Sealed now (the services seal every 300 s): the heads are outside the database.
    await seal_now(services.admin_dsn, SERVICES, stack.keys_dir(services), stack.seal_dir(services))
    for claim in (clean, tampered):
        for service in SERVICES:
            view = await audit(client, services, service, claim)
            assert view["ok"], (service, view["breaks"])
            assert view["entries"] and {e["status"] for e in view["entries"]} == {"ok"}
            assert all(c["seal"] == "sealed" for c in view["chains"]), view["chains"]
            assert all(e["sealed"] for e in view["entries"])
    payout_view = await audit(client, services, "payout", tampered)
    finance_chain = next(c["chain"] for c in payout_view["chains"] if c["chain"] != tampered)
    payout_id = finance_chain.removeprefix("payout:")
    assert "****" in json.dumps(payout_view["entries"])  # account numbers masked
    assert "6222020200000000042" not in json.dumps(payout_view["entries"])
    good = cli_verify(services, "--claim", tampered, "--chain", finance_chain)
    assert good.returncode == 0, good.stdout + good.stderr

    admin = await asyncpg.connect(services.admin_dsn)
    saved: dict[str, list[asyncpg.Record]] = {}
    task = await admin.fetchrow(
        """SELECT task_id, decided_by FROM review.review_tasks
           WHERE claim_id = $1 AND decided_by IS NOT NULL ORDER BY department LIMIT 1""",
        uuid.UUID(tampered),
    )
    submitted = await admin.fetchrow(
        """SELECT event_id, payload FROM intake.claim_timeline
           WHERE claim_id = $1 AND event_type = 'claim.submitted'""",
        uuid.UUID(tampered),
    )
    saved["timeline"] = await admin.fetch(
        """SELECT * FROM intake.claim_timeline
           WHERE claim_id = $1 AND event_type = 'review.cross_checked'""",
        uuid.UUID(tampered),
    )
    saved["finance_audit"] = await admin.fetch(
        "SELECT * FROM payout.finance_audit WHERE payout_id = $1 ORDER BY id DESC LIMIT 1",
        uuid.UUID(payout_id),
    )
    saved["audit_log"] = await admin.fetch(
        """SELECT * FROM payout.audit_log WHERE chain_id = $1
           ORDER BY seq DESC LIMIT 1""",
        tampered,
    )
    payout_row = await admin.fetchrow(
        "SELECT amount_fen, approved_amount_fen, paid_amount_fen FROM payout.payouts "
        "WHERE payout_id = $1",
        uuid.UUID(payout_id),
    )
    assert task and submitted and payout_row and saved["timeline"] and saved["finance_audit"]
    try:
        async with admin.transaction():
            await admin.execute("SET LOCAL session_replication_role = replica")
            # the paid amount x10 (the CHECKs want approved >= amount = paid: all three)
            await admin.execute(
                """UPDATE payout.payouts SET amount_fen = amount_fen * 10,
                       approved_amount_fen = approved_amount_fen * 10,
                       paid_amount_fen = paid_amount_fen * 10 WHERE payout_id = $1""",
                uuid.UUID(payout_id),
            )
            await admin.execute(
                "UPDATE review.review_tasks SET decided_by = 'someone-else' WHERE task_id = $1",
                task["task_id"],
            )
            # intake's timeline: its own event edited, another service's event deleted
            await admin.execute(
                """UPDATE intake.claim_timeline SET payload = jsonb_set(payload,
                       '{requested_amount_fen}', to_jsonb(99999999)) WHERE event_id = $1""",
                submitted["event_id"],
            )
            await admin.execute(
                """DELETE FROM intake.claim_timeline
                   WHERE claim_id = $1 AND event_type = 'review.cross_checked'""",
                uuid.UUID(tampered),
            )
            # the newest finance audit row, and the newest entry of payout's claim chain
            await admin.execute(
                "DELETE FROM payout.finance_audit WHERE id = $1", saved["finance_audit"][0]["id"]
            )
            await admin.execute(
                "DELETE FROM payout.audit_log WHERE id = $1", saved["audit_log"][0]["id"]
            )

        bad = cli_verify(services, "--claim", tampered, "--chain", finance_chain)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        reports = {r["service"]: r for r in json.loads(bad.stdout)}
        cli_found = {
            (b["service"], b["kind"], b["table"], b["column"])
            for r in reports.values()
            for b in r["breaks"]
        }
        expected = {
            ("payout", "state_differs", "payouts", "amount_fen"),
            ("review", "state_differs", "review_tasks", "decided_by"),
            ("intake", "state_differs", "claim_timeline", "payload.requested_amount_fen"),
            ("intake", "state_differs", "claim_timeline", "*"),  # the deleted row
            ("payout", "state_differs", "finance_audit", "*"),
            ("payout", "deleted", None, None),  # the chain's newest entry, caught by the seal
        }
        assert expected <= cli_found, cli_found
        decided_by = next(
            b
            for b in reports["review"]["breaks"]
            if b["table"] == "review_tasks" and b["column"] == "decided_by"
        )
        assert decided_by["found"] == "someone-else" and decided_by["chained"] == task["decided_by"]
        amount = next(b for b in reports["payout"]["breaks"] if b["column"] == "amount_fen")
        assert int(amount["found"]) == 10 * int(amount["chained"]) == payout_row["amount_fen"] * 10

        # The API: each service names its own breaks, per entry and in ``breaks``.
        views = {s: await audit(client, services, s, tampered) for s in SERVICES}
        assert not any(v["ok"] for v in views.values())
        api_found = {
            (s, b["kind"], b["table"], b["column"]) for s, v in views.items() for b in v["breaks"]
        }
        assert expected - {("intake", "state_differs", "claim_timeline", "*")} <= api_found
        review_entry = next(
            e
            for e in views["review"]["entries"]
            if e["action"] == "review.task_decided"
            and e["body"]["data"]["payload"]["task_id"] == str(task["task_id"])
        )
        assert review_entry["status"] == "state_differs"
        assert "someone-else" in review_entry["problems"][0]
        payout_chain = next(c for c in views["payout"]["chains"] if c["chain"] == tampered)
        assert payout_chain["seal"] == "bad_seal"  # the sealed head is gone
        # the untouched claim still verifies clean next to it
        for service in SERVICES:
            assert (await audit(client, services, service, clean))["ok"]
    finally:
        async with admin.transaction():
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.execute(
                """UPDATE payout.payouts SET amount_fen = $2, approved_amount_fen = $3,
                       paid_amount_fen = $4 WHERE payout_id = $1""",
                uuid.UUID(payout_id),
                *payout_row.values(),
            )
            await admin.execute(
                "UPDATE review.review_tasks SET decided_by = $2 WHERE task_id = $1",
                task["task_id"],
                task["decided_by"],
            )
            await admin.execute(
                "UPDATE intake.claim_timeline SET payload = $2 WHERE event_id = $1",
                submitted["event_id"],
                submitted["payload"],
            )
            for table, rows in (
                ("intake.claim_timeline", saved["timeline"]),
                ("payout.finance_audit", saved["finance_audit"]),
                ("payout.audit_log", saved["audit_log"]),
            ):
                for row in rows:
                    columns = list(row.keys())
                    await admin.execute(
                        f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                        f"({', '.join(f'${i + 1}' for i in range(len(columns)))})",
                        *row.values(),
                    )
        await admin.close()
    restored = cli_verify(services, "--claim", tampered, "--chain", finance_chain)
    assert restored.returncode == 0, restored.stdout
