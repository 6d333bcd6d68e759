"""Intake's pure domain: the refund computation and its note, 容缺 deadlines across a
holiday, the checklist rules, subsidy caps and windows, and the tracker's transitions."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from services.intake.domain.model import (
    HOLDER,
    PAYOUT_STARTED,
    WITHDRAWABLE,
    ClaimStatus,
    holders_for,
)
from services.intake.domain.rules import (
    Violation,
    amount_note,
    check_documents,
    check_subsidy,
    check_vat_amounts,
    compute_vat_refund,
    documents_deadline,
)
from shared.programs import load_catalogue
from tests.unit.tracker_histories import status_after

CATALOGUE = load_catalogue()
VAT = CATALOGUE.rules_for("vat_refund")


# --- refund computation (hand-worked) --------------------------------------------------


def test_eligible_amount_hand_worked_with_incremental_and_stock_credit() -> None:
    # end 2,345,678.90, base 1,000,000.00 → incremental 1,345,678.90, stock 1,000,000.00;
    # 2,345,678.90 × 0.8765 = 1,876,543.12 + 164,197.523 + 15,246.91285 (× 0.8, 0.07,
    # 0.0065) = 2,055,987.55585 → 2,055,987.55 (rounded down to the fen).
    r = compute_vat_refund(
        end_credit_fen=2_345_678_90,
        base_credit_fen=1_000_000_00,
        input_ratio=Decimal("0.8765"),
        rating="A",
        policy_year=2022,
    )
    assert (r.incremental_credit_fen, r.stock_credit_fen) == (1_345_678_90, 1_000_000_00)
    assert r.eligible_fen == 2_055_987_55
    assert amount_note(2_055_987_55, r, 2022) is None


def test_requested_above_eligible_is_recorded_with_a_reason() -> None:
    # end 500,000.00, no base; ratio 0.6 → 300,000.00 eligible; 315,000.00 requested.
    r = compute_vat_refund(
        end_credit_fen=500_000_00,
        base_credit_fen=0,
        input_ratio=Decimal("0.6"),
        rating="B",
        policy_year=2022,
    )
    assert r.eligible_fen == 300_000_00
    note = amount_note(315_000_00, r, 2022)
    assert note is not None and "31500000" in note and "30000000" in note and "2022" in note


def test_ineligible_rating_note_wins_over_amount_difference() -> None:
    r = compute_vat_refund(
        end_credit_fen=100_00,
        base_credit_fen=0,
        input_ratio=Decimal("1"),
        rating="C",
        policy_year=2022,
    )
    assert r.eligible_fen == 0
    assert amount_note(100_00, r, 2022) == "tax credit rating C is not A or B"


def test_ratio_zero_gives_nothing_and_ratio_one_everything() -> None:
    def eligible(ratio: str) -> int:
        return compute_vat_refund(
            end_credit_fen=123_45,
            base_credit_fen=23_45,
            input_ratio=Decimal(ratio),
            rating="A",
            policy_year=2022,
        ).eligible_fen

    assert (eligible("0"), eligible("1")) == (0, 123_45)


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


# --- 容缺 deadlines in working days --------------------------------------------------


def test_documents_deadline_skips_national_day_and_counts_the_make_up_saturday() -> None:
    # Received Tue 2026-09-29 (Beijing). Five working days: 30 Sep (1); 1-7 Oct holiday;
    # 8 Oct (2), 9 Oct (3), Sat 10 Oct is a make-up workday (4), Sun 11 Oct off, 12 Oct (5).
    d = documents_deadline(datetime(2026, 9, 29, 2, 0, tzinfo=UTC), 5)
    assert d.due_by == date(2026, 10, 12)
    assert d.due_at.isoformat() == "2026-10-12T23:59:59+08:00"


def test_documents_deadline_counts_from_the_beijing_date() -> None:
    # 17:00 UTC on 30 Sep is 01:00 on 1 Oct in Beijing: counting starts after 1 Oct.
    # 8 (1), 9 (2), 10 (3, make-up), 12 (4), 13 (5).
    d = documents_deadline(datetime(2026, 9, 30, 17, 0, tzinfo=UTC), 5)
    assert d.due_by == date(2026, 10, 13)


def test_documents_deadline_over_an_ordinary_weekend() -> None:
    # Fri 2026-11-20 + 3 working days: Mon 23 (1), Tue 24 (2), Wed 25 (3).
    assert documents_deadline(datetime(2026, 11, 20, 3, tzinfo=UTC), 3).due_by == date(2026, 11, 25)


# --- the checklist -----------------------------------------------------------------------


def rules(violations: Sequence[Violation]) -> set[tuple[str, str]]:
    return {(v.field, v.rule) for v in violations}


ALL_VAT = [d.id for d in VAT.documents]


def test_complete_checklist_passes() -> None:
    assert check_documents(VAT, ALL_VAT, []) == []


def test_non_critical_document_may_be_promised() -> None:
    supplied = [d for d in ALL_VAT if d != "input_invoice_list"]
    assert check_documents(VAT, supplied, ["input_invoice_list"]) == []


def test_critical_document_cannot_be_promised() -> None:
    supplied = [d for d in ALL_VAT if d != "vat_returns"]
    assert ("documents_promised", "critical_document") in rules(
        check_documents(VAT, supplied, ["vat_returns"])
    )


def test_missing_documents_are_named() -> None:
    found = rules(check_documents(VAT, ["refund_application", "input_invoice_list"], []))
    assert ("documents_supplied", "critical_document_missing") in found  # vat_returns
    assert ("documents_supplied", "document_unaccounted") in found  # bank_account_proof


def test_unknown_duplicate_and_contradictory_documents() -> None:
    found = rules(check_documents(VAT, [*ALL_VAT, "photo_of_cat", "vat_returns"], ["vat_returns"]))
    assert ("documents_supplied", "unknown_document") in found
    assert ("documents_supplied", "listed_twice") in found
    assert ("documents_promised", "supplied_and_promised") in found


# --- amounts, caps and windows ---------------------------------------------------------


def test_refund_request_above_the_credit_balance_is_refused() -> None:
    assert check_vat_amounts(requested_fen=100_01, end_credit_fen=100_00)[0].rule == (
        "within_credit_balance"
    )
    assert check_vat_amounts(requested_fen=100_00, end_credit_fen=100_00) == []


def test_subsidy_cap_and_application_window() -> None:
    program = CATALOGUE.program("startup-loan-interest-2026")
    assert program is not None
    assert check_subsidy(program, requested_fen=300_000_00, today=date(2026, 6, 1)) == []
    over = check_subsidy(program, requested_fen=300_000_01, today=date(2026, 6, 1))
    assert rules(over) == {("requested_amount", "per_enterprise_cap")}
    closed = check_subsidy(program, requested_fen=1_00, today=date(2027, 1, 1))
    assert rules(closed) == {("program_id", "application_window")}
    relief = CATALOGUE.program("stable-growth-relief-2026")
    assert relief is not None
    assert rules(check_subsidy(relief, requested_fen=1_00, today=date(2026, 2, 28))) == {
        ("program_id", "application_window")
    }


# --- the tracker's transitions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "event_type", "payload", "pending", "expected"),
    [
        (ClaimStatus.SUBMITTED, "review.task_decided", {"decision": "approve"}, False, "in_review"),
        (ClaimStatus.IN_REVIEW, "review.task_decided", {"decision": "approve"}, False, None),
        (
            ClaimStatus.IN_REVIEW,
            "review.task_decided",
            {"decision": "return"},
            False,
            "returned_for_documents",
        ),
        (
            ClaimStatus.IN_REVIEW,
            "review.returned_for_documents",
            {},
            True,
            "returned_for_documents",
        ),
        (ClaimStatus.IN_REVIEW, "review.decided", {"decision": "approved"}, False, "approved"),
        (
            ClaimStatus.ACCEPTED_DOCUMENTS_PENDING,
            "review.decided",
            {"decision": "approved"},
            True,
            "approved_documents_pending",
        ),
        (ClaimStatus.IN_REVIEW, "review.decided", {"decision": "rejected"}, False, "rejected"),
        (ClaimStatus.APPROVED, "payout.requested", {}, False, "payout_requested"),
        (ClaimStatus.PAYOUT_SENT, "payout.confirmed", {}, False, "paid"),
        (ClaimStatus.PAYOUT_SENT, "payout.failed", {}, False, "payout_failed"),
        # final statuses stay final, except that money facts are never hidden
        (ClaimStatus.REJECTED, "review.decided", {"decision": "approved"}, False, None),
        (ClaimStatus.LAPSED, "payout.requested", {}, False, None),
        (ClaimStatus.WITHDRAWN, "payout.sent", {}, False, "payout_sent"),
        (ClaimStatus.PAID, "payout.failed", {}, False, None),
        # unknown event types never move a claim
        (ClaimStatus.IN_REVIEW, "review.escalated", {"decision": "approved"}, False, None),
    ],
)
def test_status_after(
    current: ClaimStatus,
    event_type: str,
    payload: dict[str, str],
    pending: bool,
    expected: str | None,
) -> None:
    got = status_after(current, event_type, payload, documents_pending=pending)
    assert (got.value if got else None) == expected


def test_holders_are_the_departments_still_to_decide() -> None:
    assert holders_for(ClaimStatus.IN_REVIEW, ["tax", "treasury"], ["tax"]) == ["review:treasury"]
    assert holders_for(ClaimStatus.SUBMITTED, ["tax", "treasury"], []) == [
        "review:tax",
        "review:treasury",
    ]
    assert holders_for(ClaimStatus.PAYOUT_SENT, ["tax"], []) == ["treasury/bank"]


def test_tracker_shows_payout_waiting_for_budget_and_returned_payments() -> None:
    approved = ClaimStatus.APPROVED
    queued = status_after(approved, "payout.queued", {}, documents_pending=False)
    assert queued is ClaimStatus.PAYOUT_QUEUED
    assert HOLDER[ClaimStatus.PAYOUT_QUEUED] == "finance (budget)"
    assert ClaimStatus.PAYOUT_QUEUED in WITHDRAWABLE  # no money has moved yet
    assert status_after(queued, "payout.requested", {}, documents_pending=False) is (
        ClaimStatus.PAYOUT_REQUESTED
    )
    sent = ClaimStatus.PAYOUT_SENT
    returned = status_after(sent, "payout.returned", {}, documents_pending=False)
    assert returned is ClaimStatus.PAYOUT_RETURNED
    assert returned in PAYOUT_STARTED and returned not in WITHDRAWABLE
    # Re-issued after the account correction: sent again, then paid.
    assert status_after(returned, "payout.sent", {}, documents_pending=False) is sent


def test_review_resuming_after_a_return_puts_the_claim_back_in_review() -> None:
    returned = ClaimStatus.RETURNED_FOR_DOCUMENTS
    resumed = status_after(
        returned,
        "review.stage_changed",
        {"to_stage": "department_review"},
        documents_pending=False,
    )
    assert resumed is ClaimStatus.IN_REVIEW
    # Other stage changes (cross-check → department review on arrival) move nothing.
    assert (
        status_after(
            ClaimStatus.SUBMITTED,
            "review.stage_changed",
            {"to_stage": "department_review"},
            documents_pending=False,
        )
        is None
    )


def test_review_departments_are_the_last_ones_review_named() -> None:
    """Issue 10 item 3: who holds a claim in review is what review's events say."""
    from services.intake.domain.model import TrackedEvent, review_departments

    def stage(to: str, departments: list[str]) -> TrackedEvent:
        payload = {"from_stage": None, "to_stage": to, "departments": departments}
        return TrackedEvent("review", "review.stage_changed", payload)

    assert review_departments([]) is None
    assert review_departments([stage("department_review", ["tax", "treasury"])]) == [
        "tax",
        "treasury",
    ]
    resumed = [
        stage("department_review", ["tax", "treasury"]),
        stage("returned", ["tax"]),
        stage("department_review", ["tax"]),
        stage("sign_off", ["approver"]),
    ]
    assert review_departments(resumed) == ["tax"]
