"""Stage 1 (联核): the automatic cross-checks, each pass / warn / fail with a reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from services.review.adapters.watchlists import load_watchlists
from services.review.domain.cross_checks import (
    BlacklistEntry,
    ClaimFacts,
    Finding,
    OtherClaim,
    cross_check,
    months_before,
)

USCC = "91510304GHB8Q5T30Q"
FACTS = ClaimFacts(
    kind="vat_refund",
    program_id=None,
    uscc=USCC,
    tax_period="2026-09",
    received_on=date(2026, 11, 26),
    requested_fen=500_00,
    eligible_fen=500_00,
)


def by_check(report_findings: list[Finding]) -> dict[str, tuple[str, str]]:
    return {f.check: (f.result, f.reason) for f in report_findings}


def test_clean_claim_passes_every_check() -> None:
    report = cross_check(FACTS, rating="A", blacklist=[], others=[])
    assert report.result == "pass" and report.recommended_fen == 500_00
    assert {f.check for f in report.findings} == {
        "credit_rating",
        "blacklist",
        "duplicate",
        "amount",
    }
    assert all(f.reason for f in report.findings)


def test_rating_c_fails_a_refund_and_an_unknown_rating_is_a_warning() -> None:
    assert cross_check(FACTS, rating="M", blacklist=[], others=[]).result == "fail"
    unknown = cross_check(FACTS, rating=None, blacklist=[], others=[])
    assert by_check(unknown.findings)["credit_rating"][0] == "warn"
    subsidy = replace(FACTS, kind="subsidy", program_id="p")
    assert cross_check(subsidy, rating="D", blacklist=[], others=[]).result == "fail"
    assert cross_check(subsidy, rating=None, blacklist=[], others=[]).result == "pass"


def test_blacklisted_within_36_months_fails_older_listing_warns() -> None:
    recent = BlacklistEntry(USCC, "refund fraud", date(2023, 12, 1))
    old = BlacklistEntry(USCC, "refund fraud", date(2023, 11, 25))
    failed = cross_check(FACTS, rating="A", blacklist=[recent], others=[])
    assert failed.result == "fail" and failed.recommended_fen == 0
    assert "refund fraud" in (failed.failure_reason or "")
    assert (
        by_check(cross_check(FACTS, rating="A", blacklist=[old], others=[]).findings)["blacklist"][
            0
        ]
        == "warn"
    )
    assert months_before(date(2026, 3, 31), 1) == date(2026, 2, 28)


def test_double_funding_same_program_fails_other_program_warns() -> None:
    same = OtherClaim("c1", "vat_refund", None, "department_review")
    assert cross_check(FACTS, rating="A", blacklist=[], others=[same]).result == "fail"
    rejected = OtherClaim("c2", "vat_refund", None, "rejected")
    assert cross_check(FACTS, rating="A", blacklist=[], others=[rejected]).result == "pass"
    other = OtherClaim("c3", "subsidy", "stable-growth-relief-2026", "approved")
    report = cross_check(FACTS, rating="A", blacklist=[], others=[other])
    assert by_check(report.findings)["duplicate"][0] == "warn"


def test_amount_rules_requested_eligible_and_cap() -> None:
    over = replace(FACTS, requested_fen=600_00)
    report = cross_check(over, rating="A", blacklist=[], others=[])
    assert (report.result, report.recommended_fen) == ("warn", 500_00)
    capped = replace(
        FACTS,
        kind="subsidy",
        program_id="p",
        cap_fen=800_00,
        already_approved_in_program_fen=400_00,
    )
    report = cross_check(capped, rating=None, blacklist=[], others=[])
    assert (report.result, report.recommended_fen) == ("warn", 400_00)
    used_up = replace(capped, already_approved_in_program_fen=800_00)
    assert cross_check(used_up, rating=None, blacklist=[], others=[]).result == "fail"
    nothing = replace(FACTS, eligible_fen=0)
    assert cross_check(nothing, rating="A", blacklist=[], others=[]).result == "fail"


def test_the_watchlist_file_loads() -> None:
    lists = load_watchlists()
    assert lists.rating_of(USCC) == "A"
    assert lists.blacklist_for("91510302793PCF429K")
