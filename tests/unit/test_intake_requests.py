"""Every rule of the window's request contract answers with the field and the rule
(what POST /claims returns as a 422, before anything is stored)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from services.intake.entrypoints.http import _parse_claim
from services.intake.entrypoints.schemas import SubsidyRequest, VatRefundRequest
from services.intake.service_layer.refusals import Invalid
from shared.devstack.demo_claims import make_claim, make_subsidy_claim

# Codes published in the national enterprise credit register (and python-stdnum's own
# example): all carry a correct GB 32100-2015 check character.
REAL_USCCS = (
    "91110000600037341L",
    "91440300708461136T",
    "91330100716105852F",
    "91110108551385082Q",
    "914403001922038216",
)


def refund(**overrides: Any) -> dict[str, Any]:
    body = make_claim(random.Random(11), "2026-09")
    body.update(overrides)
    return body


def subsidy(**overrides: Any) -> dict[str, Any]:
    body = make_subsidy_claim(random.Random(12), "direct-financing-2026")
    body.update(overrides)
    return body


def refused(body: Any) -> set[tuple[str, str]]:
    with pytest.raises(Invalid) as info:
        _parse_claim(body)
    answer = info.value.body()
    assert answer["detail"] == "validation failed"
    assert all(set(e) == {"field", "rule", "message"} for e in answer["errors"])
    return {(e["field"], e["rule"]) for e in answer["errors"]}


@pytest.mark.parametrize("code", REAL_USCCS)
def test_real_usccs_are_accepted(code: str) -> None:
    assert isinstance(_parse_claim(refund(uscc=code)), VatRefundRequest)
    assert isinstance(_parse_claim(subsidy(uscc=code)), SubsidyRequest)


@pytest.mark.parametrize("code", REAL_USCCS)
def test_a_wrong_check_character_is_refused(code: str) -> None:
    wrong = code[:-1] + ("1" if code[-1] != "1" else "2")
    assert refused(refund(uscc=wrong)) == {("uscc", "uscc_check_character")}


@pytest.mark.parametrize("code", ["9144030070846113", "91440300708461136TX", "9I440300708461136T"])
def test_malformed_usccs_are_refused(code: str) -> None:
    assert ("uscc", "uscc_format") in refused(refund(uscc=code))


def test_demo_claims_of_both_kinds_are_valid() -> None:
    rng = random.Random(5)
    for _ in range(30):
        assert isinstance(
            _parse_claim(make_claim(rng, "2026-09", promise_documents=None)), VatRefundRequest
        )
        assert isinstance(
            _parse_claim(make_subsidy_claim(rng, promise_documents=None)), SubsidyRequest
        )


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"tax_period": "2999-01"}, ("tax_period", "tax_period_not_future")),
        ({"tax_period": "2026-13"}, ("tax_period", "tax_period_format")),
        ({"tax_period": "202609"}, ("tax_period", "tax_period_format")),
        ({"requested_amount": "0"}, ("requested_amount", "greater_than")),
        ({"requested_amount": "-1.00"}, ("requested_amount", "greater_than")),
        ({"requested_amount": "10.001"}, ("requested_amount", "fen_precision")),
        ({"requested_amount": "1" * 16}, ("requested_amount", "decimal_max_digits")),
        ({"requested_amount": "NaN"}, ("requested_amount", "finite_number")),
        ({"requested_amount": "ten"}, ("requested_amount", "decimal_parsing")),
        ({"end_credit_balance": "-5"}, ("end_credit_balance", "greater_than")),
        ({"base_credit_balance": "-0.01"}, ("base_credit_balance", "greater_than_equal")),
        ({"input_composition_ratio": "1.5"}, ("input_composition_ratio", "less_than_equal")),
        ({"input_composition_ratio": "-0.1"}, ("input_composition_ratio", "greater_than_equal")),
        ({"input_composition_ratio": "0.12345"}, ("input_composition_ratio", "decimal_max_places")),
        ({"tax_credit_rating": "E"}, ("tax_credit_rating", "literal_error")),
        ({"enterprise_name": ""}, ("enterprise_name", "string_too_short")),
        (
            {"documents_supplied": ["Not An Id!"]},
            ("documents_supplied.0", "string_pattern_mismatch"),
        ),
        ({"surprise": 1}, ("surprise", "extra_forbidden")),
    ],
)
def test_each_refund_rule_names_its_field(
    overrides: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert expected in refused(refund(**overrides))


def test_missing_fields_are_listed_together() -> None:
    body = refund()
    del body["uscc"], body["documents_supplied"]
    assert {("uscc", "missing"), ("documents_supplied", "missing")} <= refused(body)


def test_bank_account_number_must_be_digits() -> None:
    body = refund()
    body["bank_account"] = {**body["bank_account"], "account_number": "12AB"}
    assert ("bank_account.account_number", "string_pattern_mismatch") in refused(body)


def test_unknown_or_absent_kind() -> None:
    assert refused(refund(kind="pension")) == {("kind", "claim_kind")}
    body = refund()
    del body["kind"]
    assert refused(body) == {("kind", "claim_kind")}
    assert refused(["not", "an", "object"]) == {("", "object")}


def test_subsidy_fields_do_not_mix_with_refund_fields() -> None:
    assert ("tax_period", "extra_forbidden") in refused(subsidy(tax_period="2026-09"))
    assert ("program_id", "missing") in refused(
        {k: v for k, v in subsidy().items() if k != "program_id"}
    )


def test_every_tracker_status_is_a_valid_list_filter() -> None:
    """GET /claims?status= accepts every status the tracker shows (item 9): the
    OpenAPI enum of the parameter is exactly the set of ClaimStatus values."""
    from services.intake.bootstrap import create_app
    from services.intake.domain.model import ClaimStatus

    schema = create_app().openapi()
    params = schema["paths"]["/claims"]["get"]["parameters"]
    status = next(p for p in params if p["name"] == "status")
    options = status["schema"].get("anyOf", [status["schema"]])
    enum = next(o for o in options if "enum" in o or "$ref" in o)
    if "$ref" in enum:
        enum = schema["components"]["schemas"][enum["$ref"].rsplit("/", 1)[1]]
    assert set(enum["enum"]) == {s.value for s in ClaimStatus}
