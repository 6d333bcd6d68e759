"""Stage 1 (联核): automatic cross-checks run on arrival, before any person sees the claim.

Each check gives pass / warn / fail with a reason shown to reviewers. A fail rejects the
claim with its reason; a warning goes on to the departments with the claim.
Pure: the service layer gathers the facts (watch lists, other claims) and calls this.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from shared.money import fen_to_yuan

Result = Literal["pass", "warn", "fail"]
ELIGIBLE_RATINGS = frozenset({"A", "B"})
SUBSIDY_BARRED_RATINGS = frozenset({"D"})


@dataclass(frozen=True)
class Finding:
    check: str
    result: Result
    reason: str


@dataclass(frozen=True)
class BlacklistEntry:
    uscc: str
    reason: str
    listed_on: date


@dataclass(frozen=True)
class OtherClaim:
    """Another claim of the same enterprise and period that review knows of."""

    claim_id: str
    kind: str
    program_id: str | None
    status: str


@dataclass(frozen=True)
class ClaimFacts:
    kind: str
    program_id: str | None
    uscc: str
    tax_period: str
    received_on: date
    requested_fen: int
    eligible_fen: int
    cap_fen: int | None = None
    """The program's per-enterprise cap; None for refunds."""
    already_approved_in_program_fen: int = 0


@dataclass(frozen=True)
class CrossCheckReport:
    result: Result
    findings: list[Finding]
    recommended_fen: int

    @property
    def failure_reason(self) -> str | None:
        fails = [f"{f.check}: {f.reason}" for f in self.findings if f.result == "fail"]
        return "; ".join(fails) or None


def months_before(day: date, months: int) -> date:
    month_index = day.year * 12 + (day.month - 1) - months
    year, month = divmod(month_index, 12)
    for d in (day.day, 30, 29, 28):
        try:
            return date(year, month + 1, d)
        except ValueError:
            continue
    raise AssertionError("unreachable")


def check_rating(facts: ClaimFacts, rating: str | None) -> Finding:
    if facts.kind == "vat_refund":
        if rating is None:
            return Finding(
                "credit_rating",
                "warn",
                "enterprise not on the tax bureau's rating list held by review; "
                "verify the A/B rating declared at the window",
            )
        if rating not in ELIGIBLE_RATINGS:
            return Finding(
                "credit_rating", "fail", f"tax credit rating {rating}: only A or B may be refunded"
            )
        return Finding("credit_rating", "pass", f"tax credit rating {rating}")
    if rating in SUBSIDY_BARRED_RATINGS:
        return Finding("credit_rating", "fail", f"tax credit rating {rating} bars subsidies")
    return Finding("credit_rating", "pass", f"tax credit rating {rating or 'not on file'}")


def check_blacklist(
    facts: ClaimFacts, entries: list[BlacklistEntry], lookback_months: int
) -> Finding:
    since = months_before(facts.received_on, lookback_months)
    hits = [e for e in entries if e.uscc == facts.uscc and e.listed_on >= since]
    if hits:
        hit = max(hits, key=lambda e: e.listed_on)
        return Finding(
            "blacklist",
            "fail",
            f"on the blacklist since {hit.listed_on.isoformat()}: {hit.reason}",
        )
    older = [e for e in entries if e.uscc == facts.uscc]
    if older:
        return Finding(
            "blacklist",
            "warn",
            f"listed {max(e.listed_on for e in older).isoformat()}, more than "
            f"{lookback_months} months ago",
        )
    return Finding("blacklist", "pass", f"not blacklisted in the last {lookback_months} months")


def check_duplicates(facts: ClaimFacts, others: list[OtherClaim]) -> Finding:
    live = [o for o in others if o.status not in ("rejected", "withdrawn", "lapsed")]
    same = [o for o in live if o.kind == facts.kind and o.program_id == facts.program_id]
    if same:
        what = facts.program_id or facts.kind
        return Finding(
            "duplicate",
            "fail",
            f"claim {same[0].claim_id} already funds {what} for {facts.tax_period}",
        )
    if live:
        names = sorted({o.program_id or o.kind for o in live})
        return Finding(
            "duplicate",
            "warn",
            f"the enterprise also claims {', '.join(names)} for {facts.tax_period}: "
            "check the costs are not funded twice",
        )
    return Finding("duplicate", "pass", "no other claim for this enterprise and period")


def check_amount(facts: ClaimFacts) -> tuple[Finding, int]:
    """Requested vs eligible vs what the cap leaves; returns the recommended amount."""
    if facts.eligible_fen <= 0:
        return Finding("amount", "fail", "nothing eligible"), 0
    amount = min(facts.requested_fen, facts.eligible_fen)
    notes: list[str] = []
    result: Result = "pass"
    if facts.requested_fen > facts.eligible_fen:
        result = "warn"
        notes.append(
            f"requested {fen_to_yuan(facts.requested_fen)} yuan exceeds eligible "
            f"{fen_to_yuan(facts.eligible_fen)} yuan"
        )
    if facts.cap_fen is not None:
        left = facts.cap_fen - facts.already_approved_in_program_fen
        if left <= 0:
            return (
                Finding(
                    "amount",
                    "fail",
                    f"per-enterprise cap {fen_to_yuan(facts.cap_fen)} yuan already used",
                ),
                0,
            )
        if amount > left:
            result = "warn"
            notes.append(
                f"cap leaves {fen_to_yuan(left)} yuan of {fen_to_yuan(facts.cap_fen)} yuan"
            )
            amount = left
    reason = "; ".join(notes) or f"{fen_to_yuan(amount)} yuan within the rules"
    if result == "warn":
        reason += f"; at most {fen_to_yuan(amount)} yuan may be approved"
    return Finding("amount", result, reason), amount


def cross_check(
    facts: ClaimFacts,
    *,
    rating: str | None,
    blacklist: list[BlacklistEntry],
    others: list[OtherClaim],
    blacklist_lookback_months: int = 36,
) -> CrossCheckReport:
    amount_finding, recommended = check_amount(facts)
    findings = [
        check_rating(facts, rating),
        check_blacklist(facts, blacklist, blacklist_lookback_months),
        check_duplicates(facts, others),
        amount_finding,
    ]
    results = {f.result for f in findings}
    overall: Result = "fail" if "fail" in results else "warn" if "warn" in results else "pass"
    return CrossCheckReport(
        result=overall, findings=findings, recommended_fen=0 if overall == "fail" else recommended
    )
