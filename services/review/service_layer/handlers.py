"""Review's use cases: cross-check a claim on arrival and open its department tasks,
record department decisions and sign-offs, pause and resume for documents, cancel on
withdrawal or lapse, and warn / escalate at deadlines.

Every state change and its outgoing events commit in one transaction (outbox). Time
comes from a ``Clock`` so tests can move it; the running service uses the wall clock.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from services.review import metrics
from services.review.adapters.watchlists import Watchlists, load_watchlists
from services.review.config import ReviewSettings
from services.review.domain.cross_checks import ClaimFacts, OtherClaim, cross_check
from services.review.domain.model import (
    SIGN_OFF,
    CaseStatus,
    Decision,
    Outcome,
    TaskStatus,
    outcome_after,
    outcome_of_sign_off,
    plan_deadline,
    remaining_documents,
)
from shared.contracts import (
    BankAccount,
    ClaimDocumentsCompletedV1,
    ClaimDocumentSuppliedV1,
    ClaimLapsedV1,
    ClaimSubmittedV1,
    ClaimWithdrawnV1,
    CrossCheckFinding,
    EventEnvelope,
    EventPayload,
    ReviewCrossCheckedV1,
    ReviewDeadlineWarningV1,
    ReviewDecidedV1,
    ReviewEscalatedV1,
    ReviewReturnedForDocumentsV1,
    ReviewSignedOffV1,
    ReviewStageChangedV1,
    ReviewTaskDecidedV1,
)
from shared.contracts.topics import REVIEW_EVENTS
from shared.db import DbConnection
from shared.messaging import after_commit
from shared.messaging.consumer import EventHandler
from shared.messaging.outbox import stage_events
from shared.money import yuan_to_fen
from shared.programs import Catalogue, load_catalogue
from shared.service_app import BackgroundLoop, ServiceRuntime
from shared.table_gauges import SingleExporter
from shared.workdays import CHINA, publish_year_gauges

SERVICE = "review"
APPROVER_ROLE = "approver"
Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


class ReviewError(Exception):
    status_code = 409

    def __init__(self, message: str, *, field: str, rule: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


class NotFound(ReviewError):
    status_code = 404


class Forbidden(ReviewError):
    status_code = 403


class Invalid(ReviewError):
    status_code = 422


@dataclass(frozen=True)
class ReviewPolicy:
    """What review needs to decide: thresholds, time limits, reference data."""

    sign_off_threshold_fen: int = 1_000_000_00
    task_working_days: int = 3
    department_review_working_days: int = 5
    sign_off_working_days: int = 2
    warn_working_days_before: int = 1
    blacklist_lookback_months: int = 36
    catalogue: Catalogue = field(default_factory=load_catalogue)
    watchlists: Watchlists = field(default_factory=load_watchlists)

    @classmethod
    def from_settings(cls, settings: ReviewSettings) -> ReviewPolicy:
        return cls(
            sign_off_threshold_fen=yuan_to_fen(settings.sign_off_threshold_yuan),
            task_working_days=settings.task_working_days,
            department_review_working_days=settings.department_review_working_days,
            sign_off_working_days=settings.sign_off_working_days,
            warn_working_days_before=settings.warn_working_days_before,
            blacklist_lookback_months=settings.blacklist_lookback_months,
            watchlists=load_watchlists(settings.watchlists_file),
        )

    def departments_for(self, kind: str, program_id: str | None) -> list[str]:
        """The departments that must each approve (并联审批), from programs.yaml."""
        if kind == "vat_refund":
            return list(self.catalogue.vat_refund.departments)
        program = self.catalogue.program(program_id or "")
        if program is None:
            raise ValueError(f"unknown program {program_id!r} for a {kind} claim")
        return list(program.departments)

    def fund_for(self, kind: str, program_id: str | None) -> str:
        if kind == "vat_refund":
            return self.catalogue.vat_refund.fund
        program = self.catalogue.program(program_id or "")
        return program.fund if program else "unknown"

    def cap_for(self, kind: str, program_id: str | None) -> int | None:
        program = self.catalogue.program(program_id or "") if kind != "vat_refund" else None
        return program.cap_fen if program else None


def _wrap(payload: EventPayload, claim_id: uuid.UUID, now: datetime) -> EventEnvelope:
    return EventEnvelope.wrap(payload, claim_id=claim_id, producer=SERVICE, occurred_at=now)


async def _open_deadline(
    conn: DbConnection,
    *,
    claim_id: uuid.UUID,
    task_id: uuid.UUID | None,
    stage: str,
    department: str | None,
    start: datetime,
    working_days: int,
    policy: ReviewPolicy,
) -> datetime:
    plan = plan_deadline(start, working_days, policy.warn_working_days_before)
    await conn.execute(
        """INSERT INTO review_deadlines (claim_id, task_id, scope, stage, department,
               started_at, warn_at, due_at, working_days)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        claim_id,
        task_id,
        "task" if task_id else "stage",
        stage,
        department,
        plan.started_at,
        plan.warn_at,
        plan.due_at,
        working_days,
    )
    return plan.due_at


async def _close_deadlines(
    conn: DbConnection, claim_id: uuid.UUID, now: datetime, *, task_id: uuid.UUID | None = None
) -> None:
    if task_id is None:
        await conn.execute(
            """UPDATE review_deadlines SET closed_at = $2
               WHERE claim_id = $1 AND closed_at IS NULL""",
            claim_id,
            now,
        )
    else:
        await conn.execute(
            "UPDATE review_deadlines SET closed_at = $2 WHERE task_id = $1 AND closed_at IS NULL",
            task_id,
            now,
        )


async def _start_department_tasks(
    conn: DbConnection,
    policy: ReviewPolicy,
    claim_id: uuid.UUID,
    departments: Sequence[str],
    now: datetime,
) -> datetime:
    """One pending task per department, all at the same moment, each with its deadline;
    plus the deadline of the stage. Returns the stage's due time."""
    for department in departments:
        task_id = uuid.uuid4()
        plan = plan_deadline(now, policy.task_working_days, policy.warn_working_days_before)
        await conn.execute(
            """INSERT INTO review_tasks (task_id, claim_id, department, status, stage,
                   created_at, due_at)
               VALUES ($1, $2, $3, 'pending', 'department_review', $4, $5)""",
            task_id,
            claim_id,
            department,
            now,
            plan.due_at,
        )
        await _open_deadline(
            conn,
            claim_id=claim_id,
            task_id=task_id,
            stage="department_review",
            department=department,
            start=now,
            working_days=policy.task_working_days,
            policy=policy,
        )
    return await _open_deadline(
        conn,
        claim_id=claim_id,
        task_id=None,
        stage="department_review",
        department=None,
        start=now,
        working_days=policy.department_review_working_days,
        policy=policy,
    )


async def _set_stage(
    conn: DbConnection,
    case: asyncpg.Record,
    to: CaseStatus,
    now: datetime,
    decision: Outcome | None = None,
) -> None:
    """Move the case (with its decision when final); observe the stage it leaves."""
    await conn.execute(
        """UPDATE review_cases SET status = $2, stage_started_at = $3,
               approved_amount_fen = coalesce($4, approved_amount_fen),
               decision_reason = coalesce($5, decision_reason), decided_at = $6
           WHERE claim_id = $1""",
        case["claim_id"],
        to.value,
        now,
        decision.approved_amount_fen if decision else None,
        decision.reason if decision else None,
        now if decision else None,
    )
    left = CaseStatus(case["status"])
    if left in (CaseStatus.DEPARTMENT_REVIEW, CaseStatus.SIGN_OFF):
        metrics.STAGE_DURATION.labels(kind=case["kind"], stage=left.value).observe(
            max(0.0, (now - case["stage_started_at"]).total_seconds())
        )


async def _finish(
    conn: DbConnection,
    policy: ReviewPolicy,
    case: asyncpg.Record,
    outcome: Outcome,
    now: datetime,
) -> list[EventEnvelope]:
    """Approve or reject the claim: cancel what is open, close the clocks, tell everyone."""
    claim_id = case["claim_id"]
    await _set_stage(conn, case, outcome.status, now, outcome)
    await conn.execute(
        "UPDATE review_tasks SET status = 'cancelled' WHERE claim_id = $1 AND status = 'pending'",
        claim_id,
    )
    await _close_deadlines(conn, claim_id, now)
    approved = outcome.status is CaseStatus.APPROVED
    if approved:
        counter = metrics.AMOUNT_APPROVED.labels(
            kind=case["kind"], fund=policy.fund_for(case["kind"], case["program_id"])
        )
        yuan = outcome.approved_amount_fen / 100
        # Counted once the decision has committed (not on a rollback or a re-run).
        after_commit.after_commit(lambda: counter.inc(yuan))
    return [
        _wrap(
            ReviewStageChangedV1(from_stage=case["status"], to_stage=outcome.status.value),
            claim_id,
            now,
        ),
        _wrap(
            ReviewDecidedV1(
                decision="approved" if approved else "rejected",
                approved_amount_fen=outcome.approved_amount_fen,
                reason=outcome.reason,
                claim_kind=case["kind"],
                program_id=case["program_id"],
                payee=BankAccount.model_validate_json(case["payee"]),
                claim_received_at=case["claim_received_at"],
                documents_pending=approved and bool(case["pending_documents"]),
            ),
            claim_id,
            now,
        ),
    ]


# ---------------------------------------------------------------- events in


def review_event_handlers(
    policy: ReviewPolicy, clock: Clock = wall_clock
) -> dict[str, EventHandler]:
    async def on_submitted(conn: DbConnection, envelope: EventEnvelope) -> None:
        claim = envelope.parse_payload()
        assert isinstance(claim, ClaimSubmittedV1)
        await open_review(conn, policy, envelope.claim_id, claim, clock())

    async def on_document_supplied(conn: DbConnection, envelope: EventEnvelope) -> None:
        event = envelope.parse_payload()
        assert isinstance(event, ClaimDocumentSuppliedV1)
        await documents_arrived(
            conn,
            policy,
            envelope.claim_id,
            clock(),
            supplied=event.document,
            still_pending=event.still_pending,
        )

    async def on_documents_completed(conn: DbConnection, envelope: EventEnvelope) -> None:
        assert isinstance(envelope.parse_payload(), ClaimDocumentsCompletedV1)
        await documents_arrived(
            conn, policy, envelope.claim_id, clock(), supplied=None, still_pending=[]
        )

    async def on_withdrawn(conn: DbConnection, envelope: EventEnvelope) -> None:
        event = envelope.parse_payload()
        assert isinstance(event, ClaimWithdrawnV1)
        await end_review(conn, envelope.claim_id, CaseStatus.WITHDRAWN, event.reason, clock())

    async def on_lapsed(conn: DbConnection, envelope: EventEnvelope) -> None:
        event = envelope.parse_payload()
        assert isinstance(event, ClaimLapsedV1)
        reason = "documents not supplied by " + event.due_by.isoformat()
        await end_review(conn, envelope.claim_id, CaseStatus.LAPSED, reason, clock())

    return {
        "claim.submitted": on_submitted,
        "claim.document_supplied": on_document_supplied,
        "claim.documents_completed": on_documents_completed,
        "claim.withdrawn": on_withdrawn,
        "claim.lapsed": on_lapsed,
    }


async def open_review(
    conn: DbConnection,
    policy: ReviewPolicy,
    claim_id: uuid.UUID,
    claim: ClaimSubmittedV1,
    now: datetime,
) -> CaseStatus | None:
    """Stage 1 on arrival (联核), then stage 2's parallel tasks (联审) unless it failed.
    Returns the case's stage, or None when the claim was already known."""
    started = time.perf_counter()
    departments = policy.departments_for(claim.claim_kind, claim.program_id)
    inserted = await conn.fetchval(
        """INSERT INTO review_cases (claim_id, kind, program_id, fund, uscc, enterprise_name,
               tax_period, requested_amount_fen, eligible_amount_fen, payee, claim_received_at,
               registered_by, status, pending_documents, documents_due_by, stage_started_at,
               created_at)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10::jsonb,$11,$12,'cross_check',$13,$14,$15,$15)
           ON CONFLICT (claim_id) DO NOTHING RETURNING true""",
        claim_id,
        claim.claim_kind,
        claim.program_id,
        policy.fund_for(claim.claim_kind, claim.program_id),
        claim.uscc,
        claim.enterprise_name,
        claim.tax_period,
        claim.requested_amount_fen,
        claim.eligible_amount_fen,
        claim.payee.model_dump_json(),
        claim.received_at,
        claim.registered_by,
        list(claim.pending_documents),
        claim.documents_due_by,
        now,
    )
    if not inserted:
        return None
    others = [
        OtherClaim(str(r["claim_id"]), r["kind"], r["program_id"], r["status"])
        for r in await conn.fetch(
            """SELECT claim_id, kind, program_id, status FROM review_cases
               WHERE uscc = $1 AND tax_period = $2 AND claim_id <> $3""",
            claim.uscc,
            claim.tax_period,
            claim_id,
        )
    ]
    used = 0
    if claim.program_id is not None:
        used = await conn.fetchval(
            """SELECT coalesce(sum(CASE WHEN status = 'approved' THEN approved_amount_fen
                                        ELSE recommended_amount_fen END), 0)
               FROM review_cases
               WHERE uscc = $1 AND program_id = $2 AND claim_id <> $3
                 AND status IN ('approved', 'department_review', 'returned', 'sign_off')""",
            claim.uscc,
            claim.program_id,
            claim_id,
        )
    facts = ClaimFacts(
        kind=claim.claim_kind,
        program_id=claim.program_id,
        uscc=claim.uscc,
        tax_period=claim.tax_period,
        received_on=claim.received_at.date(),
        requested_fen=claim.requested_amount_fen,
        eligible_fen=claim.eligible_amount_fen,
        cap_fen=policy.cap_for(claim.claim_kind, claim.program_id),
        already_approved_in_program_fen=int(used),
    )
    report = cross_check(
        facts,
        rating=policy.watchlists.rating_of(claim.uscc),
        blacklist=policy.watchlists.blacklist_for(claim.uscc),
        others=others,
        blacklist_lookback_months=policy.blacklist_lookback_months,
    )
    findings = [
        CrossCheckFinding(check=f.check, result=f.result, reason=f.reason) for f in report.findings
    ]
    await conn.execute(
        """UPDATE review_cases SET cross_check_result = $2, findings = $3::jsonb,
               recommended_amount_fen = $4 WHERE claim_id = $1""",
        claim_id,
        report.result,
        json.dumps([f.model_dump() for f in findings], ensure_ascii=False),
        report.recommended_fen,
    )
    events = [
        _wrap(
            ReviewCrossCheckedV1(
                result=report.result,
                findings=findings,
                recommended_amount_fen=report.recommended_fen,
            ),
            claim_id,
            now,
        )
    ]
    metrics.STAGE_DURATION.labels(kind=claim.claim_kind, stage="cross_check").observe(
        time.perf_counter() - started
    )
    case = await conn.fetchrow("SELECT * FROM review_cases WHERE claim_id = $1", claim_id)
    assert case is not None
    if report.result == "fail":
        events += await _finish(
            conn,
            policy,
            case,
            Outcome(CaseStatus.REJECTED, 0, f"cross-check failed: {report.failure_reason}"),
            now,
        )
        status = CaseStatus.REJECTED
    else:
        await _set_stage(conn, case, CaseStatus.DEPARTMENT_REVIEW, now)
        due = await _start_department_tasks(conn, policy, claim_id, departments, now)
        events.append(
            _wrap(
                ReviewStageChangedV1(
                    from_stage="cross_check",
                    to_stage="department_review",
                    departments=departments,
                    due_at=due,
                ),
                claim_id,
                now,
            )
        )
        status = CaseStatus.DEPARTMENT_REVIEW
    await stage_events(conn, SERVICE, REVIEW_EVENTS, events)
    return status


async def documents_arrived(
    conn: DbConnection,
    policy: ReviewPolicy,
    claim_id: uuid.UUID,
    now: datetime,
    *,
    supplied: str | None,
    still_pending: list[str],
) -> bool:
    """Track 容缺 documents; resume a returned claim once what was asked for arrived.
    Returns True when the claim resumed."""
    case = await conn.fetchrow(
        "SELECT * FROM review_cases WHERE claim_id = $1 FOR UPDATE", claim_id
    )
    if case is None:
        return False
    asked: list[str] = list(case["returned_documents"])
    left = [] if supplied is None else remaining_documents(asked, supplied)
    await conn.execute(
        """UPDATE review_cases SET pending_documents = $2, returned_documents = $3
           WHERE claim_id = $1""",
        claim_id,
        still_pending,
        left if case["status"] == CaseStatus.RETURNED else asked,
    )
    if case["status"] != CaseStatus.RETURNED or left:
        return False
    # Resume: a fresh task for each department that returned it, fresh clocks for all.
    returned = await conn.fetch(
        """SELECT DISTINCT department FROM review_tasks t
           WHERE claim_id = $1 AND status = 'returned' AND NOT EXISTS (
               SELECT 1 FROM review_tasks u WHERE u.claim_id = t.claim_id
                 AND u.department = t.department AND u.status <> 'returned')""",
        claim_id,
    )
    await _set_stage(conn, case, CaseStatus.DEPARTMENT_REVIEW, now)
    pending = await conn.fetch(
        """SELECT task_id, department FROM review_tasks
           WHERE claim_id = $1 AND status = 'pending' AND stage = 'department_review'""",
        claim_id,
    )
    for task in pending:
        plan = plan_deadline(now, policy.task_working_days, policy.warn_working_days_before)
        await conn.execute(
            "UPDATE review_tasks SET due_at = $2 WHERE task_id = $1", task["task_id"], plan.due_at
        )
        await _open_deadline(
            conn,
            claim_id=claim_id,
            task_id=task["task_id"],
            stage="department_review",
            department=task["department"],
            start=now,
            working_days=policy.task_working_days,
            policy=policy,
        )
    reopened = [r["department"] for r in returned]
    due = await _start_department_tasks(conn, policy, claim_id, reopened, now)
    departments = sorted(reopened + [t["department"] for t in pending])
    await stage_events(
        conn,
        SERVICE,
        REVIEW_EVENTS,
        [
            _wrap(
                ReviewStageChangedV1(
                    from_stage="returned",
                    to_stage="department_review",
                    departments=departments,
                    due_at=due,
                ),
                claim_id,
                now,
            )
        ],
    )
    return True


async def end_review(
    conn: DbConnection, claim_id: uuid.UUID, to: CaseStatus, reason: str, now: datetime
) -> bool:
    """Withdrawn or lapsed: cancel the open tasks; no decision is taken afterwards."""
    case = await conn.fetchrow(
        "SELECT * FROM review_cases WHERE claim_id = $1 FOR UPDATE", claim_id
    )
    if case is None or CaseStatus(case["status"]).is_final:
        return False
    await _set_stage(conn, case, to, now)
    await conn.execute(
        "UPDATE review_cases SET decision_reason = $2 WHERE claim_id = $1", claim_id, reason
    )
    await conn.execute(
        "UPDATE review_tasks SET status = 'cancelled' WHERE claim_id = $1 AND status = 'pending'",
        claim_id,
    )
    await _close_deadlines(conn, claim_id, now)
    await stage_events(
        conn,
        SERVICE,
        REVIEW_EVENTS,
        [_wrap(ReviewStageChangedV1(from_stage=case["status"], to_stage=to.value), claim_id, now)],
    )
    return True


# ---------------------------------------------------------------- decisions


_SEGREGATION_RULES = {
    "review_segregation_registrant": "the registrant of a claim cannot review it",
    "review_segregation_one_department": (
        "one person cannot decide for two departments on one claim"
    ),
    "review_segregation_approver": "the approver cannot be one of the claim's reviewers",
    "review_tasks_sign_off_by_approver": "only an approver signs off",
}


async def decide_task(
    conn: DbConnection,
    policy: ReviewPolicy,
    *,
    task_id: uuid.UUID,
    decision: Decision,
    comment: str | None,
    user_id: str,
    department: str | None,
    role: str | None,
    documents: Sequence[str] = (),
    other_documents: Sequence[str] = (),
    now: datetime | None = None,
) -> dict[str, object]:
    """``documents``: checklist ids asked for with a return; ``other_documents``: titles
    of documents the checklist does not name (each gets an ``other-N`` id)."""
    now = now or wall_clock()
    async with after_commit.committing(conn):
        claim_id = await conn.fetchval(
            "SELECT claim_id FROM review_tasks WHERE task_id = $1", task_id
        )
        if claim_id is None:
            raise NotFound(f"no task {task_id}", field="task_id", rule="exists")
        # Lock the case first: concurrent decisions on one claim are serialised here.
        case = await conn.fetchrow(
            "SELECT * FROM review_cases WHERE claim_id = $1 FOR UPDATE", claim_id
        )
        task = await conn.fetchrow("SELECT * FROM review_tasks WHERE task_id = $1", task_id)
        assert case is not None and task is not None
        sign_off = task["stage"] == SIGN_OFF
        _check_caller(
            case, task, sign_off, decision, [*documents, *other_documents], department, role
        )
        documents, titles = await _asked_documents(conn, policy, case, documents, other_documents)
        others = await conn.fetch(
            """SELECT department FROM review_tasks WHERE claim_id = $1 AND decided_by = $2
               AND department <> $3""",
            claim_id,
            user_id,
            task["department"],
        )
        if case["registered_by"] == user_id:
            raise Forbidden(
                _SEGREGATION_RULES["review_segregation_registrant"],
                field="header.X-User-Id",
                rule="segregation_registrant",
            )
        if others:
            approver = sign_off or any(r["department"] == SIGN_OFF for r in others)
            rule = (
                "review_segregation_approver" if approver else "review_segregation_one_department"
            )
            raise Forbidden(
                _SEGREGATION_RULES[rule],
                field="header.X-User-Id",
                rule=rule.removeprefix("review_"),
            )
        status = decision.task_status
        try:
            await conn.execute(
                """UPDATE review_tasks SET status = $2, decided_by = $3, decided_at = $4,
                       comment = $5, decided_role = $6, documents = $7,
                       document_titles = $8::jsonb
                   WHERE task_id = $1""",
                task_id,
                status.value,
                user_id,
                now,
                comment,
                role,
                list(documents),
                json.dumps(titles, ensure_ascii=False),
            )
        except asyncpg.CheckViolationError as err:
            constraint = err.constraint_name or ""
            if constraint not in _SEGREGATION_RULES:
                raise
            # Reached only when two requests race past the checks above: the database
            # has the last word.
            raise Forbidden(
                _SEGREGATION_RULES[constraint],
                field="header.X-User-Id",
                rule=constraint.removeprefix("review_"),
            ) from None
        await _close_deadlines(conn, claim_id, now, task_id=task_id)
        if sign_off:
            outcome = outcome_of_sign_off(decision, case["recommended_amount_fen"], comment)
            events = [
                _wrap(
                    ReviewSignedOffV1(
                        task_id=task_id,
                        decision="approve" if decision is Decision.APPROVE else "reject",
                        amount_fen=case["recommended_amount_fen"],
                        decided_by=user_id,
                        comment=comment,
                    ),
                    claim_id,
                    now,
                )
            ]
        else:
            events = [
                _wrap(
                    ReviewTaskDecidedV1(
                        task_id=task_id,
                        department=task["department"],
                        decision=decision.value,
                        reason=comment,
                        decided_by=user_id,
                        documents=list(documents),
                        document_titles=titles,
                    ),
                    claim_id,
                    now,
                )
            ]
            statuses = [
                TaskStatus(r["status"])
                for r in await conn.fetch(
                    """SELECT status FROM review_tasks WHERE claim_id = $1
                       AND stage = 'department_review'
                       AND (status IN ('pending', 'approved', 'rejected') OR task_id = $2)""",
                    claim_id,
                    task_id,
                )
            ]
            outcome = outcome_after(
                statuses,
                requested_fen=case["requested_amount_fen"],
                eligible_fen=case["eligible_amount_fen"],
                recommended_fen=case["recommended_amount_fen"],
                rejection_reason=(
                    f"{task['department']}: {comment or 'rejected'}"
                    if status is TaskStatus.REJECTED
                    else None
                ),
                sign_off_threshold_fen=policy.sign_off_threshold_fen,
            )
        events += await _apply_outcome(
            conn, policy, case, task, outcome, documents, titles, comment, now
        )
        await stage_events(conn, SERVICE, REVIEW_EVENTS, events)
    metrics.DECISIONS.labels(department=task["department"], decision=decision.value).inc()
    metrics.TASK_DURATION.labels(department=task["department"]).observe(
        max(0.0, (now - task["created_at"]).total_seconds())
    )
    return {
        "task_id": task_id,
        "claim_id": claim_id,
        "task_status": status.value,
        "claim_status": outcome.status.value,
    }


OTHER_DOCUMENT_PREFIX = "other-"


async def _asked_documents(
    conn: DbConnection,
    policy: ReviewPolicy,
    case: asyncpg.Record,
    documents: Sequence[str],
    other_documents: Sequence[str],
) -> tuple[list[str], dict[str, str]]:
    """The documents a return asks for, as ids the window can record: the claim's
    checklist ids (critical ones too: a department may need one again), then one
    ``other-N`` id per titled document the checklist does not name. Anything else is
    refused here, before the enterprise is told to bring something nobody can record."""
    rules = (
        policy.catalogue.vat_refund
        if case["kind"] == "vat_refund"
        else policy.catalogue.program(case["program_id"] or "")
    )
    checklist = [d.id for d in rules.documents] if rules else []
    unknown = [d for d in documents if d not in checklist]
    if unknown:
        raise Invalid(
            f"not on the claim's checklist: {', '.join(map(repr, unknown))}; name a checklist "
            f"document ({', '.join(checklist)}) or ask for it under other_documents with a "
            "title",
            field="documents",
            rule="unknown_document",
        )
    titles = [" ".join(t.split()) for t in other_documents]
    if any(not t for t in titles):
        raise Invalid(
            "an other document needs a title", field="other_documents", rule="title_required"
        )
    asked = list(dict.fromkeys(documents))
    if not titles:
        return asked, {}
    earlier: dict[str, str] = {}
    for r in await conn.fetch(
        "SELECT document_titles FROM review_tasks WHERE claim_id = $1", case["claim_id"]
    ):
        earlier |= json.loads(r["document_titles"])
    by_title = {title: doc for doc, title in earlier.items()}
    numbers = [int(d.removeprefix(OTHER_DOCUMENT_PREFIX)) for d in earlier]
    next_no = max(numbers, default=0) + 1
    out: dict[str, str] = {}
    for title in dict.fromkeys(titles):
        doc = by_title.get(title)  # asked again: the same id, so the window sees one
        if doc is None:
            doc, next_no = f"{OTHER_DOCUMENT_PREFIX}{next_no}", next_no + 1
        out[doc] = title
        asked.append(doc)
    return asked, out


def _check_caller(
    case: asyncpg.Record,
    task: asyncpg.Record,
    sign_off: bool,
    decision: Decision,
    documents: Sequence[str],
    department: str | None,
    role: str | None,
) -> None:
    if sign_off:
        if role != APPROVER_ROLE:
            raise Forbidden(
                "only a person with the approver role signs off",
                field="header.X-Role",
                rule="approver_role",
            )
        if decision is Decision.RETURN:
            raise Invalid(
                "sign-off is approve or reject; documents are asked for by the departments",
                field="decision",
                rule="sign_off_decision",
            )
    elif department != task["department"]:
        raise Forbidden(
            f"task belongs to department {task['department']!r}",
            field="header.X-Department",
            rule="task_department",
        )
    if task["status"] != TaskStatus.PENDING:
        raise ReviewError(f"task is already {task['status']}", field="task_id", rule="task_pending")
    expected = CaseStatus.SIGN_OFF if sign_off else CaseStatus.DEPARTMENT_REVIEW
    if case["status"] != expected:
        raise ReviewError(
            f"the claim is {case['status']}, not open for this decision",
            field="task_id",
            rule="claim_stage",
        )
    if decision is Decision.RETURN and not documents:
        raise Invalid(
            "name the documents the enterprise must supply",
            field="documents",
            rule="required_for_return",
        )
    if decision is not Decision.RETURN and documents:
        raise Invalid(
            "documents are asked for only with a return",
            field="documents",
            rule="only_for_return",
        )


async def _apply_outcome(
    conn: DbConnection,
    policy: ReviewPolicy,
    case: asyncpg.Record,
    task: asyncpg.Record,
    outcome: Outcome,
    documents: Sequence[str],
    titles: dict[str, str],
    comment: str | None,
    now: datetime,
) -> list[EventEnvelope]:
    claim_id = case["claim_id"]
    if outcome.status in (CaseStatus.APPROVED, CaseStatus.REJECTED):
        return await _finish(conn, policy, case, outcome, now)
    if outcome.status is CaseStatus.RETURNED:
        await _set_stage(conn, case, CaseStatus.RETURNED, now)
        await conn.execute(
            "UPDATE review_cases SET returned_documents = $2 WHERE claim_id = $1",
            claim_id,
            sorted(set(documents)),
        )
        # The claim is paused: its clocks stop and start afresh when it resumes.
        await _close_deadlines(conn, claim_id, now)
        return [
            _wrap(
                ReviewReturnedForDocumentsV1(
                    department=task["department"],
                    documents=list(documents),
                    comment=comment,
                    document_titles=titles,
                ),
                claim_id,
                now,
            ),
            _wrap(
                ReviewStageChangedV1(
                    from_stage="department_review",
                    to_stage="returned",
                    departments=[task["department"]],
                ),
                claim_id,
                now,
            ),
        ]
    if outcome.status is CaseStatus.SIGN_OFF:
        await _set_stage(conn, case, CaseStatus.SIGN_OFF, now)
        await conn.execute(
            "UPDATE review_cases SET recommended_amount_fen = $2 WHERE claim_id = $1",
            claim_id,
            outcome.approved_amount_fen,
        )
        await _close_deadlines(conn, claim_id, now)
        sign_off_task = uuid.uuid4()
        plan = plan_deadline(now, policy.sign_off_working_days, policy.warn_working_days_before)
        await conn.execute(
            """INSERT INTO review_tasks (task_id, claim_id, department, status, stage,
                   created_at, due_at)
               VALUES ($1, $2, 'sign_off', 'pending', 'sign_off', $3, $4)""",
            sign_off_task,
            claim_id,
            now,
            plan.due_at,
        )
        due = await _open_deadline(
            conn,
            claim_id=claim_id,
            task_id=sign_off_task,
            stage="sign_off",
            department=SIGN_OFF,
            start=now,
            working_days=policy.sign_off_working_days,
            policy=policy,
        )
        return [
            _wrap(
                ReviewStageChangedV1(
                    from_stage="department_review",
                    to_stage="sign_off",
                    departments=[APPROVER_ROLE],
                    due_at=due,
                ),
                claim_id,
                now,
            )
        ]
    return []


# ---------------------------------------------------------------- deadlines


@dataclass(frozen=True)
class DeadlineRun:
    warnings: int
    escalations: int


def _escalated_to(scope: str, stage: str, department: str | None) -> str:
    if stage == SIGN_OFF:
        return "deputy director (分管领导)"
    if scope == "task":
        return f"head of the {department} department"
    return "joint review office (联审办)"


async def run_deadlines(conn: DbConnection, now: datetime, *, limit: int = 500) -> DeadlineRun:
    """Emit each due warning and escalation exactly once.

    The conditional UPDATE (``warned_at IS NULL`` / ``escalated_at IS NULL``) marks a
    deadline in the same transaction as the outbox row of its event: a crash before the
    commit loses neither, a second run (another process, a restart) finds nothing to do.
    """
    events: list[EventEnvelope] = []
    counted: list[tuple[str, str]] = []
    async with conn.transaction():
        warned = await conn.fetch(
            """WITH due AS (
                   SELECT deadline_id FROM review_deadlines
                   WHERE warned_at IS NULL AND escalated_at IS NULL AND closed_at IS NULL
                     AND warn_at <= $1
                   ORDER BY warn_at LIMIT $2 FOR UPDATE SKIP LOCKED)
               UPDATE review_deadlines d SET warned_at = $1 FROM due
               WHERE d.deadline_id = due.deadline_id AND d.warned_at IS NULL
               RETURNING d.*""",
            now,
            limit,
        )
        for d in warned:
            events.append(
                _wrap(
                    ReviewDeadlineWarningV1(
                        scope=d["scope"],
                        stage=d["stage"],
                        department=d["department"],
                        task_id=d["task_id"],
                        due_at=d["due_at"],
                    ),
                    d["claim_id"],
                    now,
                )
            )
            counted.append((d["department"] or d["stage"], "warning"))
        escalated = await conn.fetch(
            """WITH due AS (
                   SELECT deadline_id FROM review_deadlines
                   WHERE escalated_at IS NULL AND closed_at IS NULL AND due_at <= $1
                   ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)
               UPDATE review_deadlines d SET escalated_at = $1 FROM due
               WHERE d.deadline_id = due.deadline_id AND d.escalated_at IS NULL
               RETURNING d.*""",
            now,
            limit,
        )
        for d in escalated:
            events.append(
                _wrap(
                    ReviewEscalatedV1(
                        scope=d["scope"],
                        stage=d["stage"],
                        department=d["department"],
                        task_id=d["task_id"],
                        due_at=d["due_at"],
                        escalated_to=_escalated_to(d["scope"], d["stage"], d["department"]),
                    ),
                    d["claim_id"],
                    now,
                )
            )
            counted.append((d["department"] or d["stage"], "escalation"))
        await stage_events(conn, SERVICE, REVIEW_EVENTS, events)
    for department, kind in counted:
        metrics.DEADLINE_EVENTS.labels(department=department, kind=kind).inc()
    return DeadlineRun(warnings=len(warned), escalations=len(escalated))


_OPEN_STATES = ("on_time", "approaching", "overdue")
_seen_departments: set[str] = set()


async def refresh_open_tasks(
    conn: DbConnection, now: datetime, departments: Sequence[str] = ()
) -> dict[tuple[str, str], int]:
    """Set claimflow_review_tasks_open from the tables (a gauge of what is waiting)."""
    _seen_departments.update(departments)
    rows = await conn.fetch(
        """SELECT t.department,
                  CASE WHEN t.due_at <= $1 THEN 'overdue'
                       WHEN d.warn_at IS NOT NULL AND d.warn_at <= $1 THEN 'approaching'
                       ELSE 'on_time' END AS state,
                  count(*) AS n
           FROM review_tasks t JOIN review_cases c USING (claim_id)
           LEFT JOIN review_deadlines d ON d.task_id = t.task_id AND d.closed_at IS NULL
           WHERE t.status = 'pending' AND c.status IN ('department_review', 'sign_off')
           GROUP BY 1, 2""",
        now,
    )
    counts = {(r["department"], r["state"]): int(r["n"]) for r in rows}
    _seen_departments.update(d for d, _ in counts)
    for department in _seen_departments:
        for state in _OPEN_STATES:
            metrics.TASKS_OPEN.labels(department=department, state=state).set(
                counts.get((department, state), 0)
            )
    return counts


def deadline_loop(
    policy: ReviewPolicy, interval_s: float, clock: Clock = wall_clock
) -> BackgroundLoop:
    """The scheduler as a background loop of the service (build_service_app)."""
    known = {d for p in policy.catalogue.programs for d in p.departments}
    known |= {*policy.catalogue.vat_refund.departments, SIGN_OFF}

    exporter = SingleExporter("review", [metrics.TASKS_OPEN])

    async def loop(runtime: ServiceRuntime) -> None:
        try:
            while True:
                async with runtime.db.acquire() as conn:
                    now = clock()
                    await run_deadlines(conn, now)
                    # One review instance exports the open-tasks gauge (no doubled sums).
                    if await exporter.holds(runtime.db):
                        await refresh_open_tasks(conn, now, sorted(known))
                publish_year_gauges(now.astimezone(CHINA).date())
                await asyncio.sleep(interval_s)
        finally:
            await exporter.release()

    return loop
