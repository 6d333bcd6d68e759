"""Simulated reviewers for the demo: every department of the catalogue, and approvers.

* Department reviewers (tax, treasury, finance, industry: whatever programs.yaml names)
  work their own worklists in parallel, each department with its own people, so no one
  decides for two departments of a claim. They approve most claims, reject a few on
  judgement (more of those with cross-check warnings), and can return a claim for
  documents (off by default: a returned claim waits for intake to record the documents,
  which the demo's intake does not do by itself, and the demo waits for final states).
* Approvers (X-Role: approver, people who review nothing) sign off the claims above the
  threshold, refusing a rare one.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

from shared.devstack import people
from shared.programs import load_catalogue

SIGN_OFF = "sign_off"
APPROVERS = ("leader-zhang", "leader-li")


def departments() -> list[str]:
    catalogue = load_catalogue()
    found = list(catalogue.vat_refund.departments)
    for program in catalogue.programs:
        found += [d for d in program.departments if d not in found]
    return found


def _decide(task: dict[str, Any], rng: random.Random, return_rate: float) -> dict[str, object]:
    if task["department"] == SIGN_OFF:
        if rng.random() < 0.03:
            return {"decision": "reject", "comment": "超出年度预算安排 / outside this year's plan"}
        return {"decision": "approve", "comment": "同意拨付"}
    warned = task.get("cross_check_result") == "warn"
    findings = task.get("findings") or []
    serious = any(
        isinstance(f, dict) and f.get("result") == "warn" and f.get("check") != "credit_rating"
        for f in findings
    )
    if rng.random() < (0.25 if serious else 0.04 if warned else 0.03):
        return {"decision": "reject", "comment": "材料不符 / documents do not support the claim"}
    if rng.random() < return_rate:
        return {
            "decision": "return",
            "comment": "请补充材料 / please supply",
            "other_documents": [{"title": "补充说明（盖章） / supplementary statement"}],
        }
    return {"decision": "approve", "comment": "同意"}


def _worklist_reader(department: str) -> dict[str, str]:
    if department == SIGN_OFF:
        return people.headers(APPROVERS[0], "approver")
    return people.headers(f"{department}-reviewer-1", "reviewer", departments=[department])


async def play_reviewers(
    client: httpx.AsyncClient,
    review_url: str,
    rng: random.Random,
    stop: asyncio.Event,
    *,
    return_rate: float = 0.0,
) -> int:
    """Work every department's worklist and the approvers' until ``stop``; returns the
    number of decisions recorded."""
    decided = 0
    queues = [*departments(), SIGN_OFF]
    while not stop.is_set():
        busy = False
        for department in queues:
            r = await client.get(
                f"{review_url}/worklist",
                params={"department": department},
                headers=people.headers(APPROVERS[0])
                if department == SIGN_OFF
                else people.headers(
                    f"{department}-reviewer-1", "reviewer", departments=[department]
                ),
            )
            r.raise_for_status()
            for task in r.json():
                busy = True
                if department == SIGN_OFF:
                    headers = people.headers(rng.choice(APPROVERS), "approver")
                else:
                    headers = people.headers(
                        f"{department}-reviewer-{rng.randint(1, 2)}",
                        "reviewer",
                        departments=[department],
                    )
                resp = await client.post(
                    f"{review_url}/tasks/{task['task_id']}/decision",
                    json=_decide(task, rng, return_rate),
                    headers=headers,
                )
                if resp.status_code == 200:
                    decided += 1
        if not busy:
            await asyncio.sleep(0.2)
    return decided
