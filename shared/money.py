"""Exact money: amounts cross the API as decimal yuan and are stored as integer fen."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

FEN_PER_YUAN = 100
MAX_YUAN_DIGITS = 15
"""Digits of an amount in yuan, fen included: 9,999,999,999,999.99 at most, far inside
PostgreSQL's bigint of fen."""

# Python's Decimal() also takes "1_000", " 5 ", "1e3" and other scripts' digits ("١٢٣"):
# none of them is how an amount is written on a form or a statement.
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
PLAIN_DECIMAL_RULE = "a plain decimal: ASCII digits 0-9 and an optional '.' with decimals"


def is_plain_decimal(text: str) -> bool:
    return _PLAIN_DECIMAL.fullmatch(text) is not None


def _plain_decimal(value: Any) -> Any:
    if isinstance(value, str) and not is_plain_decimal(value):
        try:
            lenient = Decimal(value)
        except InvalidOperation:
            return value  # not a number at all: pydantic names it (decimal_parsing)
        if not lenient.is_finite():
            return value  # NaN, Infinity: pydantic names it (finite_number)
        raise PydanticCustomError(
            "plain_decimal", PLAIN_DECIMAL_RULE + " (no spaces, '+', '_', exponents)"
        )
    return value


def parse_yuan(text: str) -> Decimal:
    """An amount in yuan as written in a file: plain decimal, at most 2 decimals and
    ``MAX_YUAN_DIGITS`` digits; ValueError otherwise."""
    if not is_plain_decimal(text):
        raise ValueError(PLAIN_DECIMAL_RULE)
    amount = Decimal(text)
    if amount.adjusted() >= MAX_YUAN_DIGITS - 2:
        raise ValueError("at most 9999999999999.99")
    yuan_to_fen(amount)  # at most 2 decimals
    return amount


def yuan_to_fen(amount: Decimal) -> int:
    """Convert exactly; more than two decimal places is an error, never a rounding."""
    try:
        fen = amount * FEN_PER_YUAN
        if fen != fen.to_integral_value():
            raise ValueError("at most 2 decimal places (fen)")
        return int(fen)
    except InvalidOperation as exc:
        raise ValueError("not a decimal amount") from exc


def fen_to_yuan(fen: int) -> Decimal:
    return (Decimal(fen) / FEN_PER_YUAN).quantize(Decimal("0.01"))


def optional_fen_to_yuan(fen: int | None) -> Decimal | None:
    return None if fen is None else fen_to_yuan(fen)


def _two_places(value: Decimal) -> Decimal:
    # Named rules, so that a 422 says which rule broke rather than "value_error".
    if not value.is_finite():
        raise PydanticCustomError("finite_amount", "must be a finite amount")
    if value * FEN_PER_YUAN != (value * FEN_PER_YUAN).to_integral_value():
        raise PydanticCustomError("fen_precision", "at most 2 decimal places (fen)")
    return value


# Yuan amounts in request bodies: exact decimals, never floats. Pydantic rejects JSON
# floats with more precision than declared by the max_digits/decimal_places pair.
def _amount_schema(pattern: str, number: dict[str, Any]) -> WithJsonSchema:
    """What the OpenAPI shows: the rules a generated amount must meet to be accepted."""
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": pattern, "examples": ["1250000.00"]},
                {"type": "number", "maximum": 9999999999999, **number},
            ],
            "description": "yuan: a plain decimal with at most 2 decimal places",
        }
    )


# Strings must be plain ASCII decimals (BeforeValidator, before Decimal() sees them).
PlainDecimal = Annotated[Decimal, BeforeValidator(_plain_decimal)]
Yuan = Annotated[
    Decimal,
    BeforeValidator(_plain_decimal),
    Field(max_digits=MAX_YUAN_DIGITS),
    AfterValidator(_two_places),
    _amount_schema(r"^[0-9]{1,13}(\.[0-9]{1,2})?$", {"minimum": 0, "multipleOf": 1}),
]
PositiveYuan = Annotated[
    Decimal,
    BeforeValidator(_plain_decimal),
    Field(gt=0, max_digits=MAX_YUAN_DIGITS),
    AfterValidator(_two_places),
    _amount_schema(r"^(?!0+(\.0+)?$)[0-9]{1,13}(\.[0-9]{1,2})?$", {"minimum": 1, "multipleOf": 1}),
]
