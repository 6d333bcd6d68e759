"""Realistic claims for the demo and the tests: enterprises of the Zigong high-tech zone."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from stdnum.cn import uscc as stdnum_uscc

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
