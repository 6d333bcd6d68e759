"""Department scope of reads (shared/auth/scope.py): who reads only their desks, and the
desks a claim is on as intake's tracker folds them from review's events."""

from __future__ import annotations

from typing import Any

import pytest

from services.intake.domain.model import TrackedEvent, desks_of_review
from shared.auth.caller import Caller
from shared.auth.permissions import load_policy
from shared.auth.scope import desks_of, off_desk

POLICY = load_policy()


def caller(*roles: str, departments: tuple[str, ...] = ()) -> Caller:
    return Caller(
        subject="someone",
        name="someone",
        issuer="test",
        roles=frozenset(roles),
        departments=frozenset(departments),
        permissions=POLICY.grant(frozenset(roles), frozenset(departments)),
    )


@pytest.mark.parametrize("permission", ["claims.read", "review.read", "review.worklist.read"])
def test_a_reviewer_reads_the_desks_of_the_tokens_departments(permission: str) -> None:
    assert desks_of(caller("reviewer", departments=("tax",)), permission) == ["tax"]
    both = caller("reviewer", departments=("treasury", "tax"))
    assert desks_of(both, permission) == ["tax", "treasury"]


@pytest.mark.parametrize(
    "role", ["window_clerk", "approver", "finance_clerk", "finance_supervisor", "auditor", "admin"]
)
def test_every_other_role_keeps_its_reads(role: str) -> None:
    who = caller(role, departments=("finance",))
    for permission in sorted(POLICY.roles[role].permissions):
        assert desks_of(who, permission) is None, (role, permission)


def test_an_unscoped_role_granting_the_same_read_lifts_the_scope_for_that_read_only() -> None:
    # A reviewer who is also a window clerk reads every claim (the window's read), but a
    # claim's review only on their desk (the window clerk has no review.read).
    who = caller("reviewer", "window_clerk", departments=("tax",))
    assert desks_of(who, "claims.read") is None
    assert desks_of(who, "review.read") == ["tax"]


def test_a_caller_without_the_permission_reads_no_desk() -> None:
    assert desks_of(caller("window_clerk"), "review.read") == []


def test_the_refusal_names_the_callers_desks_and_nothing_of_the_claim() -> None:
    refusal = off_desk(["tax"])
    assert (refusal.status_code, refusal.field, refusal.rule) == (
        403,
        "claim_id",
        "department_scope",
    )
    assert "tax" in str(refusal)


def stage(to_stage: str, *departments: str) -> TrackedEvent:
    payload: dict[str, Any] = {"to_stage": to_stage, "departments": list(departments)}
    return TrackedEvent("review", "review.stage_changed", payload)


def test_the_desks_are_every_department_review_put_the_claim_before() -> None:
    assert desks_of_review([]) == []
    events = [
        TrackedEvent("intake", "claim.submitted", {"departments": ["industry"]}),
        stage("department_review", "tax", "treasury"),
        TrackedEvent("review", "review.task_decided", {"department": "tax"}),
        # A resumed claim goes back to the department that asked only: tax still had a task.
        stage("department_review", "treasury"),
        stage("sign_off", "sign_off"),
    ]
    assert desks_of_review(events) == ["tax", "treasury"]
