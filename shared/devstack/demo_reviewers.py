"""Simulated department reviewers for the demo."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal

import httpx

DEPARTMENTS = {"vat_refund": ("tax", "treasury"), "subsidy": ("finance", "industry")}


async def play_reviewers(
    client: httpx.AsyncClient, review_url: str, rng: random.Random, stop: asyncio.Event
) -> int:
    """Simulated department reviewers: approve most, reject what has nothing eligible
    and a few more on judgement."""
    decided = 0
    while not stop.is_set():
        busy = False
        for kind_departments in DEPARTMENTS.values():
            for department in kind_departments:
                r = await client.get(f"{review_url}/worklist", params={"department": department})
                r.raise_for_status()
                for task in r.json():
                    busy = True
                    reject = Decimal(task["eligible_amount"]) == 0 or rng.random() < 0.05
                    body = {
                        "decision": "reject" if reject else "approve",
                        "comment": "材料不符 / documents do not support the credit"
                        if reject
                        else "同意",
                    }
                    resp = await client.post(
                        f"{review_url}/tasks/{task['task_id']}/decision",
                        json=body,
                        headers={
                            "X-User-Id": f"{department}-reviewer-1",
                            "X-Department": department,
                            "X-Role": "reviewer",
                        },
                    )
                    if resp.status_code == 200:
                        decided += 1
        if not busy:
            await asyncio.sleep(0.2)
    return decided
