from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from shared.devstack.demo_claims import make_claim
from shared.devstack.stack import StackConfig
from tests.tokens import approver, reviewer, window

T = TypeVar("T")
_rng = random.Random()


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 30, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await probe()
        if result:
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout}s")


# Below review's sign-off threshold (1,000,000 yuan): approved after stage 2.
SMALL_REFUND = {
    "end_credit_balance": "800000.00",
    "base_credit_balance": "0.00",
    "input_composition_ratio": "0.9000",
    "requested_amount": "720000.00",
}


async def submit_claim(client: httpx.AsyncClient, cfg: StackConfig, **overrides: Any) -> str:
    """A VAT refund claim through intake, below the sign-off threshold unless the
    overrides name larger amounts."""
    body = make_claim(_rng, "2026-09")
    body.update({"tax_credit_rating": "A", **SMALL_REFUND, **overrides})
    r = await client.post(f"{cfg.url('intake')}/claims", json=body, headers=window())
    assert r.status_code == 201, r.text
    claim_id: str = r.json()["claim_id"]
    return claim_id


async def tasks_for(
    client: httpx.AsyncClient, cfg: StackConfig, claim_id: str
) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        r = await client.get(f"{cfg.url('review')}/claims/{claim_id}/review")
        if r.status_code != 200:
            return None
        tasks: list[dict[str, Any]] = r.json()["tasks"]
        return tasks or None

    return await eventually(probe, what=f"review tasks for {claim_id}")


async def decide(
    client: httpx.AsyncClient,
    cfg: StackConfig,
    task: dict[str, Any],
    decision: str,
    user: str | None = None,
) -> httpx.Response:
    department = task["department"]
    role = "approver" if department == "sign_off" else "reviewer"
    return await client.post(
        f"{cfg.url('review')}/tasks/{task['task_id']}/decision",
        json={"decision": decision, "comment": f"{decision} by test"},
        headers=approver(user or f"{department}-{role}")
        if department == "sign_off"
        else reviewer(department, user or f"{department}-{role}"),
    )


async def review_of(client: httpx.AsyncClient, cfg: StackConfig, claim_id: str) -> dict[str, Any]:
    r = await client.get(f"{cfg.url('review')}/claims/{claim_id}/review")
    r.raise_for_status()
    view: dict[str, Any] = r.json()
    return view


async def approve_through_review(
    client: httpx.AsyncClient, cfg: StackConfig, claim_id: str
) -> dict[str, Any]:
    """Every department approves (in parallel); above the threshold an approver, who
    reviewed nothing, signs off. Returns review's view of the approved claim."""
    tasks = [t for t in await tasks_for(client, cfg, claim_id) if t["status"] == "pending"]
    responses = await asyncio.gather(*(decide(client, cfg, t, "approve") for t in tasks))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]

    async def settled() -> dict[str, Any] | None:
        view = await review_of(client, cfg, claim_id)
        return view if view["status"] in ("approved", "sign_off") else None

    view = await eventually(settled, what=f"review of {claim_id} past stage 2")
    if view["status"] == "sign_off":
        task = next(t for t in view["tasks"] if t["department"] == "sign_off")
        r = await decide(client, cfg, task, "approve")
        assert r.status_code == 200, r.text
        view = await review_of(client, cfg, claim_id)
    assert view["status"] == "approved", view
    return view


async def claim_status(
    client: httpx.AsyncClient, cfg: StackConfig, claim_id: str
) -> dict[str, Any]:
    r = await client.get(f"{cfg.url('intake')}/claims/{claim_id}")
    r.raise_for_status()
    view: dict[str, Any] = r.json()
    return view


async def wait_status(
    client: httpx.AsyncClient, cfg: StackConfig, claim_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        view = await claim_status(client, cfg, claim_id)
        return view if view["status"] == status else None

    return await eventually(probe, timeout=timeout, what=f"claim {claim_id} {status}")
