"""What payout checks before it pays an approval (issue 12 item 5), the pure part."""

from __future__ import annotations

from services.payout.domain.admission import Approval, Submitted, check
from shared.contracts import BankAccount

REGISTERED = BankAccount(
    bank_name="自贡银行", account_name="甲公司", account_number="6222020200001234"
)
OTHER = BankAccount(bank_name="自贡银行", account_name="甲公司", account_number="6222020200009876")
SUBMITTED = Submitted("subsidy", "p1", "91510300MA6XYZ0001", 100_000_00, REGISTERED)


def approval(amount_fen: int = 100_000_00, payee: BankAccount = REGISTERED) -> Approval:
    return Approval("subsidy", "p1", amount_fen, payee)


def test_what_intake_received_passes() -> None:
    assert check(SUBMITTED, approval(), cap_fen=300_000_00) is None
    assert check(SUBMITTED, approval(1), cap_fen=None) is None


def test_each_disagreement_has_its_reason_first_reason_first() -> None:
    assert check(None, approval(), 300_000_00).reason == "awaiting_intake"  # type: ignore[union-attr]
    vat = Approval("vat_refund", None, 1_00, REGISTERED)
    assert check(SUBMITTED, vat, None).reason == "claim_mismatch"  # type: ignore[union-attr]
    # Another account and too much: the payee is named first.
    both = check(SUBMITTED, approval(100_000_01, OTHER), 300_000_00)
    assert both is not None and both.reason == "payee_mismatch"
    assert "9876" in both.detail and "6222020200009876" not in both.detail  # masked
    above = check(SUBMITTED, approval(100_000_01), 300_000_00)
    assert above is not None and above.reason == "above_eligible"
    rich = Submitted("subsidy", "p1", "91510300MA6XYZ0001", 900_000_00, REGISTERED)
    capped = check(rich, approval(300_000_01), 300_000_00)
    assert capped is not None and capped.reason == "above_cap"


def test_a_payee_chosen_by_two_finance_people_is_not_compared() -> None:
    assert check(SUBMITTED, approval(payee=OTHER), None, payee_chosen_by_finance=True) is None
    # ... but the amount still is.
    refused = check(SUBMITTED, approval(100_000_01, OTHER), None, payee_chosen_by_finance=True)
    assert refused is not None and refused.reason == "above_eligible"
