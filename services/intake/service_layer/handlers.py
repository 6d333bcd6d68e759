"""Intake's use cases: register a claim (both kinds), record documents, withdraw, lapse
overdue claims, and keep the tracker from every event of review and payout.

Every state change and the events it causes commit together (the outbox); intake's own
events go on the claim's timeline in the same transaction.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.intake.adapters.repository import ClaimRepository
from services.intake.domain.commands import (
    RegisterClaim,
    RegisterVatRefund,
    SupplyDocument,
    WithdrawClaim,
)
from services.intake.domain.model import (
    CLOSED,
    FINAL,
    FINANCE_ACTS,
    LAPSABLE,
    OUTCOMES,
    PAYOUT_STARTED,
    WITHDRAWABLE,
    ClaimStatus,
    TrackedEvent,
    Violation,
    amount_note,
    beijing_today,
    check_documents,
    check_subsidy,
    check_vat_amounts,
    compute_vat_refund,
    derive_status,
    documents_deadline,
    holders_for,
    local_period,
)
from services.intake.metrics import CLAIMS_OUTCOME, DOCUMENTS_PENDING, program_label
from shared import idempotency
from shared.contracts import (
    ClaimDocumentsCompletedV1,
    ClaimDocumentSuppliedV1,
    ClaimLapsedV1,
    ClaimSubmittedV1,
    ClaimWithdrawnV1,
    EventEnvelope,
    UnknownEventType,
)
from shared.contracts.topics import INTAKE_EVENTS
from shared.db import DbConnection
from shared.messaging.after_commit import after_commit
from shared.messaging.outbox import stage_events
from shared.programs import Catalogue, ClaimKindRules, load_catalogue
from shared.workdays import deadline_after

SERVICE = "intake"
log = logging.getLogger(__name__)


# --- refusals: every one becomes a 4xx with the standard body -------------------------


class Refusal(idempotency.Refusal):
    status_code = 409

    def __init__(self, detail: str, errors: Sequence[Violation], **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {
            "detail": self.detail,
            "errors": [e.as_dict() for e in self.errors],
            **{k: str(v) for k, v in self.extra.items()},
        }


class Invalid(Refusal):
    status_code = 422


class NotFound(Refusal):
    status_code = 404


class DuplicateClaim(Refusal):
    def __init__(self, existing: uuid.UUID, field: str) -> None:
        super().__init__(
            "the enterprise already has a live claim of this kind for this "
            + ("program" if field == "program_id" else "tax period"),
            [
                Violation(
                    field,
                    "one_live_claim",
                    f"live claim {existing} must end (rejected, withdrawn, lapsed) first",
                )
            ],
            existing_claim_id=existing,
        )
        self.existing = existing


@dataclass(frozen=True)
class IntakePolicy:
    """What the handlers need from the settings and reference data."""

    policy_year: int
    review_due_working_days: int
    documents_due_working_days: int | None
    catalogue: Catalogue
    finance_due_working_days: int = 5
    """Working days finance has to correct the account of a failed or returned payment
    (or close the claim) once the tracker shows it waiting for them."""

    def due_days(self, rules: ClaimKindRules) -> int:
        return self.documents_due_working_days or rules.documents_due_working_days


def default_policy() -> IntakePolicy:
    return IntakePolicy(
        policy_year=2022,
        review_due_working_days=5,
        documents_due_working_days=None,
        catalogue=load_catalogue(),
    )


# --- Idempotency-Key: shared/idempotency.py (intake's own, moved there for payout) ----

Work = idempotency.Work
Response = idempotency.Response
request_hash = idempotency.request_hash
respond = idempotency.respond


# --- registration ---------------------------------------------------------------------


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
    documents_due_by: Any


def _rules_for(cmd: RegisterClaim, catalogue: Catalogue) -> ClaimKindRules:
    if isinstance(cmd, RegisterVatRefund):
        return catalogue.vat_refund
    program = catalogue.program(cmd.program_id)
    if program is None:
        known = ", ".join(p.id for p in catalogue.programs)
        raise Invalid(
            "validation failed",
            [
                Violation(
                    "program_id", "unknown_program", f"no program {cmd.program_id!r} ({known})"
                )
            ],
        )
    return program


async def register_claim(
    conn: DbConnection, cmd: RegisterClaim, policy: IntakePolicy, *, now: datetime | None = None
) -> Registered:
    received_at = now or datetime.now(UTC)
    rules = _rules_for(cmd, policy.catalogue)
    violations = check_documents(rules, cmd.documents_supplied, cmd.documents_promised)
    details: dict[str, Any]
    if isinstance(cmd, RegisterVatRefund):
        kind, program_id, period = "vat_refund", None, cmd.tax_period
        violations += check_vat_amounts(
            requested_fen=cmd.requested_amount_fen, end_credit_fen=cmd.end_credit_fen
        )
        refund = compute_vat_refund(
            end_credit_fen=cmd.end_credit_fen,
            base_credit_fen=cmd.base_credit_fen,
            input_ratio=cmd.input_ratio,
            rating=cmd.tax_credit_rating,
            policy_year=policy.policy_year,
        )
        eligible = refund.eligible_fen
        note = amount_note(cmd.requested_amount_fen, refund, policy.policy_year)
        details = {
            "end_credit_fen": cmd.end_credit_fen,
            "base_credit_fen": cmd.base_credit_fen,
            "incremental_credit_fen": refund.incremental_credit_fen,
            "stock_credit_fen": refund.stock_credit_fen,
            "input_ratio": str(cmd.input_ratio),
            "tax_credit_rating": cmd.tax_credit_rating,
            "policy_year": policy.policy_year,
        }
    else:
        program = policy.catalogue.program(cmd.program_id)
        assert program is not None
        kind, program_id, period = "subsidy", program.id, local_period(received_at)
        violations += check_subsidy(
            program,
            requested_fen=cmd.requested_amount_fen,
            today=beijing_today(received_at),
        )
        # Within the cap (checked above) the whole request is eligible; the departments
        # judge the merits.
        eligible, note = cmd.requested_amount_fen, None
        details = {"program_name": program.name, "description": cmd.description}
    if violations:
        raise Invalid("validation failed", violations)

    order = [d.id for d in rules.documents]
    pending = [d for d in order if d in cmd.documents_promised]
    deadline = documents_deadline(received_at, policy.due_days(rules)) if pending else None
    status = ClaimStatus.ACCEPTED_DOCUMENTS_PENDING if pending else ClaimStatus.SUBMITTED
    claim_id = uuid.uuid4()
    repo = ClaimRepository(conn)
    async with conn.transaction():
        existing = await repo.find_live(cmd.uscc, kind, program_id or period)
        if existing is not None:
            raise DuplicateClaim(existing, "program_id" if program_id else "tax_period")
        try:
            async with conn.transaction():
                await repo.add(
                    {
                        "claim_id": claim_id,
                        "kind": kind,
                        "program_id": program_id,
                        "uscc": cmd.uscc,
                        "enterprise_name": cmd.enterprise_name,
                        "tax_period": period,
                        "requested_amount_fen": cmd.requested_amount_fen,
                        "eligible_amount_fen": eligible,
                        "amount_note": note,
                        "details": details,
                        "payee": cmd.payee.model_dump(),
                        "registered_by": cmd.registered_by,
                        "received_at": received_at,
                        "status": status.value,
                        "pending_documents": pending,
                        "documents_due_by": deadline.due_by if deadline else None,
                        "documents_due_at": deadline.due_at if deadline else None,
                        "documents_due_days": policy.due_days(rules),
                        "holders": holders_for(status, rules.departments, []),
                        "review_due_at": deadline_after(
                            received_at, policy.review_due_working_days
                        ),
                    }
                )
        except asyncpg.UniqueViolationError:
            # Lost a race with an identical registration: the index decided.
            other = await repo.find_live(cmd.uscc, kind, program_id or period)
            raise DuplicateClaim(
                other or claim_id, "program_id" if program_id else "tax_period"
            ) from None
        critical = {d.id: d.critical for d in rules.documents}
        await repo.add_documents(
            claim_id,
            [(d, critical[d], "supplied") for d in order if d in cmd.documents_supplied]
            + [(d, critical[d], "promised") for d in pending],
            recorded_by=cmd.registered_by,
            at=received_at,
        )
        envelope = EventEnvelope.wrap(
            ClaimSubmittedV1(
                claim_kind=kind,
                uscc=cmd.uscc,
                enterprise_name=cmd.enterprise_name,
                tax_period=period,
                program_id=program_id,
                requested_amount_fen=cmd.requested_amount_fen,
                eligible_amount_fen=eligible,
                payee=cmd.payee,
                registered_by=cmd.registered_by,
                received_at=received_at,
                pending_documents=pending,
                documents_due_by=deadline.due_by if deadline else None,
            ),
            claim_id=claim_id,
            producer=SERVICE,
            occurred_at=received_at,
        )
        await _publish(conn, [envelope])
    return Registered(
        claim_id=claim_id,
        kind=kind,
        program_id=program_id,
        status=status,
        requested_amount_fen=cmd.requested_amount_fen,
        eligible_amount_fen=eligible,
        amount_note=note,
        pending_documents=pending,
        documents_due_by=deadline.due_by if deadline else None,
    )


async def _publish(conn: DbConnection, envelopes: list[EventEnvelope]) -> None:
    repo = ClaimRepository(conn)
    for envelope in envelopes:
        await repo.record_event(envelope)
    await stage_events(conn, SERVICE, INTAKE_EVENTS, envelopes)


# --- documents and withdrawal ---------------------------------------------------------


async def _locked_claim(conn: DbConnection, claim_id: uuid.UUID) -> asyncpg.Record:
    row = await ClaimRepository(conn).get(claim_id, for_update=True)
    if row is None:
        raise NotFound(f"no claim {claim_id}", [Violation("claim_id", "exists", "no such claim")])
    return row


def _closed(row: asyncpg.Record, action: str) -> Refusal:
    status = row["status"]
    started = ClaimStatus(status) in PAYOUT_STARTED | {ClaimStatus.PAYOUT_REQUESTED}
    rule = "payout_started" if started else "claim_closed"
    return Refusal(
        f"cannot {action}: the claim is {status}",
        [Violation("claim_id", rule, f"the claim is {status}")],
    )


async def supply_document(
    conn: DbConnection, cmd: SupplyDocument, *, now: datetime | None = None
) -> dict[str, Any]:
    at = now or datetime.now(UTC)
    repo = ClaimRepository(conn)
    async with conn.transaction():
        row = await _locked_claim(conn, cmd.claim_id)
        status = ClaimStatus(row["status"])
        if status in CLOSED:
            raise _closed(row, "record a document")
        pending: list[str] = list(row["pending_documents"])
        if cmd.document_id not in pending:
            supplied = {
                d["document_id"]
                for d in await repo.documents(cmd.claim_id)
                if d["state"] == "supplied"
            }
            if cmd.document_id in supplied:
                raise Refusal(
                    "document already supplied",
                    [Violation("document_id", "already_supplied", f"{cmd.document_id!r} is in")],
                )
            raise Invalid(
                "validation failed",
                [
                    Violation(
                        "document_id",
                        "not_pending",
                        f"{cmd.document_id!r} is not pending; pending: {', '.join(pending) or '-'}",
                    )
                ],
            )
        still = [d for d in pending if d != cmd.document_id]
        await repo.mark_supplied(cmd.claim_id, cmd.document_id, recorded_by=cmd.recorded_by, at=at)
        events = [
            EventEnvelope.wrap(
                ClaimDocumentSuppliedV1(
                    document=cmd.document_id, still_pending=still, recorded_by=cmd.recorded_by
                ),
                claim_id=cmd.claim_id,
                producer=SERVICE,
                occurred_at=at,
            )
        ]
        fields: dict[str, Any] = {"pending_documents": still}
        if not still:
            fields |= {
                "documents_due_by": None,
                "documents_due_at": None,
                "documents_due_from": None,
                "documents_due_days": None,
            }
            events.append(
                EventEnvelope.wrap(
                    ClaimDocumentsCompletedV1(completed_at=at),
                    claim_id=cmd.claim_id,
                    producer=SERVICE,
                    occurred_at=at,
                )
            )
        await _publish(conn, events)
        await _settle(conn, row, fields, at=at, policy=default_policy())
    return {
        "claim_id": str(cmd.claim_id),
        "document_id": cmd.document_id,
        "pending_documents": still,
        "documents_completed": not still,
    }


async def withdraw_claim(
    conn: DbConnection, cmd: WithdrawClaim, *, now: datetime | None = None
) -> dict[str, Any]:
    at = now or datetime.now(UTC)
    async with conn.transaction():
        row = await _locked_claim(conn, cmd.claim_id)
        if ClaimStatus(row["status"]) not in WITHDRAWABLE:
            raise _closed(row, "withdraw")
        await _publish(
            conn,
            [
                EventEnvelope.wrap(
                    ClaimWithdrawnV1(reason=cmd.reason, withdrawn_by=cmd.withdrawn_by),
                    claim_id=cmd.claim_id,
                    producer=SERVICE,
                    occurred_at=at,
                )
            ],
        )
        await _settle(
            conn,
            row,
            {"closed_reason": f"withdrawn at the enterprise's request: {cmd.reason}"},
            at=at,
            policy=default_policy(),
        )
    return {"claim_id": str(cmd.claim_id), "status": ClaimStatus.WITHDRAWN.value}


# --- the lapse loop -------------------------------------------------------------------


async def lapse_overdue(
    conn: DbConnection, *, as_of: datetime, limit: int = 100
) -> list[uuid.UUID]:
    """Lapse every live claim whose documents deadline passed before ``as_of``, with a
    claim.lapsed event, in one transaction. Returns the lapsed claims."""
    at = datetime.now(UTC)
    async with conn.transaction():
        rows = await ClaimRepository(conn).lapse_overdue(
            as_of=as_of, at=at, lapsable=[s.value for s in LAPSABLE], limit=limit
        )
        await _publish(
            conn,
            [
                EventEnvelope.wrap(
                    ClaimLapsedV1(
                        missing_documents=list(r["pending_documents"]),
                        due_by=r["documents_due_by"],
                    ),
                    claim_id=r["claim_id"],
                    producer=SERVICE,
                    occurred_at=at,
                )
                for r in rows
            ],
        )
    for r in rows:
        CLAIMS_OUTCOME.labels(r["kind"], program_label(r["program_id"]), "lapsed").inc()
        log.info(
            "claim %s lapsed: documents %s not supplied", r["claim_id"], r["pending_documents"]
        )
    return [r["claim_id"] for r in rows]


async def refresh_documents_pending(conn: DbConnection) -> None:
    live = [s.value for s in ClaimStatus if s not in FINAL]
    counts = await ClaimRepository(conn).documents_pending_by_kind(live)
    for kind in ("vat_refund", "subsidy"):
        DOCUMENTS_PENDING.labels(kind).set(counts.get(kind, 0))


# --- the tracker ----------------------------------------------------------------------


def _departments(row: asyncpg.Record) -> list[str]:
    catalogue = load_catalogue()
    if row["kind"] == "vat_refund":
        return list(catalogue.vat_refund.departments)
    program = catalogue.program(row["program_id"])
    return list(program.departments) if program else []


def _rules_of(row: asyncpg.Record) -> ClaimKindRules | None:
    catalogue = load_catalogue()
    if row["kind"] == "vat_refund":
        return catalogue.vat_refund
    return catalogue.program(row["program_id"])


def make_tracker(
    policy: IntakePolicy,
) -> Callable[[DbConnection, EventEnvelope], Awaitable[None]]:
    async def handle(conn: DbConnection, envelope: EventEnvelope) -> None:
        await track_event(conn, envelope, policy)

    return handle


async def _settle(
    conn: DbConnection,
    row: asyncpg.Record,
    fields: dict[str, Any],
    *,
    at: datetime,
    policy: IntakePolicy,
    holders: list[str] | None = None,
    count_outcome: bool = False,
) -> tuple[ClaimStatus, ClaimStatus]:
    """Write ``fields`` with the status folded from every event on the claim's timeline
    (its arrival order per producer: see ``derive_status``), the holders and who must
    act by when. Returns (status before, status after). ``count_outcome``: count an
    outcome reached here, after the commit (the window's own actions count theirs once
    their response is final, in the HTTP layer)."""
    repo = ClaimRepository(conn)
    pending = list(fields.get("pending_documents", row["pending_documents"]))
    decided = list(fields.get("decided_departments", row["decided_departments"]))
    events = [
        TrackedEvent(r["producer"], r["event_type"], json.loads(r["payload"]))
        for r in await repo.folded_events(row["claim_id"])
    ]
    current = ClaimStatus(row["status"])
    status = derive_status(events, documents_pending=bool(pending))
    if status is not current:
        if current.is_final:
            log.warning(
                "claim %s was %s and is now %s: the record follows the money",
                row["claim_id"],
                current,
                status,
            )
        fields |= {"status": status.value, "status_changed_at": max(at, row["status_changed_at"])}
        if status is ClaimStatus.CLOSED and "closed_reason" not in fields:
            fields["closed_reason"] = _last_payload(events, "payout.released").get("reason")
    if status in FINANCE_ACTS:
        if status is not current or row["action_due_at"] is None:
            # Finance's deadline runs from the moment the tracker shows them holding it.
            fields["action_due_at"] = deadline_after(at, policy.finance_due_working_days)
    elif row["action_due_at"] is not None:
        fields["action_due_at"] = None
    returned = ClaimStatus.RETURNED_FOR_DOCUMENTS
    if holders is None and status is returned and current is returned:
        holders = list(row["holders"])  # the enterprise, and the department that asked
    if holders is None or status is not returned:
        holders = holders_for(status, _departments(row), decided)
    if holders != list(row["holders"]):
        fields["holders"] = holders
    if fields:
        await repo.update(row["claim_id"], **fields)
    outcome = OUTCOMES.get(status)
    if (
        count_outcome
        and status is not current
        and outcome is not None
        and OUTCOMES.get(current) != outcome
    ):
        labels = (row["kind"], program_label(row["program_id"]), outcome)
        # Counted once the transaction (the consumer's batch) has committed.
        after_commit(lambda: CLAIMS_OUTCOME.labels(*labels).inc())
    return current, status


def _last_payload(events: Sequence[TrackedEvent], event_type: str) -> dict[str, Any]:
    return next((e.payload for e in reversed(events) if e.event_type == event_type), {})


async def track_event(
    conn: DbConnection, envelope: EventEnvelope, policy: IntakePolicy | None = None
) -> None:
    """Tracker: every event from review and payout goes on the claim's timeline; the
    claim's status is then folded from the whole timeline (``_settle``), so the order
    in which review's and payout's events reach intake never changes the result. A
    return for documents makes each asked document 'requested' (critical ones
    included) with a deadline. An event of a type intake does not know is recorded and
    otherwise ignored."""
    policy = policy or default_policy()
    repo = ClaimRepository(conn)
    row = await repo.get(envelope.claim_id, for_update=True)
    if row is None:
        # An event for a claim intake never registered is a contract breach, not noise.
        raise LookupError(f"unknown claim {envelope.claim_id}")
    with contextlib.suppress(UnknownEventType):
        envelope.parse_payload()  # a known type with a bad payload is dead-lettered
    if not await repo.record_event(envelope):
        return
    payload = envelope.payload
    fields: dict[str, Any] = {}
    decided: list[str] = list(row["decided_departments"])
    if envelope.event_type == "review.task_decided" and payload.get("decision") in (
        "approve",
        "reject",
    ):
        department = str(payload.get("department"))
        if department not in decided:
            decided.append(department)
            fields["decided_departments"] = decided
    holders: list[str] | None = None
    if (
        envelope.event_type == "review.returned_for_documents"
        and not ClaimStatus(row["status"]).is_final
    ):
        department = str(payload.get("department"))
        fields |= await _request_documents(conn, row, envelope, policy)
        holders = ["enterprise", f"review:{department}"]
    await _settle(
        conn, row, fields, at=datetime.now(UTC), policy=policy, holders=holders, count_outcome=True
    )


async def _request_documents(
    conn: DbConnection, row: asyncpg.Record, envelope: EventEnvelope, policy: IntakePolicy
) -> dict[str, Any]:
    """A department asks for documents: each one becomes 'requested' (whatever it was:
    promised, supplied at the window, critical or not) and pending, and the claim's
    documents deadline is the later of the one running and a fresh one from now (a
    lapse is final: a new request never shortens the time the enterprise has)."""
    payload = envelope.payload
    department = str(payload.get("department"))
    titles = {str(k): str(v) for k, v in (payload.get("document_titles") or {}).items()}
    asked = list(dict.fromkeys(str(d) for d in payload.get("documents", [])))
    pending: list[str] = list(row["pending_documents"])
    rules = _rules_of(row)
    checklist = {d.id: d for d in rules.documents} if rules else {}
    await ClaimRepository(conn).request_documents(
        envelope.claim_id,
        [
            (
                d,
                checklist[d].critical if d in checklist else False,
                titles.get(d) or (checklist[d].name if d in checklist else None),
            )
            for d in asked
        ],
        requested_by=department,
        at=envelope.occurred_at,
    )
    fields: dict[str, Any] = {}
    new = [d for d in asked if d not in pending]
    if new:
        fields["pending_documents"] = pending + new
    if asked:
        days = policy.due_days(rules) if rules else 5
        start = datetime.now(UTC)
        fresh = deadline_after(start, days)
        running = row["documents_due_at"] if pending else None
        if running is None or fresh > running:
            fields |= {
                "documents_due_by": fresh.date(),
                "documents_due_at": fresh,
                "documents_due_from": start,
                "documents_due_days": days,
            }
    return fields
