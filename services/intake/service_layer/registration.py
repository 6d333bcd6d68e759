"""Registering a claim at the window: a VAT credit refund or a subsidy claim under a
program, with its checklist documents supplied or promised (容缺受理)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from services.intake.adapters.repository import ClaimRepository
from services.intake.domain.commands import RegisterClaim, RegisterSubsidy, RegisterVatRefund
from services.intake.domain.model import ClaimStatus, holders_for
from services.intake.domain.rules import (
    Violation,
    amount_note,
    beijing_today,
    check_documents,
    check_subsidy,
    check_vat_amounts,
    compute_vat_refund,
    documents_deadline,
    local_period,
)
from services.intake.metrics import AMOUNT_REQUESTED, CLAIMS_RECEIVED, program_label
from services.intake.service_layer.policy import IntakePolicy
from services.intake.service_layer.refusals import DuplicateClaim, invalid
from services.intake.service_layer.tracker import publish
from shared.contracts import ClaimSubmittedV1
from shared.money import fen_to_yuan
from shared.programs import ClaimRules, UnknownProgram
from shared.unit_of_work import UnitOfWork
from shared.workdays import deadline_after


@dataclass(frozen=True)
class Registered:
    claim_id: uuid.UUID
    kind: str
    program_id: str | None
    status: ClaimStatus
    requested_amount_fen: int
    eligible_amount_fen: int
    amount_note: str | None
    pending_documents: list[str]
    documents_due_by: date | None


@dataclass(frozen=True)
class _Assessment:
    """What the window's rules make of a claim of one kind."""

    period: str
    eligible_fen: int
    note: str | None
    details: dict[str, Any]
    violations: list[Violation]


def _rules(cmd: RegisterClaim, policy: IntakePolicy) -> ClaimRules:
    try:
        return policy.catalogue.rules_for(cmd.kind, cmd.program_id)
    except UnknownProgram:
        known = ", ".join(p.id for p in policy.catalogue.programs)
        raise invalid(
            Violation("program_id", "unknown_program", f"no program {cmd.program_id!r} ({known})")
        ) from None


def _assess_refund(cmd: RegisterVatRefund, policy: IntakePolicy) -> _Assessment:
    refund = compute_vat_refund(
        end_credit_fen=cmd.end_credit_fen,
        base_credit_fen=cmd.base_credit_fen,
        input_ratio=cmd.input_ratio,
        rating=cmd.tax_credit_rating,
        policy_year=policy.policy_year,
    )
    details = {
        "end_credit_fen": cmd.end_credit_fen,
        "base_credit_fen": cmd.base_credit_fen,
        "incremental_credit_fen": refund.incremental_credit_fen,
        "stock_credit_fen": refund.stock_credit_fen,
        "input_ratio": str(cmd.input_ratio),
        "tax_credit_rating": cmd.tax_credit_rating,
        "policy_year": policy.policy_year,
    }
    return _Assessment(
        period=cmd.tax_period,
        eligible_fen=refund.eligible_fen,
        note=amount_note(cmd.requested_amount_fen, refund, policy.policy_year),
        details=details,
        violations=check_vat_amounts(
            requested_fen=cmd.requested_amount_fen, end_credit_fen=cmd.end_credit_fen
        ),
    )


def _assess_subsidy(cmd: RegisterSubsidy, rules: ClaimRules, uow: UnitOfWork) -> _Assessment:
    program = rules.program
    assert program is not None  # rules_for("subsidy", ...) always names its program
    return _Assessment(
        period=local_period(uow.now),
        # Within the cap (checked) the whole request is eligible; the departments judge
        # the merits.
        eligible_fen=cmd.requested_amount_fen,
        note=None,
        details={"program_name": program.name, "description": cmd.description},
        violations=check_subsidy(
            program, requested_fen=cmd.requested_amount_fen, today=beijing_today(uow.now)
        ),
    )


async def register_claim(uow: UnitOfWork, cmd: RegisterClaim, policy: IntakePolicy) -> Registered:
    rules = _rules(cmd, policy)
    violations = check_documents(rules, cmd.documents_supplied, cmd.documents_promised)
    if isinstance(cmd, RegisterVatRefund):
        assessed = _assess_refund(cmd, policy)
    else:
        assessed = _assess_subsidy(cmd, rules, uow)
    violations += assessed.violations
    if violations:
        raise invalid(*violations)
    order = [d.id for d in rules.documents]
    pending = [d for d in order if d in cmd.documents_promised]
    deadline = documents_deadline(uow.now, policy.due_days(rules)) if pending else None
    done = Registered(
        claim_id=uuid.uuid4(),
        kind=rules.kind,
        program_id=rules.program_id,
        status=ClaimStatus.ACCEPTED_DOCUMENTS_PENDING if pending else ClaimStatus.SUBMITTED,
        requested_amount_fen=cmd.requested_amount_fen,
        eligible_amount_fen=assessed.eligible_fen,
        amount_note=assessed.note,
        pending_documents=pending,
        documents_due_by=deadline.due_by if deadline else None,
    )
    row = _claim_row(done, cmd, rules, assessed, policy, uow)
    row["documents_due_at"] = deadline.due_at if deadline else None  # when the lapse comes
    await _add_once(ClaimRepository(uow.conn), row, assessed.period)
    await _record_documents(uow, done, cmd, rules)
    await publish(uow, _submitted(done, cmd, assessed, uow), claim_id=done.claim_id)
    labels = (done.kind, program_label(done.program_id))
    yuan = float(fen_to_yuan(done.requested_amount_fen))
    uow.after_commit(lambda: CLAIMS_RECEIVED.labels(*labels).inc())
    uow.after_commit(lambda: AMOUNT_REQUESTED.labels(*labels).inc(yuan))
    return done


def _claim_row(
    done: Registered,
    cmd: RegisterClaim,
    rules: ClaimRules,
    assessed: _Assessment,
    policy: IntakePolicy,
    uow: UnitOfWork,
) -> dict[str, Any]:
    return {
        "claim_id": done.claim_id,
        "kind": done.kind,
        "program_id": done.program_id,
        "uscc": cmd.uscc,
        "enterprise_name": cmd.enterprise_name,
        "tax_period": assessed.period,
        "requested_amount_fen": cmd.requested_amount_fen,
        "eligible_amount_fen": done.eligible_amount_fen,
        "amount_note": done.amount_note,
        "details": assessed.details,
        "payee": cmd.payee.model_dump(),
        "registered_by": cmd.registered_by,
        "received_at": uow.now,
        "status": done.status.value,
        "pending_documents": done.pending_documents,
        "documents_due_by": done.documents_due_by,
        "documents_due_days": policy.due_days(rules),
        # The window quotes its checklist's departments until review says who holds it.
        "holders": holders_for(done.status, rules.departments, []),
        "review_due_at": deadline_after(uow.now, policy.review_due_working_days),
    }


async def _add_once(repo: ClaimRepository, row: dict[str, Any], period: str) -> None:
    """One live claim per enterprise and tax period (VAT) or program (subsidy)."""
    field = "program_id" if row["program_id"] else "tax_period"
    key = row["program_id"] or period
    existing = await repo.find_live(row["uscc"], row["kind"], key)
    if existing is not None:
        raise DuplicateClaim(existing, field)
    try:
        async with repo.conn.transaction():
            await repo.add(row)
    except asyncpg.UniqueViolationError:
        # Lost a race with an identical registration: the index decided.
        other = await repo.find_live(row["uscc"], row["kind"], key)
        raise DuplicateClaim(other or row["claim_id"], field) from None


async def _record_documents(
    uow: UnitOfWork, done: Registered, cmd: RegisterClaim, rules: ClaimRules
) -> None:
    critical = {d.id: d.critical for d in rules.documents}
    order = [d.id for d in rules.documents]
    await ClaimRepository(uow.conn).add_documents(
        done.claim_id,
        [(d, critical[d], "supplied") for d in order if d in cmd.documents_supplied]
        + [(d, critical[d], "promised") for d in done.pending_documents],
        recorded_by=cmd.registered_by,
        at=uow.now,
    )


def _submitted(
    done: Registered, cmd: RegisterClaim, assessed: _Assessment, uow: UnitOfWork
) -> ClaimSubmittedV1:
    return ClaimSubmittedV1(
        claim_kind=done.kind,
        uscc=cmd.uscc,
        enterprise_name=cmd.enterprise_name,
        tax_period=assessed.period,
        program_id=done.program_id,
        requested_amount_fen=cmd.requested_amount_fen,
        eligible_amount_fen=done.eligible_amount_fen,
        payee=cmd.payee,
        registered_by=cmd.registered_by,
        received_at=uow.now,
        pending_documents=done.pending_documents,
        documents_due_by=done.documents_due_by,
    )
