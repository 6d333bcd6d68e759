"""Segregation of duties and the documents of a return as pure rules (no database)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.review.domain.model import Case, CaseStatus, Decision, Task, TaskStatus
from services.review.domain.returns import checked_request, number_other_documents
from services.review.domain.segregation import (
    Actor,
    check_may_decide,
    check_segregation,
    refusal_for_constraint,
)
from shared.problems import Conflict, Forbidden, Invalid

NOW = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
CASE = Case(
    claim_id=uuid.uuid4(),
    kind="vat_refund",
    program_id=None,
    fund="treasury-refund",
    status=CaseStatus.DEPARTMENT_REVIEW,
    stage_started_at=NOW,
    registered_by="window-01",
    requested_amount_fen=100,
    eligible_amount_fen=100,
    recommended_amount_fen=100,
    payee_json="{}",
    claim_received_at=NOW,
    pending_documents=(),
    returned_documents=(),
)
TAX = Task(uuid.uuid4(), CASE.claim_id, "tax", "department_review", TaskStatus.PENDING, NOW)
SIGN = Task(uuid.uuid4(), CASE.claim_id, "sign_off", "sign_off", TaskStatus.PENDING, NOW)
REVIEWER = Actor("tax-r1", "tax", "reviewer")
APPROVER = Actor("leader-1", None, "approver")


def test_the_caller_fits_the_task() -> None:
    check_may_decide(CASE, TAX, REVIEWER, Decision.APPROVE, False)
    with pytest.raises(Forbidden) as err:
        check_may_decide(CASE, TAX, Actor("x", "treasury", "reviewer"), Decision.APPROVE, False)
    assert err.value.rule == "task_department"
    signing = replace(CASE, status=CaseStatus.SIGN_OFF)
    check_may_decide(signing, SIGN, APPROVER, Decision.APPROVE, False)
    with pytest.raises(Forbidden) as err:
        check_may_decide(signing, SIGN, REVIEWER, Decision.APPROVE, False)
    assert err.value.rule == "approver_role"
    with pytest.raises(Invalid) as invalid:
        check_may_decide(signing, SIGN, APPROVER, Decision.RETURN, True)
    assert invalid.value.rule == "sign_off_decision"


def test_only_an_open_task_of_a_case_in_its_stage_is_decided() -> None:
    with pytest.raises(Conflict) as err:
        check_may_decide(
            CASE, replace(TAX, status=TaskStatus.APPROVED), REVIEWER, Decision.APPROVE, False
        )
    assert err.value.rule == "task_pending"
    with pytest.raises(Conflict) as err:
        check_may_decide(
            replace(CASE, status=CaseStatus.WITHDRAWN), TAX, REVIEWER, Decision.APPROVE, False
        )
    assert err.value.rule == "claim_stage"


def test_documents_come_with_a_return_and_only_with_one() -> None:
    with pytest.raises(Invalid) as err:
        check_may_decide(CASE, TAX, REVIEWER, Decision.RETURN, False)
    assert err.value.rule == "required_for_return"
    with pytest.raises(Invalid) as err:
        check_may_decide(CASE, TAX, REVIEWER, Decision.APPROVE, True)
    assert err.value.rule == "only_for_return"


def test_registrant_one_department_and_approver_rules() -> None:
    check_segregation(CASE, TAX, REVIEWER, [])
    with pytest.raises(Forbidden) as err:
        check_segregation(CASE, TAX, Actor("window-01", "tax", "reviewer"), [])
    assert err.value.rule == "segregation_registrant"
    with pytest.raises(Forbidden) as err:
        check_segregation(CASE, TAX, REVIEWER, ["treasury"])
    assert err.value.rule == "segregation_one_department"
    with pytest.raises(Forbidden) as err:
        check_segregation(CASE, SIGN, Actor("tax-r1", None, "approver"), ["tax"])
    assert err.value.rule == "segregation_approver"
    with pytest.raises(Forbidden) as err:
        check_segregation(CASE, TAX, REVIEWER, ["sign_off"])  # the approver reviewing
    assert err.value.rule == "segregation_approver"


def test_a_database_constraint_becomes_the_same_refusal() -> None:
    refusal = refusal_for_constraint("review_segregation_one_department")
    assert refusal is not None and refusal.rule == "segregation_one_department"
    assert refusal.field == "token.sub" and refusal.status_code == 403
    assert refusal_for_constraint("review_cases_approved_has_amount") is None
    assert refusal_for_constraint(None) is None


def test_a_return_names_checklist_ids_and_numbers_titled_documents() -> None:
    asked, titles = checked_request(["a", "b"], ["b", "a", "b"], [" 补充  说明 "])
    assert (asked, titles) == (["b", "a"], ["补充 说明"])
    ids, named = number_other_documents(asked, [*titles, "新"], {"other-1": "补充 说明"})
    assert ids == ["b", "a", "other-1", "other-2"]
    assert named == {"other-1": "补充 说明", "other-2": "新"}
    with pytest.raises(Invalid) as err:
        checked_request(["a"], ["free text"], [])
    assert (err.value.field, err.value.rule) == ("documents", "unknown_document")
    with pytest.raises(Invalid) as err:
        checked_request(["a"], [], ["  "])
    assert (err.value.field, err.value.rule) == ("other_documents", "title_required")
