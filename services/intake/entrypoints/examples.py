"""Example claims for the OpenAPI of POST /claims: claims that pass every rule when the
service starts (a tax period of last month, programs open today), so that a client or
a fuzzer can build a valid claim from the OpenAPI alone. The USCCs are valid codes of
no real enterprise. Filled by the bootstrap, which knows the clock and the catalogue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from services.intake.domain.rules import beijing_today, local_period
from shared.money import fen_to_yuan
from shared.programs import Catalogue

CLAIM_EXAMPLES: dict[str, dict[str, Any]] = {}
"""Referenced by the route's ``openapi_extra``; the OpenAPI is built on first request."""

_ACCOUNT = {"bank_name": "中国工商银行自贡分行", "account_number": "6222020000123456789"}


def claim_examples(catalogue: Catalogue, now: datetime) -> dict[str, dict[str, Any]]:
    year, month = map(int, local_period(now).split("-"))
    last_month = f"{year - (month == 1):04d}-{(month - 2) % 12 + 1:02d}"
    vat = catalogue.rules_for("vat_refund")
    examples: dict[str, dict[str, Any]] = {
        "vat_refund": {
            "summary": "A VAT credit refund, every checklist document handed in",
            "value": {
                "kind": "vat_refund",
                "uscc": "915103023AGYGLUY4X",
                "enterprise_name": "自贡长盈精密科技有限公司",
                "tax_period": last_month,
                "end_credit_balance": "800000.00",
                "base_credit_balance": "0.00",
                "input_composition_ratio": "0.9000",
                "tax_credit_rating": "A",
                "requested_amount": "720000.00",
                "bank_account": {**_ACCOUNT, "account_name": "自贡长盈精密科技有限公司"},
                "documents_supplied": [d.id for d in vat.documents],
                "documents_promised": [],
            },
        }
    }
    today = beijing_today(now)
    for program in catalogue.programs:
        if program.opens <= today <= program.closes:
            examples[f"subsidy_{program.id}"] = {
                "summary": f"A subsidy claim under {program.id}",
                "value": {
                    "kind": "subsidy",
                    "program_id": program.id,
                    "uscc": "91510311W7WKKHDR5J",
                    "enterprise_name": "川南兴储新能源股份有限公司",
                    "requested_amount": str(fen_to_yuan(program.cap_fen // 2)),
                    "description": "申请补贴",
                    "bank_account": {**_ACCOUNT, "account_name": "川南兴储新能源股份有限公司"},
                    "documents_supplied": [d.id for d in program.documents],
                    "documents_promised": [],
                },
            }
    return examples


def set_claim_examples(catalogue: Catalogue, now: datetime) -> None:
    CLAIM_EXAMPLES.clear()
    CLAIM_EXAMPLES.update(claim_examples(catalogue, now))
