"""A simulated finance clerk for the demo: corrects the accounts of returned payments
and tops up a budget that has claims waiting, as finance staff would — under dual
control: finance-wang (clerk) requests, finance-chen (supervisor) approves."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import httpx

from shared.devstack import people

# What `make demo` asks of the simulated bank: some trouble, so the finance side shows.
BANK_TROUBLE = {
    "CLAIMFLOW_GATEWAY_TRANSIENT_FAILURE_RATE": "0.05",
    "CLAIMFLOW_GATEWAY_PERMANENT_FAILURE_RATE": "0.02",
    "CLAIMFLOW_GATEWAY_RETURN_RATE": "0.04",
}


async def play_finance(client: httpx.AsyncClient, payout_url: str, stop: asyncio.Event) -> int:
    """Returns how many actions the clerk took."""
    actions = 0
    while not stop.is_set():
        actions += await _correct_returned(client, payout_url)
        actions += await _top_up_waiting(client, payout_url)
        await asyncio.sleep(0.5)
    return actions


async def _correct_returned(client: httpx.AsyncClient, payout_url: str) -> int:
    r = await client.get(f"{payout_url}/payouts", params={"status": "returned", "limit": 100})
    r.raise_for_status()
    done = 0
    for payout in r.json():
        payee: dict[str, Any] = payout["payee"]
        # The bank returned it because the name did not match the account: the clerk
        # checks the business licence and enters the registered name again.
        corrected = {**payee, "account_name": payee["account_name"].strip()}
        answer = await client.post(
            f"{payout_url}/payouts/{payout['payout_id']}/account-correction",
            json={"payee": corrected, "reason": "核对营业执照后更正户名"},
            # One correction per issue: a repeat (a lost answer) changes nothing more.
            headers={
                **people.headers("finance-wang"),
                "Idempotency-Key": f"demo-correct-{payout['payout_id']}-{payout['issue_no']}",
            },
        )
        done += await _approved(client, payout_url, answer)
    return done


async def _approved(client: httpx.AsyncClient, payout_url: str, requested: httpx.Response) -> int:
    """The second pair of eyes: finance-chen approves finance-wang's request."""
    if requested.status_code != 202:
        return 0
    request_id = requested.json()["request_id"]
    answer = await client.post(
        f"{payout_url}/finance/requests/{request_id}/approve",
        json={"comment": "已复核 (demo)"},
        headers={
            **people.headers("finance-chen"),
            "Idempotency-Key": f"demo-approve-{request_id}",
        },
    )
    return int(answer.status_code == 200)


async def _top_up_waiting(client: httpx.AsyncClient, payout_url: str) -> int:
    r = await client.get(f"{payout_url}/funds")
    r.raise_for_status()
    done = 0
    for fund in r.json():
        waiting = Decimal(fund.get("waiting_amount") or "0")
        if fund.get("waiting_claims") and waiting > 0 and fund.get("budget") is not None:
            answer = await client.post(
                f"{payout_url}/funds/{fund['fund_id']}/top-ups",
                json={"amount": str(waiting), "reason": "追加预算 (demo)"},
                # The request is made on this budget: repeating it asks nothing twice.
                headers={
                    **people.headers("finance-wang"),
                    "Idempotency-Key": f"demo-top-up-{fund['fund_id']}-{fund['budget']}-{waiting}",
                },
            )
            done += await _approved(client, payout_url, answer)
    return done
