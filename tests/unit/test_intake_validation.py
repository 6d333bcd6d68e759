from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from services.intake.entrypoints.schemas import VatRefundRequest
from shared.devstack.demo_claims import make_claim, make_uscc


def claim(**overrides: Any) -> dict[str, Any]:
    body = make_claim(random.Random(7), "2026-09")
    body.update(overrides)
    return body


def rules_of(exc: ValidationError) -> set[tuple[str, ...]]:
    return {tuple(str(p) for p in e["loc"]) for e in exc.errors()}


def test_generated_demo_claims_are_valid() -> None:
    rng = random.Random(1)
    for _ in range(50):
        VatRefundRequest.model_validate(make_claim(rng, "2026-09"))


def test_real_uscc_accepted_and_wrong_check_character_refused() -> None:
    code = make_uscc(random.Random(3))
    VatRefundRequest.model_validate(claim(uscc=code))
    wrong = code[:-1] + ("0" if code[-1] != "0" else "1")
    with pytest.raises(ValidationError) as info:
        VatRefundRequest.model_validate(claim(uscc=wrong))
    assert ("uscc",) in rules_of(info.value)
    assert info.value.errors()[0]["type"] == "uscc_check_character"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tax_period", "2999-01"),
        ("tax_period", "2026-13"),
        ("requested_amount", "0"),
        ("requested_amount", "10.001"),
        ("end_credit_balance", "-5"),
        ("input_composition_ratio", "1.5"),
        ("tax_credit_rating", "E"),
        ("enterprise_name", ""),
    ],
)
def test_each_rule_names_its_field(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        VatRefundRequest.model_validate(claim(**{field: value}))
    assert (field,) in rules_of(info.value)


def test_bank_account_number_must_be_digits() -> None:
    body = claim()
    body["bank_account"] = {**body["bank_account"], "account_number": "12AB"}
    with pytest.raises(ValidationError) as info:
        VatRefundRequest.model_validate(body)
    assert ("bank_account", "account_number") in rules_of(info.value)
