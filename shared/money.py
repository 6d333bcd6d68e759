"""Exact money: amounts cross the API as decimal yuan and are stored as integer fen."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

FEN_PER_YUAN = 100


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
Yuan = Annotated[Decimal, Field(max_digits=15), AfterValidator(_two_places)]
PositiveYuan = Annotated[Decimal, Field(gt=0, max_digits=15), AfterValidator(_two_places)]
