"""A claim arrives: stage 1's cross-checks (联核), then stage 2's parallel department
tasks (联审) unless a check failed."""

from __future__ import annotations

import time
import uuid

from services.review import metrics
from services.review.adapters import cases
from services.review.domain.cross_checks import ClaimFacts, CrossCheckReport, cross_check
from services.review.domain.model import CaseStatus, Outcome
from services.review.service_layer.policy import ReviewPolicy
from services.review.service_layer.stages import (
    finish,
    set_stage,
    stage_changed,
    start_department_tasks,
)
from shared.contracts import (
    ClaimSubmittedV1,
    CrossCheckFinding,
    ReviewCrossCheckedV1,
)
from shared.programs import ClaimRules
from shared.unit_of_work import UnitOfWork


async def open_review(
    uow: UnitOfWork, policy: ReviewPolicy, claim_id: uuid.UUID, claim: ClaimSubmittedV1
) -> CaseStatus | None:
    """Returns the case's stage, or None when the claim was already known."""
    started = time.perf_counter()
    rules = policy.rules_for(claim.claim_kind, claim.program_id)
    if not await cases.insert(uow.conn, claim_id, claim, fund=rules.fund, now=uow.now):
        return None
    report = await _cross_check(uow, policy, rules, claim_id, claim)
    elapsed = time.perf_counter() - started
    histogram = metrics.STAGE_DURATION.labels(kind=claim.claim_kind, stage="cross_check")
    uow.after_commit(lambda: histogram.observe(elapsed))
    case = await cases.get(uow.conn, claim_id)
    assert case is not None  # inserted above, in this transaction
    if report.result == "fail":
        reason = f"cross-check failed: {report.failure_reason}"
        await finish(uow, case, Outcome(CaseStatus.REJECTED, 0, reason))
        return CaseStatus.REJECTED
    await set_stage(uow, case, CaseStatus.DEPARTMENT_REVIEW)
    due = await start_department_tasks(uow, policy, claim_id, rules.departments)
    stage_changed(
        uow, claim_id, CaseStatus.CROSS_CHECK, CaseStatus.DEPARTMENT_REVIEW, rules.departments, due
    )
    return CaseStatus.DEPARTMENT_REVIEW


async def _cross_check(
    uow: UnitOfWork,
    policy: ReviewPolicy,
    rules: ClaimRules,
    claim_id: uuid.UUID,
    claim: ClaimSubmittedV1,
) -> CrossCheckReport:
    """Gather the facts (other claims, the cap used), run the checks, record them."""
    used = 0
    if claim.program_id is not None:
        used = await cases.used_in_program(uow.conn, claim.uscc, claim.program_id, claim_id)
    facts = ClaimFacts(
        kind=claim.claim_kind,
        program_id=claim.program_id,
        uscc=claim.uscc,
        tax_period=claim.tax_period,
        received_on=claim.received_at.date(),
        requested_fen=claim.requested_amount_fen,
        eligible_fen=claim.eligible_amount_fen,
        cap_fen=rules.cap_fen,
        already_approved_in_program_fen=used,
    )
    report = cross_check(
        facts,
        rating=policy.watchlists.rating_of(claim.uscc),
        blacklist=policy.watchlists.blacklist_for(claim.uscc),
        others=await cases.others_in_period(uow.conn, claim.uscc, claim.tax_period, claim_id),
        blacklist_lookback_months=policy.blacklist_lookback_months,
    )
    findings = [
        CrossCheckFinding(check=f.check, result=f.result, reason=f.reason) for f in report.findings
    ]
    await cases.record_cross_check(
        uow.conn, claim_id, report.result, findings, report.recommended_fen
    )
    uow.emit(
        ReviewCrossCheckedV1(
            result=report.result, findings=findings, recommended_amount_fen=report.recommended_fen
        ),
        claim_id=claim_id,
    )
    return report
