"""Hand-worked VAT credit refund cases."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.intake.domain.model import compute_vat_refund


def test_2022_rule_refunds_incremental_and_stock_credit_times_ratio() -> None:
    # end 1,000,000.00, base 400,000.00 → incremental 600,000.00, stock 400,000.00;
    # ratio 0.9 → 900,000.00 yuan.
    r = compute_vat_refund(
        end_credit_fen=1_000_000_00,
        base_credit_fen=400_000_00,
        input_ratio=Decimal("0.9"),
        rating="A",
        policy_year=2022,
    )
    assert (r.incremental_credit_fen, r.stock_credit_fen) == (600_000_00, 400_000_00)
    assert r.eligible_fen == 900_000_00
    assert r.note is None


def test_stock_credit_never_exceeds_end_balance() -> None:
    # end 300.00 below base 500.00 → incremental 0, stock 300.00; ratio 0.5 → 150.00.
    r = compute_vat_refund(
        end_credit_fen=300_00,
        base_credit_fen=500_00,
        input_ratio=Decimal("0.5"),
        rating="B",
        policy_year=2022,
    )
    assert (r.incremental_credit_fen, r.stock_credit_fen, r.eligible_fen) == (0, 300_00, 150_00)


def test_2019_rule_refunds_sixty_percent_of_incremental_only() -> None:
    # incremental 600,000.00 × 0.9 × 0.6 = 324,000.00
    r = compute_vat_refund(
        end_credit_fen=1_000_000_00,
        base_credit_fen=400_000_00,
        input_ratio=Decimal("0.9"),
        rating="A",
        policy_year=2019,
    )
    assert r.eligible_fen == 324_000_00


def test_rounds_down_to_the_fen() -> None:
    # 333.33 yuan × 0.3333 = 111.098889 → 111.09
    r = compute_vat_refund(
        end_credit_fen=333_33,
        base_credit_fen=0,
        input_ratio=Decimal("0.3333"),
        rating="A",
        policy_year=2022,
    )
    assert r.eligible_fen == 111_09


@pytest.mark.parametrize("rating", ["M", "C", "D"])
def test_ratings_other_than_a_or_b_get_nothing(rating: str) -> None:
    r = compute_vat_refund(
        end_credit_fen=1_000_00,
        base_credit_fen=0,
        input_ratio=Decimal("1"),
        rating=rating,
        policy_year=2022,
    )
    assert r.eligible_fen == 0
    assert r.note is not None and rating in r.note
