"""Invariant 4: a service killed with SIGKILL in the middle of the flow loses nothing and
pays nothing twice once it is back."""

from __future__ import annotations

import asyncio
import random
import uuid

import asyncpg
import httpx
import pytest

from shared.devstack import stack
from shared.devstack.demo_claims import make_claim
from tests.conftest import ServiceProcesses
from tests.e2e.helpers import decide, submit_claim, tasks_for, wait_status
from tests.tokens import window

pytestmark = pytest.mark.e2e

SMALL_CLAIM = {  # below any sign-off threshold: two department approvals make it final
    "end_credit_balance": "500000.00",
    "base_credit_balance": "0",
    "input_composition_ratio": "0.9000",
    "requested_amount": "450000.00",
}


async def test_payout_and_intake_killed_mid_flow_lose_nothing_and_pay_once(
    service_processes: ServiceProcesses, client: httpx.AsyncClient
) -> None:
    cfg = service_processes.cfg
    claim_ids = [await submit_claim(client, cfg, **SMALL_CLAIM) for _ in range(12)]
    all_tasks = [await tasks_for(client, cfg, c) for c in claim_ids]

    # Approve everything at once, and kill payout while the approvals stream in.
    decisions = asyncio.gather(
        *(decide(client, cfg, t, "approve") for tasks in all_tasks for t in tasks)
    )
    await asyncio.sleep(0.3)
    service_processes.kill("payout")
    assert all(r.status_code == 200 for r in await decisions)
    # Kill intake too while payout is down: its tracker must catch up from the broker.
    service_processes.kill("intake")
    await asyncio.sleep(1)
    service_processes.restart("payout")
    service_processes.restart("intake")

    for claim_id in claim_ids:
        await wait_status(client, cfg, claim_id, "paid", timeout=60)

    conn = await asyncpg.connect(cfg.dsn)
    try:
        ids = [uuid.UUID(c) for c in claim_ids]
        per_claim = await conn.fetch(
            """SELECT p.claim_id, count(DISTINCT p.payout_id) AS payouts,
                      count(i.payout_id) FILTER (WHERE i.status = 'settled') AS settled,
                      sum(p.amount_fen) AS amount_fen
               FROM payout.payouts p LEFT JOIN bank_sim.instructions i USING (payout_id)
               WHERE p.claim_id = ANY($1::uuid[]) GROUP BY p.claim_id""",
            ids,
        )
    finally:
        await conn.close()
    assert len(per_claim) == len(claim_ids)
    assert all(r["payouts"] == 1 and r["settled"] == 1 for r in per_claim), per_claim
    assert all(r["amount_fen"] == 450_000_00 for r in per_claim)


async def test_review_killed_between_decisions_keeps_every_decision(
    service_processes: ServiceProcesses, client: httpx.AsyncClient
) -> None:
    cfg = service_processes.cfg
    claim_ids = [await submit_claim(client, cfg, **SMALL_CLAIM) for _ in range(6)]
    all_tasks = [await tasks_for(client, cfg, c) for c in claim_ids]
    # First department decides everywhere, then review dies before the second decides.
    for tasks in all_tasks:
        assert (await decide(client, cfg, tasks[0], "approve")).status_code == 200
    service_processes.kill("review")
    service_processes.restart("review")
    for tasks in all_tasks:
        assert (await decide(client, cfg, tasks[1], "approve")).status_code == 200
    for claim_id in claim_ids:
        view = await wait_status(client, cfg, claim_id, "paid", timeout=60)
        decided = [e for e in view["timeline"] if e["event_type"] == "review.task_decided"]
        assert len(decided) == 2


async def test_database_crash_mid_flow_loses_nothing_and_pays_once(
    service_processes: ServiceProcesses, client: httpx.AsyncClient
) -> None:
    cfg = service_processes.cfg
    claim_ids = [await submit_claim(client, cfg, **SMALL_CLAIM) for _ in range(8)]
    all_tasks = [await tasks_for(client, cfg, c) for c in claim_ids]
    for tasks in all_tasks:
        for task in tasks:
            assert (await decide(client, cfg, task, "approve")).status_code == 200
    # PostgreSQL dies at once (no checkpoint, connections cut) while payouts are in flight.
    await asyncio.to_thread(stack.stop_postgres, cfg, "immediate")
    refused = await client.post(
        f"{cfg.url('intake')}/claims",
        json=make_claim(random.Random(5), "2026-09"),
        headers=window(),
    )
    assert refused.status_code == 503, refused.text  # the caller's retry, not a 500
    assert refused.json()["errors"][0]["rule"] == "service_unavailable"
    await asyncio.sleep(1)
    await asyncio.to_thread(stack.start_postgres, cfg)
    for claim_id in claim_ids:
        await wait_status(client, cfg, claim_id, "paid", timeout=90)
    await asyncio.to_thread(stack.wait_healthy, cfg)
    conn = await asyncpg.connect(cfg.dsn)
    try:
        rows = await conn.fetch(
            """SELECT p.claim_id, count(*) FILTER (WHERE i.status = 'settled') AS settled
               FROM payout.payouts p JOIN bank_sim.instructions i USING (payout_id)
               WHERE p.claim_id = ANY($1::uuid[]) GROUP BY p.claim_id""",
            [uuid.UUID(c) for c in claim_ids],
        )
    finally:
        await conn.close()
    assert sorted(r["settled"] for r in rows) == [1] * len(claim_ids)
