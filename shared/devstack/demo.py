"""Pushes realistic VAT credit refund claims through the running stack's HTTP APIs,
plays the department reviewers, and waits for every claim to reach a final state.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from stdnum.cn import uscc as stdnum_uscc

FINAL = {"paid", "rejected", "payout_failed"}
DEPARTMENTS = {"vat_refund": ("tax", "treasury")}
ORG_CODE_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
ORG_CODE_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
# 自贡 (Zigong) districts: 510302 自流井区, 510303 贡井区, 510304 大安区, 510311 沿滩区
DIVISIONS = ("510302", "510303", "510304", "510311")
NAME_PARTS = (
    ("自贡", "川南", "盐都", "沿滩", "高新"),
    ("长盈", "兴储", "天钧", "凯盛", "东方联合", "碳谷", "恒润", "华气"),
    ("精密", "新能源", "锂电", "储能", "机械配套", "先进材料", "智能装备", "电器"),
    ("科技有限公司", "股份有限公司", "制造有限公司"),
)
BANKS = ("中国工商银行自贡分行", "中国建设银行自贡分行", "四川银行自贡分行", "自贡银行高新支行")


def make_uscc(rng: random.Random) -> str:
    """A valid 统一社会信用代码: 9 (工商) 1 (企业), division, GB 11714 org code, check char."""
    body = "".join(rng.choice("0123456789ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
    total = sum(ORG_CODE_CHARS.index(c) * w for c, w in zip(body, ORG_CODE_WEIGHTS, strict=True))
    check = 11 - total % 11
    org_code = body + {10: "X", 11: "0"}.get(check, str(check))
    partial = "91" + rng.choice(DIVISIONS) + org_code
    return partial + str(stdnum_uscc.calc_check_digit(partial))


def make_claim(rng: random.Random, period: str) -> dict[str, Any]:
    end_credit = Decimal(rng.randrange(50_000_00, 30_000_000_00)) / 100
    base_credit = (end_credit * Decimal(rng.choice(("0", "0.2", "0.5", "0.8")))).quantize(
        Decimal("0.01")
    )
    ratio = Decimal(rng.randrange(6000, 10000)) / 10000
    eligible = (end_credit * ratio).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
    rating = rng.choices(("A", "B", "M"), weights=(70, 22, 8))[0]
    requested = (
        eligible if rng.random() < 0.85 else (eligible * Decimal("1.05")).quantize(Decimal("0.01"))
    )
    name = "".join(rng.choice(part) for part in NAME_PARTS)
    return {
        "uscc": make_uscc(rng),
        "enterprise_name": name,
        "tax_period": period,
        "end_credit_balance": str(end_credit),
        "base_credit_balance": str(base_credit),
        "input_composition_ratio": str(ratio),
        "tax_credit_rating": rating,
        "requested_amount": str(requested),
        "bank_account": {
            "bank_name": rng.choice(BANKS),
            "account_name": name,
            "account_number": "".join(rng.choice("0123456789") for _ in range(19)),
        },
    }


@dataclass
class DemoResult:
    submitted: int = 0
    rejected_at_window: int = 0
    statuses: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    double_paid: int = 0
    paid_fen: int = 0

    def counts(self) -> dict[str, int]:
        values = list(self.statuses.values())
        return {
            "submitted": self.submitted,
            "approved": sum(
                v in ("approved", "payout_requested", "payout_sent", "paid", "payout_failed")
                for v in values
            ),
            "rejected": values.count("rejected"),
            "paid": values.count("paid"),
            "failed": values.count("payout_failed"),
            "in_flight": sum(v not in FINAL for v in values),
            "double_paid": self.double_paid,
        }


async def _reviewers(
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


async def run_demo(
    info: dict[str, Any], *, claims: int, seed: int | None, timeout_s: float, console: Console
) -> DemoResult:
    rng = random.Random(seed)
    urls = info["urls"]
    today = date.today()
    period = f"{today.year - (today.month == 1):04d}-{(today.month - 2) % 12 + 1:02d}"
    result = DemoResult()
    started = time.monotonic()
    ids: list[str] = []
    stop = asyncio.Event()
    async with httpx.AsyncClient(timeout=30) as client:
        reviewers = asyncio.create_task(_reviewers(client, urls["review"], rng, stop))
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
            for _ in range(claims):
                r = await client.post(
                    f"{urls['intake']}/claims",
                    json=make_claim(rng, period),
                    headers={"X-User-Id": f"window-{rng.randint(1, 3):02d}"},
                )
                if r.status_code == 201:
                    ids.append(r.json()["claim_id"])
                else:
                    result.rejected_at_window += 1
                    console.print(f"[yellow]window refused a claim: {r.status_code} {r.text}")
                progress.advance(submit)
            result.submitted = len(ids)
            progress.update(final, total=len(ids))
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                pending = [i for i in ids if result.statuses.get(i) not in FINAL]
                if not pending:
                    break
                for claim_id in pending:
                    r = await client.get(f"{urls['intake']}/claims/{claim_id}")
                    r.raise_for_status()
                    result.statuses[claim_id] = r.json()["status"]
                progress.update(final, completed=sum(s in FINAL for s in result.statuses.values()))
                await asyncio.sleep(0.3)
        stop.set()
        await reviewers
    result.seconds = time.monotonic() - started
    result.double_paid, result.paid_fen = await _payout_facts(info["database_url"], ids)
    return result


async def _payout_facts(dsn: str, claim_ids: list[str]) -> tuple[int, int]:
    """Read straight from the payout and bank databases: payouts beyond one per claim,
    counting both payout rows and settled bank instructions, and the total paid."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [uuid.UUID(i) for i in claim_ids]
        extra_rows = await conn.fetchval(
            """SELECT coalesce(sum(n - 1), 0) FROM (
                   SELECT count(*) AS n FROM payout.payouts WHERE claim_id = ANY($1::uuid[])
                   GROUP BY claim_id) x""",
            ids,
        )
        extra_settled = await conn.fetchval(
            """SELECT coalesce(sum(n - 1), 0) FROM (
                   SELECT count(*) AS n FROM bank_sim.instructions i
                   JOIN payout.payouts p USING (payout_id)
                   WHERE p.claim_id = ANY($1::uuid[]) AND i.status = 'settled'
                   GROUP BY p.claim_id) x""",
            ids,
        )
        paid = await conn.fetchval(
            """SELECT coalesce(sum(amount_fen), 0) FROM payout.payouts
               WHERE status = 'paid' AND claim_id = ANY($1::uuid[])""",
            ids,
        )
    finally:
        await conn.close()
    return int(extra_rows) + int(extra_settled), int(paid)


def summary_table(result: DemoResult) -> Table:
    table = Table(title=f"claimflow demo — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.counts().items():
        table.add_row(key, str(value))
    table.add_row("paid (yuan)", f"{result.paid_fen / 100:,.2f}")
    table.add_row("seconds", f"{result.seconds:.1f}")
    return table
