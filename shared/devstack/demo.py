"""Pushes realistic claims through the running stack's HTTP APIs, plays the department
reviewers, and waits for every claim to reach a final state.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import date
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.devstack import people
from shared.devstack.demo_claims import make_mixed_claim, supply_promised_documents
from shared.devstack.demo_figures import (
    FINAL,
    SETTLED,
    DemoResult,
    payout_facts,
    payout_waiting,
    summary_table,
)
from shared.devstack.demo_finance import play_finance
from shared.devstack.demo_reviewers import play_reviewers

__all__ = ["DemoResult", "run_demo", "summary_table"]


async def run_demo(
    info: dict[str, Any],
    *,
    claims: int,
    seed: int | None,
    timeout_s: float,
    console: Console,
    finance_clerk: bool = False,
) -> DemoResult:
    """With ``finance_clerk`` a simulated finance clerk corrects returned payments and
    tops up budgets, and the demo waits until every claim is settled for good; without,
    claims waiting for a person count as final (and are reported as waiting)."""
    rng = random.Random(seed)
    urls = info["urls"]
    today = date.today()
    period = f"{today.year - (today.month == 1):04d}-{(today.month - 2) % 12 + 1:02d}"
    result = DemoResult()
    started = time.monotonic()
    ids: list[str] = []
    stop = asyncio.Event()
    people.use(people.People.of_stack(info))
    # Reads go as the auditor (reads everything, changes nothing); each action as its person.
    reader = people.headers("auditor-zhou")
    async with httpx.AsyncClient(timeout=30, headers=reader) as client:
        reviewers = asyncio.create_task(play_reviewers(client, urls["review"], rng, stop))
        clerk = (
            asyncio.create_task(play_finance(client, urls["payout"], stop))
            if finance_clerk
            else None
        )
        done_states = SETTLED if finance_clerk else FINAL
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as progress:
            submit = progress.add_task("submitting claims", total=claims)
            final = progress.add_task("claims final", total=claims)
            promised: dict[str, list[str]] = {}
            for _ in range(claims):
                body = make_mixed_claim(rng, period)
                r = await client.post(
                    f"{urls['intake']}/claims",
                    json=body,
                    headers=people.headers(f"window-{rng.randint(1, 3):02d}"),
                )
                if r.status_code == 201:
                    ids.append(r.json()["claim_id"])
                    if body["documents_promised"]:
                        promised[ids[-1]] = body["documents_promised"]
                else:
                    result.rejected_at_window += 1
                    console.print(f"[yellow]window refused a claim: {r.status_code} {r.text}")
                progress.advance(submit)
            result.submitted = len(ids)
            # The enterprises that promised documents (容缺受理) bring them in.
            for claim_id, documents in promised.items():
                await supply_promised_documents(
                    client, urls["intake"], claim_id, documents, "window-01"
                )
            progress.update(final, total=len(ids))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                # Claims waiting for a person (budget, documents, account correction) are
                # final for the demo, but polled again until nothing else moves: money
                # freed by a failure may still take a claim out of the queue.
                pending = [i for i in ids if result.statuses.get(i) not in SETTLED]
                if all(result.statuses.get(i) in done_states for i in pending):
                    break
                for claim_id in pending:
                    r = await client.get(f"{urls['intake']}/claims/{claim_id}")
                    r.raise_for_status()
                    result.statuses[claim_id] = r.json()["status"]
                waiting = await payout_waiting(info["database_url"], pending)
                result.statuses.update(waiting)
                progress.update(final, completed=sum(s in FINAL for s in result.statuses.values()))
                if all(result.statuses.get(i) in done_states for i in pending):
                    break
                await asyncio.sleep(0.3)
        stop.set()
        await reviewers
        if clerk is not None:
            await clerk
    result.seconds = time.monotonic() - started
    result.facts = await payout_facts(info["database_url"], ids)
    result.double_paid, result.paid_fen = result.facts.double_paid, result.facts.paid_fen
    return result
