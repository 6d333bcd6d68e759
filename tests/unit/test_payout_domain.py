"""Payout's pure rules: the state machine, backoff, vouchers, funds, statement parsing and
matching."""

from __future__ import annotations

import random
import uuid
from datetime import date
from typing import Any, cast

import pytest

from services.payout.domain.model import (
    CANCELLABLE,
    COMMITTED,
    CORRECTABLE,
    FINAL,
    RESERVED,
    TRANSITIONS,
    PayoutStatus,
    after_approval,
    backoff_seconds,
    fund_of,
    notice_position,
    target_of_notice,
    voucher_kind,
    voucher_no,
)
from services.payout.domain.statements import (
    ExpectedEntry,
    StatementInvalid,
    StatementLine,
    parse_statement_csv,
    reconcile,
)
from shared.programs import load_catalogue

HEADER = "value_date,bank_reference,end_to_end_id,amount,account_number,direction\n"


def test_final_statuses_have_no_way_out_and_every_status_is_reachable() -> None:
    for status in FINAL:
        assert TRANSITIONS[status] == frozenset()
    # Where an approval lands: held / requested / queued, or withheld when it is not
    # what intake received (issue 12 item 5).
    reachable = {
        PayoutStatus.QUEUED,
        PayoutStatus.HELD,
        PayoutStatus.REQUESTED,
        PayoutStatus.WITHHELD,
    }
    for targets in TRANSITIONS.values():
        reachable |= targets
    assert reachable == set(PayoutStatus)
    assert not RESERVED & COMMITTED
    assert PayoutStatus.WITHHELD not in RESERVED | COMMITTED  # nothing reserved or sent


def test_paid_is_reached_only_from_the_gateway_hops() -> None:
    sources = {s for s, targets in TRANSITIONS.items() if PayoutStatus.PAID in targets}
    # Issuing and unknown are with the bank too: its notices may come before the outcome
    # of the bank call is recorded (issue 9 item 1).
    assert sources == {
        PayoutStatus.ISSUING,
        PayoutStatus.UNKNOWN,
        PayoutStatus.ISSUED,
        PayoutStatus.ACCEPTED,
        PayoutStatus.SENT,
    }
    # A returned payout is never paid without a correction and a re-issue.
    assert TRANSITIONS[PayoutStatus.RETURNED] == {PayoutStatus.RETRYING, PayoutStatus.RELEASED}


def test_a_payout_that_may_be_with_the_bank_is_never_released() -> None:
    """Issue 9 item 1: issuing and unknown may have left the treasury; they stay
    committed and a lapse or withdrawal does not release them."""
    for status in (PayoutStatus.ISSUING, PayoutStatus.UNKNOWN):
        assert status in COMMITTED
        assert status not in CANCELLABLE
        assert PayoutStatus.RELEASED not in TRANSITIONS[status]
    # Unknown is resolved by asking the bank: it has it (issued) or not (retrying).
    assert {PayoutStatus.ISSUED, PayoutStatus.RETRYING} <= TRANSITIONS[PayoutStatus.UNKNOWN]
    # Only a claimed payout calls the bank.
    sources = {s for s, targets in TRANSITIONS.items() if PayoutStatus.ISSUING in targets}
    assert sources == {PayoutStatus.REQUESTED, PayoutStatus.RETRYING}


def test_a_failed_payout_waits_for_finance_to_correct_or_close_it() -> None:
    """Issue 9 item 7: failed is not a dead end."""
    assert PayoutStatus.FAILED in CORRECTABLE and PayoutStatus.FAILED not in FINAL
    assert TRANSITIONS[PayoutStatus.FAILED] == {
        PayoutStatus.REQUESTED,
        PayoutStatus.QUEUED,
        PayoutStatus.RELEASED,
    }


@pytest.mark.parametrize(
    ("row", "notice", "expected"),
    [
        ((1, 1), (1, 1), "current"),
        ((1, 2), (1, 1), "behind"),  # an earlier attempt
        ((2, 0), (1, 3), "behind"),  # an earlier issue (after an account correction)
        ((1, 0), (1, 1), "ahead"),  # the bank has an attempt the row has not recorded
        ((1, 1), (1, 2), "ahead"),
        ((1, 3), (2, 1), "ahead"),  # a later issue
    ],
)
def test_only_notices_behind_the_payout_are_discarded(
    row: tuple[int, int], notice: tuple[int, int], expected: str
) -> None:
    assert notice_position(*row, *notice) == expected


def test_approval_reserves_holds_or_queues() -> None:
    assert after_approval(reserved=False, documents_pending=True) is PayoutStatus.QUEUED
    assert after_approval(reserved=True, documents_pending=True) is PayoutStatus.HELD
    assert after_approval(reserved=True, documents_pending=False) is PayoutStatus.REQUESTED


@pytest.mark.parametrize(
    ("current", "hop", "permanent", "attempts", "expected"),
    [
        (PayoutStatus.ISSUED, "accepted", False, 1, PayoutStatus.ACCEPTED),
        (PayoutStatus.ACCEPTED, "sent", False, 1, PayoutStatus.SENT),
        (PayoutStatus.SENT, "arrived", False, 1, PayoutStatus.PAID),
        (PayoutStatus.ISSUED, "failed", False, 1, PayoutStatus.RETRYING),
        (PayoutStatus.ISSUED, "failed", False, 5, PayoutStatus.FAILED),
        (PayoutStatus.ACCEPTED, "failed", True, 1, PayoutStatus.FAILED),
        (PayoutStatus.SENT, "returned", False, 1, PayoutStatus.RETURNED),
        (PayoutStatus.PAID, "arrived", False, 1, None),  # a repeated notice
        (PayoutStatus.PAID, "returned", False, 1, None),
        (PayoutStatus.SENT, "accepted", False, 1, None),  # never backwards
    ],
)
def test_bank_notices_move_forward_only(
    current: PayoutStatus, hop: str, permanent: bool, attempts: int, expected: PayoutStatus | None
) -> None:
    assert (
        target_of_notice(current, hop, permanent=permanent, attempts=attempts, max_attempts=5)
        == expected
    )


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(a, base_s=1, max_s=10) for a in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]


def test_vouchers_by_claim_kind() -> None:
    pid = uuid.UUID("12345678123456781234567812345678")
    assert voucher_kind("vat_refund") == "tax_refund_voucher"
    assert voucher_kind("subsidy") == "direct_payment_voucher"
    assert voucher_no("tax_refund_voucher", pid, 1) == "TR-1234567812345678-1"
    assert voucher_no("direct_payment_voucher", pid, 2) == "DP-1234567812345678-2"


def test_each_claim_draws_on_its_fund() -> None:
    funds = load_catalogue()
    assert fund_of("vat_refund", None, funds) == "treasury-refund"
    assert fund_of("subsidy", "direct-financing-2026", funds) == "direct-financing-2026"
    with pytest.raises(LookupError):
        fund_of("subsidy", "no-such-program", funds)


def test_statement_csv_parses_exact_amounts() -> None:
    lines = parse_statement_csv(
        "\ufeff" + HEADER + "2026-11-26,BK1,TR-A-1,1234.50,6222,debit\n"
        "2026-11-26,BK2,TR-B-1,0.01,6222,CREDIT\n"
    )
    assert [(x.amount_fen, x.direction) for x in lines] == [(123450, "debit"), (1, "credit")]
    assert lines[0].value_date == date(2026, 11, 26)


def test_statement_csv_errors_name_line_and_field() -> None:
    with pytest.raises(StatementInvalid) as bad:
        parse_statement_csv(
            HEADER + "2026-11-26,BK1,TR-A-1,-5,6222,debit\n"
            "2026-11-26,BK1,,1.00,6222,debit\n"
            "26/11/2026,BK3,TR-C-1,1.001,,out\n"
        )
    found = {(e.line, e.field) for e in bad.value.errors}
    assert found == {
        (2, "amount"),
        (3, "end_to_end_id"),
        (3, "bank_reference"),
        (4, "value_date"),
        (4, "amount"),
        (4, "account_number"),
        (4, "direction"),
    }
    with pytest.raises(StatementInvalid):
        parse_statement_csv("date,amount\n2026-11-26,1.00\n")


def test_reconcile_sorts_lines_into_the_four_kinds() -> None:
    day = date(2026, 11, 26)
    pid = uuid.uuid4()

    def exp(no: str, amount: int, direction: str = "debit") -> ExpectedEntry:
        return ExpectedEntry(no, pid, direction, amount, "6222")  # type: ignore[arg-type]

    def line(ref: str, no: str, amount: int, direction: str = "debit") -> StatementLine:
        return StatementLine(day, ref, no, amount, "6222", direction)  # type: ignore[arg-type]

    report = reconcile(
        day,
        [exp("V1", 100), exp("V2", 200), exp("V3", 300), exp("V4", 400, "credit")],
        [
            line("B1", "V1", 100),
            line("B2", "V2", 201),
            line("B3", "V9", 50),
            line("B4", "V4", 400, "credit"),
            line("B5", "V1", 100),  # the same voucher twice on the statement
            line("B6", "V3", 300, "credit"),  # right voucher, wrong direction
        ],
    )
    assert [m["end_to_end_id"] for m in report.matched] == ["V1", "V4"]
    assert [m["end_to_end_id"] for m in report.amount_mismatch] == ["V2"]
    assert [m["bank_reference"] for m in report.unknown_statement_line] == ["B3", "B5", "B6"]
    assert [m["end_to_end_id"] for m in report.missing_statement_line] == ["V3"]


def instruction(account_number: str, *, attempt: int = 1, issue_no: int = 1) -> Any:
    from services.payout.adapters.gateway import PaymentInstruction

    return PaymentInstruction(
        payout_id=uuid.uuid4(),
        issue_no=issue_no,
        attempt=attempt,
        voucher_no="TR-X-1",
        voucher_kind="tax_refund_voucher",
        amount_fen=100,
        bank_name="b",
        account_number=account_number,
        account_name="n",
    )


def test_simulated_bank_plans_by_rates_and_by_magic_accounts() -> None:
    from services.payout.adapters.gateway import SimulatedGateway

    bank = SimulatedGateway(
        cast(Any, None), min_delay_s=0, max_delay_s=0, rng=random.Random(1), return_rate=0.5
    )
    assert bank.plan(instruction("6222020200000000001")) == "transient"
    assert bank.plan(instruction("6222020200000000002")) == "permanent"
    assert bank.plan(instruction("6222020200000000003")) == "return"
    # Only the first attempt of the first issue: a retry or a re-issue goes through.
    assert bank.plan(instruction("6222020200000000001", attempt=2)) in ("arrive", "return")
    outcomes = [bank.plan(instruction("6222020200001234567")) for _ in range(400)]
    assert set(outcomes) == {"arrive", "return"}
    assert 150 < outcomes.count("return") < 250
    no_magic = SimulatedGateway(cast(Any, None), min_delay_s=0, max_delay_s=0, magic_accounts=False)
    assert no_magic.plan(instruction("6222020200000000002")) == "arrive"
