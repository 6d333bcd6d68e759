"""Payout over the real stack: returned payments corrected by finance, transient failures
retried, holds released by intake's documents event, the finance API, reconciliation,
and the demo's figures against the payout database."""

from __future__ import annotations

import asyncio
import io
import random
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
from rich.console import Console

from shared.contracts import (
    BankAccount,
    ClaimDocumentsCompletedV1,
    EventEnvelope,
    ReviewDecidedV1,
)
from shared.contracts.topics import INTAKE_EVENTS, REVIEW_EVENTS
from shared.devstack.demo import run_demo
from shared.devstack.demo_claims import make_subsidy_claim
from shared.devstack.stack import StackConfig
from shared.money import fen_to_yuan
from tests.e2e.helpers import claim_status, decide, eventually, submit_claim, tasks_for, wait_status
from tests.kafka_helpers import produce_as
from tests.tokens import finance_clerk, finance_supervisor, window

pytestmark = pytest.mark.e2e

FINANCE = finance_clerk("finance-01")
SUPERVISOR = finance_supervisor("finance-02")


async def decide_request(
    client: httpx.AsyncClient,
    cfg: StackConfig,
    request_id: str,
    who: Mapping[str, str],
    verdict: str = "approve",
) -> httpx.Response:
    """Dual control: ``who`` approves (or rejects) a pending top-up or correction."""
    return await client.post(
        f"{cfg.url('payout')}/finance/requests/{request_id}/{verdict}", headers=once(who)
    )


def once(who: Mapping[str, str] = FINANCE) -> dict[str, str]:
    """Finance headers with a fresh Idempotency-Key (money-moving POSTs need one)."""
    return {**who, "Idempotency-Key": f"e2e-{uuid.uuid4()}"}


def account(suffix: str, name: str = "自贡测试企业有限公司") -> dict[str, str]:
    return {"bank_name": "自贡银行", "account_name": name, "account_number": f"622202020{suffix}"}


async def payout_of(
    client: httpx.AsyncClient, cfg: StackConfig, claim_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        r = await client.get(f"{cfg.url('payout')}/payouts", params={"claim_id": claim_id})
        r.raise_for_status()
        rows: list[dict[str, Any]] = r.json()
        return rows[0] if rows and rows[0]["status"] == status else None

    return await eventually(probe, timeout=timeout, what=f"payout of {claim_id} {status}")


async def approve_all(client: httpx.AsyncClient, cfg: StackConfig, claim_id: str) -> None:
    for task in await tasks_for(client, cfg, claim_id):
        assert (await decide(client, cfg, task, "approve")).status_code == 200


async def test_returned_payment_is_corrected_by_finance_and_paid_once(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    claim_id = await submit_claim(client, services, bank_account=account("0000000003"))
    await approve_all(client, services, claim_id)
    payout = await payout_of(client, services, claim_id, "returned")
    tracked = await wait_status(client, services, claim_id, "payout_returned")
    assert tracked["holders"] == ["finance (account correction)"]  # what the window says
    url = f"{services.url('payout')}/payouts/{payout['payout_id']}/account-correction"
    corrected: dict[str, Any] = {
        "payee": account("0000000042", "自贡测试企业股份有限公司"),
        "reason": "营业执照名称",
    }

    refused = await client.post(url, json=corrected, headers=window())
    # A window clerk's token lacks the permission (issue 11: roles, not a department header).
    assert refused.status_code == 403 and refused.json()["errors"][0]["rule"] == "permission"
    invalid = await client.post(
        url,
        json={"payee": {**corrected["payee"], "account_number": "12ab"}, "reason": "x"},
        headers=FINANCE,
    )
    assert invalid.status_code == 422 and invalid.json()["errors"]
    missing = await client.post(
        f"{services.url('payout')}/payouts/{uuid.uuid4()}/account-correction",
        json=corrected,
        headers=once(),
    )
    assert missing.status_code == 404
    keyless = await client.post(url, json=corrected, headers=FINANCE)
    assert keyless.status_code == 428
    first = once()
    r = await client.post(url, json=corrected, headers=first)
    assert r.status_code == 202, r.text  # a request under dual control
    replayed = await client.post(url, json=corrected, headers=first)
    assert replayed.status_code == 202 and replayed.json() == r.json()  # a repeat, not a 2nd
    again = await client.post(url, json=corrected, headers=once())
    assert again.status_code == 409  # one pending correction per payout
    assert again.json()["errors"][0]["rule"] == "one_pending_request"
    own = await decide_request(client, services, r.json()["request_id"], FINANCE)
    assert own.status_code == 403 and own.json()["errors"][0]["rule"] == "four_eyes"
    still = (await client.get(f"{services.url('payout')}/payouts/{payout['payout_id']}")).json()
    assert still["status"] == "returned"  # the requester's own approval changed nothing
    approved = await decide_request(client, services, r.json()["request_id"], SUPERVISOR)
    assert approved.status_code == 200, approved.text
    assert approved.json()["applied"]["issue_no"] == 2
    late = await client.post(url, json=corrected, headers=once())
    assert late.status_code == 409  # no longer returned

    await wait_status(client, services, claim_id, "paid")
    r = await client.get(f"{services.url('payout')}/payouts/{payout['payout_id']}")
    detail = r.json()
    assert detail["status"] == "paid" and detail["paid_amount"] == detail["approved_amount"]
    assert [v["outcome"] for v in detail["vouchers"]] == ["returned", "arrived"]
    assert detail["vouchers"][0]["voucher_no"].startswith("TR-")  # 税收收入退还书
    hops = [h["hop"] for h in detail["hops"]]
    for hop in ("reserved", "issued", "accepted", "sent", "returned", "account_corrected"):
        assert hop in hops
    assert hops[-1] == "arrived" and hops.count("arrived") == 1
    assert detail["time_to_payment_seconds"] > 0


async def test_transient_failure_is_retried_and_paid_once(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    claim_id = await submit_claim(client, services, bank_account=account("0000000001"))
    await approve_all(client, services, claim_id)
    await wait_status(client, services, claim_id, "paid")
    payout = await payout_of(client, services, claim_id, "paid")
    assert payout["attempts"] == 2
    conn = await asyncpg.connect(services.dsn)
    try:
        settled = await conn.fetchval(
            """SELECT count(*) FROM bank_sim.instructions
               WHERE payout_id = $1 AND status = 'settled'""",
            uuid.UUID(payout["payout_id"]),
        )
    finally:
        await conn.close()
    assert settled == 1


async def test_permanent_failure_is_final_and_releases_the_commitment(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    base = services.url("payout")

    async def refund_fund() -> dict[str, Any]:
        funds = (await client.get(f"{base}/funds")).json()
        found: dict[str, Any] = next(f for f in funds if f["fund_id"] == "treasury-refund")
        return found

    claim_id = await submit_claim(client, services, bank_account=account("0000000002"))
    await approve_all(client, services, claim_id)
    await wait_status(client, services, claim_id, "payout_failed")
    payout = await payout_of(client, services, claim_id, "failed")
    assert "closed" in payout["failure_reason"] and payout["paid_amount"] == "0.00"
    detail = (await client.get(f"{base}/payouts/{payout['payout_id']}")).json()
    assert [v["outcome"] for v in detail["vouchers"]] == ["failed"]
    failed = (await refund_fund())["payouts"]["failed"]
    assert failed["claims"] >= 1
    metrics = (await client.get(f"{base}/metrics")).text
    assert 'claimflow_payout_failures_total{fund="treasury-refund",kind="permanent"}' in metrics


async def test_held_claim_is_paid_when_intake_reports_documents_complete(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    # Payout pays only what intake received (issue 12 item 5): the decision names the
    # account the claim was submitted with, and an amount within its eligible amount.
    claim_id = await submit_claim(client, services, bank_account=account("0000000099"))
    view = await claim_status(client, services, claim_id)
    decided = EventEnvelope.wrap(
        ReviewDecidedV1(
            decision="approved",
            approved_amount_fen=12_345_00,
            claim_kind="vat_refund",
            payee=BankAccount.model_validate(account("0000000099")),
            claim_received_at=datetime.fromisoformat(view["received_at"]),
            documents_pending=True,
        ),
        claim_id=uuid.UUID(claim_id),
        producer="review",
    )
    await produce_as(services, "review", REVIEW_EVENTS, decided.to_bytes(), key=claim_id.encode())
    await payout_of(client, services, claim_id, "held")
    await asyncio.sleep(1)
    await payout_of(client, services, claim_id, "held", timeout=1)  # still held
    completed = EventEnvelope.wrap(
        ClaimDocumentsCompletedV1(completed_at=datetime.now(UTC)),
        claim_id=uuid.UUID(claim_id),
        producer="intake",
    )
    await produce_as(services, "intake", INTAKE_EVENTS, completed.to_bytes(), key=claim_id.encode())
    payout = await payout_of(client, services, claim_id, "paid")
    assert payout["amount"] == "12345.00"


async def test_finance_api_funds_paging_reconciliation_and_metrics(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    base = services.url("payout")
    funds = {f["fund_id"]: f for f in (await client.get(f"{base}/funds")).json()}
    assert set(funds) >= {"treasury-refund", "direct-financing-2026", "stable-growth-relief-2026"}
    assert funds["treasury-refund"]["budget"] is None  # tracked, uncapped by default
    direct = funds["direct-financing-2026"]
    assert Decimal(direct["remaining"]) == Decimal(direct["budget"]) - Decimal(
        direct["reserved"]
    ) - Decimal(direct["committed"])

    r = await client.post(
        f"{base}/funds/treasury-refund/top-ups",
        json={"amount": "1.00", "reason": "x"},
        headers=once(SUPERVISOR),
    )
    assert r.status_code == 409
    r = await client.post(
        f"{base}/funds/direct-financing-2026/top-ups",
        json={"amount": "1.005", "reason": "x"},
        headers=SUPERVISOR,
    )
    assert r.status_code == 422
    r = await client.post(
        f"{base}/funds/direct-financing-2026/top-ups",
        json={"amount": "1000.00", "reason": "追加预算"},
        headers=once(SUPERVISOR),
    )
    assert r.status_code == 202, r.text
    approved = await decide_request(client, services, r.json()["request_id"], FINANCE)
    assert approved.status_code == 200, approved.text
    funds = {f["fund_id"]: f for f in (await client.get(f"{base}/funds")).json()}
    assert Decimal(funds["direct-financing-2026"]["budget"]) == Decimal(direct["budget"]) + 1000
    assert (await client.get(f"{base}/funds/nope/queue")).status_code == 404

    r = await client.get(f"{base}/payouts", params={"status": "paid", "limit": 1})
    assert r.status_code == 200 and len(r.json()) <= 1 and "X-Total-Count" in r.headers
    assert (await client.get(f"{base}/payouts", params={"status": "bogus"})).status_code == 422

    today = datetime.now(UTC).date().isoformat()
    bad = await client.post(
        f"{base}/reconciliation/statements", content="a,b\n1,2\n", headers=FINANCE
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "line 1.header"
    statement = (
        "value_date,bank_reference,end_to_end_id,amount,account_number,direction\n"
        f"{today},BK-{uuid.uuid4().hex[:8]},DP-NOT-OURS-1,1.00,6222020200000000000,debit\n"
    )
    r = await client.post(f"{base}/reconciliation/statements", content=statement, headers=FINANCE)
    assert r.status_code == 201, r.text
    report = (await client.get(f"{base}/reconciliation/{today}")).json()
    assert report["summary"]["unknown_statement_line"] >= 1

    metrics = (await client.get(f"{base}/metrics")).text
    for name in (
        "claimflow_fund_remaining_yuan",
        "claimflow_fund_budget_yuan",
        "claimflow_fund_reserved_yuan",
        "claimflow_payouts_waiting",
        "claimflow_reconciliation_mismatches_total",
    ):
        assert name in metrics, name


async def test_demo_figures_add_up_against_the_payout_database(services: StackConfig) -> None:
    info = {
        "urls": {name: services.url(name) for name in ("intake", "review", "payout")},
        "database_url": services.dsn,
        # Where the demo's people get their tokens: the stack's issuer key.
        "data_dir": str(services.data_dir),
        "ports": {"issuer": services.ports.issuer},
    }
    result = await run_demo(
        info, claims=6, seed=7, timeout_s=120, console=Console(file=io.StringIO())
    )
    counts = result.counts()
    assert counts["in_flight"] == 0 and counts["double_paid"] == 0
    ids = [uuid.UUID(i) for i in result.statuses]
    conn = await asyncpg.connect(services.dsn)
    try:
        rows = await conn.fetch(
            """SELECT status, count(*) AS n, coalesce(sum(amount_fen), 0) AS fen
               FROM payout.payouts WHERE claim_id = ANY($1::uuid[]) GROUP BY status""",
            ids,
        )
        per_fund = await conn.fetch(
            """SELECT fund_id, coalesce(sum(amount_fen), 0) AS fen FROM payout.payouts
               WHERE claim_id = ANY($1::uuid[]) AND status = 'paid' GROUP BY fund_id""",
            ids,
        )
    finally:
        await conn.close()
    db = {r["status"]: (r["n"], r["fen"]) for r in rows}
    assert counts["paid"] == db.get("paid", (0, 0))[0]
    assert result.paid_fen == db.get("paid", (0, 0))[1]
    assert counts["failed"] == db.get("failed", (0, 0))[0]
    assert counts["returned"] == db.get("returned", (0, 0))[0]
    assert counts["waiting"] == sum(db.get(s, (0, 0))[0] for s in ("queued", "held"))
    # Every approved claim is accounted for by exactly one payout figure.
    assert counts["approved"] == sum(n for n, _ in db.values())
    assert counts["approved"] + counts["rejected"] == counts["submitted"]
    figures = result.per_fund()
    for r in per_fund:
        assert figures[r["fund_id"]]["paid_yuan"] == str(fen_to_yuan(r["fen"]))


async def test_claim_waits_in_the_visible_queue_and_is_paid_after_a_top_up(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    base = services.url("payout")
    fund_id = "startup-loan-interest-2026"
    # A subsidy claim of the program through intake (payout pays only what intake
    # received and within the per-enterprise cap: issue 12 item 5) ...
    body = make_subsidy_claim(random.Random(77), fund_id)
    body.update(bank_account=account("0000000077"), requested_amount="120000.00")
    r = await client.post(f"{services.url('intake')}/claims", json=body, headers=window())
    assert r.status_code == 201, r.text
    claim_id = r.json()["claim_id"]
    view = await claim_status(client, services, claim_id)
    amount_fen = 120_000_00
    # ... and a fund left with one yuan less than the claim (the administrator lowers
    # the budget: a real approval never exceeds the cap, far below the whole budget).
    conn = await asyncpg.connect(services.admin_dsn)
    try:
        await conn.execute(
            """UPDATE payout.funds SET budget_fen = reserved_fen + committed_fen + $2
               WHERE fund_id = $1""",
            fund_id,
            amount_fen - 100,
        )
    finally:
        await conn.close()
    decided = EventEnvelope.wrap(
        ReviewDecidedV1(
            decision="approved",
            approved_amount_fen=amount_fen,
            claim_kind="subsidy",
            program_id=fund_id,
            payee=BankAccount.model_validate(account("0000000077")),
            claim_received_at=datetime.fromisoformat(view["received_at"]),
        ),
        claim_id=uuid.UUID(claim_id),
        producer="review",
    )
    await produce_as(services, "review", REVIEW_EVENTS, decided.to_bytes(), key=claim_id.encode())
    payout = await payout_of(client, services, claim_id, "queued")
    tracked = await wait_status(client, services, claim_id, "payout_queued")
    assert tracked["holders"] == ["finance (budget)"]
    queue = (await client.get(f"{base}/funds/{fund_id}/queue")).json()
    assert [q["claim_id"] for q in queue] == [claim_id] and queue[0]["position"] == 1
    fund = next(f for f in (await client.get(f"{base}/funds")).json() if f["fund_id"] == fund_id)
    assert fund["waiting_claims"] == 1 and fund["waiting"]["budget"]["claims"] == 1

    r = await client.post(
        f"{base}/funds/{fund_id}/top-ups",
        json={"amount": "1.00", "reason": "追加预算"},
        headers=once(SUPERVISOR),
    )
    assert r.status_code == 202, r.text
    approved = await decide_request(client, services, r.json()["request_id"], FINANCE)
    assert approved.status_code == 200, approved.text
    assert approved.json()["applied"]["released_from_queue"] == 1
    paid = await payout_of(client, services, claim_id, "paid")
    assert paid["payout_id"] == payout["payout_id"] and paid["voucher_kind"] == (
        "direct_payment_voucher"  # 财政直接支付凭证
    )
    fund = next(f for f in (await client.get(f"{base}/funds")).json() if f["fund_id"] == fund_id)
    assert fund["remaining"] == "0.00" and fund["waiting_claims"] == 0


async def test_bank_answer_lost_goes_unknown_and_the_claim_is_paid_once(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    """Issue 9 item 1 on the real stack: the simulated bank takes the voucher and the
    answer is lost (account ending 0000004): unknown, then resolved, paid exactly once."""
    claim_id = await submit_claim(client, services, bank_account=account("0000000004"))
    await approve_all(client, services, claim_id)
    payout = await payout_of(client, services, claim_id, "paid")
    await wait_status(client, services, claim_id, "paid")
    detail = (await client.get(f"{services.url('payout')}/payouts/{payout['payout_id']}")).json()
    hops = [h["hop"] for h in detail["hops"]]
    assert "unknown" in hops and hops[-1] == "arrived"
    assert detail["paid_amount"] == detail["approved_amount"]
    conn = await asyncpg.connect(services.dsn)
    try:
        bank = await conn.fetch(
            "SELECT status FROM bank_sim.instructions WHERE payout_id = $1",
            uuid.UUID(payout["payout_id"]),
        )
    finally:
        await conn.close()
    assert [b["status"] for b in bank] == ["settled"]


async def test_finance_corrects_one_failed_payout_and_closes_another(
    services: StackConfig, client: httpx.AsyncClient
) -> None:
    """Issue 9 item 7 on the real stack: a payment to a closed account is not a dead
    end. Finance re-issues to a corrected account, or closes the payout with a reason."""
    base = services.url("payout")
    to_fix = await submit_claim(client, services, bank_account=account("0000000002"))
    to_close = await submit_claim(client, services, bank_account=account("0000000002"))
    for claim_id in (to_fix, to_close):
        await approve_all(client, services, claim_id)
    fix = await payout_of(client, services, to_fix, "failed")
    close = await payout_of(client, services, to_close, "failed")

    corrected = {"payee": account("0000000055"), "reason": "企业提供新开立账户"}
    r = await client.post(
        f"{base}/payouts/{fix['payout_id']}/account-correction", json=corrected, headers=once()
    )
    assert r.status_code == 202, r.text
    r = await decide_request(client, services, r.json()["request_id"], SUPERVISOR)
    assert r.status_code == 200, r.text
    applied = r.json()["applied"]
    assert applied["issue_no"] == 2 and applied["status"] in ("requested", "queued")
    paid = await payout_of(client, services, to_fix, "paid")
    assert paid["paid_amount"] == paid["approved_amount"]

    r = await client.post(
        f"{base}/payouts/{close['payout_id']}/close",
        json={"reason": "企业已注销"},
        headers=once(),
    )
    assert r.status_code == 200, r.text
    released = await payout_of(client, services, to_close, "released")
    assert released["release_reason"] == "closed by finance: 企业已注销"
    r = await client.post(
        f"{base}/payouts/{close['payout_id']}/close", json={"reason": "again"}, headers=once()
    )
    assert r.status_code == 409 and r.json()["errors"][0]["rule"] == "returned_or_failed_only"
