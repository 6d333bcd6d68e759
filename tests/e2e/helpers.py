from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx

from shared.devstack.demo_claims import make_claim
from shared.devstack.stack import StackConfig

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


async def submit_claim(client: httpx.AsyncClient, cfg: StackConfig, **overrides: Any) -> str:
    body = make_claim(_rng, "2026-09")
    body.update({"tax_credit_rating": "A", **overrides})
    r = await client.post(
        f"{cfg.url('intake')}/claims", json=body, headers={"X-User-Id": "window-01"}
    )
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
    return await client.post(
        f"{cfg.url('review')}/tasks/{task['task_id']}/decision",
        json={"decision": decision, "comment": f"{decision} by test"},
        headers={"X-User-Id": user or f"{department}-reviewer", "X-Department": department},
    )


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
