from __future__ import annotations

from decimal import Decimal

import pytest

from shared.money import fen_to_yuan, yuan_to_fen


@pytest.mark.parametrize(
    ("yuan", "fen"),
    [("0.01", 1), ("1", 100), ("1234567.89", 123456789), ("25.10", 2510)],
)
def test_yuan_to_fen_is_exact(yuan: str, fen: int) -> None:
    assert yuan_to_fen(Decimal(yuan)) == fen
    assert fen_to_yuan(fen) == Decimal(yuan)


def test_sub_fen_amounts_are_refused_not_rounded() -> None:
    with pytest.raises(ValueError, match="2 decimal places"):
        yuan_to_fen(Decimal("0.001"))
