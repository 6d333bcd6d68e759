"""The input guard's and the shared field rules' pure parts (the e2e tests show them on
the real services)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.http_guard import MAX_JSON_DEPTH, bad_json_strings, json_too_deep, printable
from shared.money import PositiveYuan, parse_yuan
from shared.problems import MAX_ERRORS_SHOWN, cap_errors
from shared.validation import VisibleText


def test_json_depth_is_measured_without_parsing() -> None:
    assert not json_too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert json_too_deep(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    assert json_too_deep(b'{"a":' * 1000 + b"1" + b"}" * 1000)
    # Brackets inside strings (escaped quotes included) do not count.
    assert not json_too_deep(json.dumps({"name": "[" * 5000, "q": '\\"[[[['}).encode())
    assert not json_too_deep(json.dumps([list(range(100))] * 1000).encode())


def test_bad_strings_are_named_by_their_json_path() -> None:
    document = json.loads(
        '{"a": "ok", "b": {"c": ["x", "y\\u0000"]}, "\\ud800": 1, "d": "\\udfff"}'
    )
    found = {(e["field"], e["rule"]) for e in bad_json_strings(document)}
    assert found == {
        ("b.c.1", "no_nul"),
        ("\\ud800", "no_lone_surrogate"),
        ("d", "no_lone_surrogate"),
    }
    assert [(e["field"], e["rule"]) for e in bad_json_strings("\x00")] == [("body", "no_nul")]
    # A well-formed pair of surrogates is a character, not a lone surrogate.
    assert not list(bad_json_strings(json.loads('"\\ud83d\\ude00"')))


def test_printable_escapes_what_cannot_be_echoed() -> None:
    assert printable("a\x00b\ud800") == "a\\u0000b\\ud800"
    assert printable("企业名称") == "企业名称"


def test_errors_are_capped_with_a_note() -> None:
    errors = [{"field": f"f{i}", "rule": "r", "message": "m"} for i in range(5000)]
    capped = cap_errors(errors)
    assert len(capped) == MAX_ERRORS_SHOWN + 1
    assert capped[-1]["rule"] == "too_many_errors"
    assert str(5000 - MAX_ERRORS_SHOWN) in capped[-1]["message"]
    assert cap_errors(errors[:3]) == errors[:3]


@pytest.mark.parametrize("text", ["1_000", "١٢٣", " 5 ", "5 ", "+5", "1e3", "٥.00", ".5", "5."])
def test_only_plain_ascii_decimals_are_amounts(text: str) -> None:
    with pytest.raises(ValueError):
        parse_yuan(text)
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(PositiveYuan).validate_python(text)
    assert caught.value.errors()[0]["type"] == "plain_decimal"


def test_statement_amounts_fit_the_database() -> None:
    assert parse_yuan("9999999999999.99") == Decimal("9999999999999.99")
    assert parse_yuan("0.10") == Decimal("0.10")
    for text in ("100000000000000000000", "10000000000000", "1.001"):
        with pytest.raises(ValueError):
            parse_yuan(text)


@pytest.mark.parametrize("name", [" ", "\u200b", "\t\n", "\u2060\ufeff", "\x01", "\u3000"])
def test_invisible_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(VisibleText).validate_python(name)
    assert caught.value.errors()[0]["type"] == "visible_text"


@pytest.mark.parametrize("name", ["自贡长盈精密科技有限公司", " A ", "\u200bB", "·"])
def test_names_with_a_visible_character_pass(name: str) -> None:
    assert TypeAdapter(VisibleText).validate_python(name) == name
