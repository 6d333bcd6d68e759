"""Realistic claims for the demo and the tests: enterprises of the Zigong high-tech zone."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import httpx
from stdnum.cn import uscc as stdnum_uscc

from shared.devstack import people
from shared.programs import ClaimKindRules, load_catalogue

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


def _documents(rules: ClaimKindRules, rng: random.Random, promise: bool | None) -> dict[str, Any]:
    """The checklist as the window records it: critical documents always handed in, the
    others handed in or (with ``promise``, or by chance when None) promised (容缺)."""
    optional = [d.id for d in rules.documents if not d.critical]
    if promise is None:
        promise = rng.random() < 0.25
    promised = rng.sample(optional, k=rng.randint(1, len(optional))) if promise else []
    return {
        "documents_supplied": [d.id for d in rules.documents if d.id not in promised],
        "documents_promised": promised,
    }


def _bank_account(rng: random.Random, name: str) -> dict[str, str]:
    return {
        "bank_name": rng.choice(BANKS),
        "account_name": name,
        "account_number": "".join(rng.choice("0123456789") for _ in range(19)),
    }


def make_claim(
    rng: random.Random, period: str, *, promise_documents: bool | None = False
) -> dict[str, Any]:
    """A VAT credit refund as the window registers it (kind ``vat_refund``)."""
    end_credit = Decimal(rng.randrange(50_000_00, 30_000_000_00)) / 100
    base_credit = (end_credit * Decimal(rng.choice(("0", "0.2", "0.5", "0.8")))).quantize(
        Decimal("0.01")
    )
    ratio = Decimal(rng.randrange(6000, 10000)) / 10000
    eligible = (end_credit * ratio).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
    rating = rng.choices(("A", "B", "M"), weights=(70, 22, 8))[0]
    requested = (
        eligible
        if rng.random() < 0.85
        else min(end_credit, (eligible * Decimal("1.05")).quantize(Decimal("0.01")))
    )
    name = "".join(rng.choice(part) for part in NAME_PARTS)
    return {
        "kind": "vat_refund",
        "uscc": make_uscc(rng),
        "enterprise_name": name,
        "tax_period": period,
        "end_credit_balance": str(end_credit),
        "base_credit_balance": str(base_credit),
        "input_composition_ratio": str(ratio),
        "tax_credit_rating": rating,
        "requested_amount": str(requested),
        "bank_account": _bank_account(rng, name),
        **_documents(load_catalogue().vat_refund, rng, promise_documents),
    }


SUBSIDY_PURPOSES = {
    "direct-financing-2026": "2026年在新三板挂牌/发行公司债券, 申请直接融资奖励",
    "startup-loan-interest-2026": "创业担保贷款按期还本付息, 申请贴息",
    "stable-growth-relief-2026": "受原材料价格上涨影响经营困难, 申请纾困资金",
}


def make_subsidy_claim(
    rng: random.Random, program_id: str | None = None, *, promise_documents: bool | None = False
) -> dict[str, Any]:
    """A subsidy claim under one of the catalogue's programs (kind ``subsidy``)."""
    catalogue = load_catalogue()
    program = catalogue.program(program_id) if program_id else rng.choice(list(catalogue.programs))
    assert program is not None, f"no program {program_id}"
    cap_fen = program.cap_fen
    # Most ask for a part of the cap; a few for exactly the cap.
    requested_fen = cap_fen if rng.random() < 0.1 else rng.randrange(cap_fen // 20, cap_fen)
    name = "".join(rng.choice(part) for part in NAME_PARTS)
    return {
        "kind": "subsidy",
        "program_id": program.id,
        "uscc": make_uscc(rng),
        "enterprise_name": name,
        "requested_amount": str(Decimal(requested_fen) / 100),
        "description": SUBSIDY_PURPOSES.get(program.id),
        "bank_account": _bank_account(rng, name),
        **_documents(program, rng, promise_documents),
    }


def make_mixed_claim(rng: random.Random, period: str) -> dict[str, Any]:
    """The demo's mix: about 60 % VAT credit refunds, 40 % subsidies across the three
    programs; about a quarter of each promise some documents for later (容缺受理)."""
    if rng.random() < 0.6:
        return make_claim(rng, period, promise_documents=None)
    return make_subsidy_claim(rng, promise_documents=None)


async def supply_promised_documents(
    client: httpx.AsyncClient, intake_url: str, claim_id: str, promised: list[str], user: str
) -> int:
    """The enterprise brings its promised documents; the window records each one."""
    supplied = 0
    for document_id in promised:
        r = await client.post(
            f"{intake_url}/claims/{claim_id}/documents",
            json={"document_id": document_id},
            headers={
                **people.headers(user, "window_clerk"),
                "Idempotency-Key": f"doc-{claim_id}-{document_id}",
            },
        )
        if r.status_code == 200:
            supplied += 1
    return supplied
