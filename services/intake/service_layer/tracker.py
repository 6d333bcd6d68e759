"""The tracker: every event of review and payout goes on the claim's timeline, and the
claim's status, holders and deadlines are folded from the whole timeline (``settle``),
so the order in which review's and payout's events reach intake never changes the
result. Who holds a claim in review comes from review's own events only
(``review_departments``): intake does not re-read programs.yaml for it."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.intake.adapters.repository import ClaimRepository
from services.intake.domain.model import (
    FINANCE_ACTS,
    IN_REVIEW_STATUSES,
    OUTCOMES,
    ClaimStatus,
    TrackedEvent,
    derive_status,
    desks_of_review,
    holders_for,
    review_departments,
)
from services.intake.metrics import CLAIMS_OUTCOME, program_label
from services.intake.service_layer.policy import IntakePolicy
from shared.contracts import (
    EventEnvelope,
    EventPayload,
    ReviewReturnedForDocumentsV1,
    ReviewTaskDecidedV1,
)
from shared.programs import UnknownProgram
from shared.unit_of_work import UnitOfWork
from shared.workdays import deadline_after

log = logging.getLogger(__name__)

RETURNED = ClaimStatus.RETURNED_FOR_DOCUMENTS


async def publish(uow: UnitOfWork, payload: EventPayload, *, claim_id: uuid.UUID) -> None:
    """Emit one of intake's own events and put it on the claim's timeline (one
    transaction: the timeline never shows an event the outbox does not hold)."""
    await ClaimRepository(uow.conn).record_event(uow.emit(payload, claim_id=claim_id))


@dataclass
class Change:
    """What an event changes besides the timeline: columns, and who holds the claim."""

    fields: dict[str, Any] = field(default_factory=dict)
    holders: list[str] | None = None


Apply = Callable[[asyncpg.Record], Awaitable[Change]]


async def track(
    uow: UnitOfWork, envelope: EventEnvelope, policy: IntakePolicy, apply: Apply | None = None
) -> None:
    """Record ``envelope`` on the claim's timeline (once: a redelivery changes nothing),
    apply what it changes and settle the claim. An event of a type intake has no use
    for is recorded and otherwise ignored."""
    repo = ClaimRepository(uow.conn)
    row = await repo.get(envelope.claim_id, for_update=True)
    if row is None:
        # An event for a claim intake never registered is a contract breach, not noise.
        raise LookupError(f"unknown claim {envelope.claim_id}")
    if not await repo.record_event(envelope):
        return
    change = await apply(row) if apply is not None else Change()
    await settle(uow, row, change.fields, policy=policy, holders=change.holders)


async def department_decided(
    uow: UnitOfWork, event: ReviewTaskDecidedV1, envelope: EventEnvelope, policy: IntakePolicy
) -> None:
    """A department approved or rejected: it no longer holds the claim."""

    async def apply(row: asyncpg.Record) -> Change:
        decided = list(row["decided_departments"])
        if event.decision in ("approve", "reject") and event.department not in decided:
            return Change({"decided_departments": [*decided, event.department]})
        return Change()

    await track(uow, envelope, policy, apply)


async def documents_requested(
    uow: UnitOfWork,
    event: ReviewReturnedForDocumentsV1,
    envelope: EventEnvelope,
    policy: IntakePolicy,
) -> None:
    """A department returned the claim for documents: the enterprise and that
    department hold it until they are in."""

    async def apply(row: asyncpg.Record) -> Change:
        if ClaimStatus(row["status"]).is_final:
            return Change()
        fields = await _request_documents(uow, row, event, envelope, policy)
        return Change(fields, holders=["enterprise", f"review:{event.department}"])

    await track(uow, envelope, policy, apply)


async def _request_documents(
    uow: UnitOfWork,
    row: asyncpg.Record,
    event: ReviewReturnedForDocumentsV1,
    envelope: EventEnvelope,
    policy: IntakePolicy,
) -> dict[str, Any]:
    """Each asked document becomes 'requested' (whatever it was: promised, supplied at
    the window, critical or not) and pending, and the claim's documents deadline is the
    later of the one running and a fresh one from now (a lapse is final: a new request
    never shortens the time the enterprise has)."""
    asked = list(dict.fromkeys(event.documents))
    pending: list[str] = list(row["pending_documents"])
    try:
        rules = policy.catalogue.rules_for(row["kind"], row["program_id"])
    except UnknownProgram:
        rules = None  # a program since removed from the file: no checklist to consult
    checklist = {d.id: d for d in rules.documents} if rules else {}
    await ClaimRepository(uow.conn).request_documents(
        envelope.claim_id,
        [
            (
                d,
                checklist[d].critical if d in checklist else False,
                event.document_titles.get(d) or (checklist[d].name if d in checklist else None),
            )
            for d in asked
        ],
        requested_by=event.department,
        at=envelope.occurred_at,
    )
    fields: dict[str, Any] = {}
    new = [d for d in asked if d not in pending]
    if new:
        fields["pending_documents"] = pending + new
    if asked:
        days = policy.due_days(rules) if rules else 5
        fresh = deadline_after(uow.now, days)
        running = row["documents_due_at"] if pending else None
        if running is None or fresh > running:
            fields |= {
                "documents_due_by": fresh.date(),
                "documents_due_at": fresh,
                "documents_due_from": uow.now,
                "documents_due_days": days,
            }
    return fields


async def settle(
    uow: UnitOfWork,
    row: asyncpg.Record,
    fields: dict[str, Any],
    *,
    policy: IntakePolicy,
    holders: list[str] | None = None,
) -> ClaimStatus:
    """Write ``fields`` with the status folded from every event on the claim's timeline
    (its arrival order per producer: see ``derive_status``), the holders and who must
    act by when; an outcome reached here is counted once the work has committed.
    Returns the status after."""
    repo = ClaimRepository(uow.conn)
    pending = list(fields.get("pending_documents", row["pending_documents"]))
    events = [
        TrackedEvent(r["producer"], r["event_type"], json.loads(r["payload"]))
        for r in await repo.folded_events(row["claim_id"])
    ]
    current = ClaimStatus(row["status"])
    status = derive_status(events, documents_pending=bool(pending))
    if status is not current:
        _log_reopened(row, current, status)
        fields |= {
            "status": status.value,
            "status_changed_at": max(uow.now, row["status_changed_at"]),
        }
        if status is ClaimStatus.CLOSED and "closed_reason" not in fields:
            fields["closed_reason"] = _last_payload(events, "payout.released").get("reason")
    fields |= _finance_deadline(row, current, status, policy, uow)
    holders = _holders(row, fields, events, current, status, holders)
    if holders != list(row["holders"]):
        fields["holders"] = holders
    desks = desks_of_review(events)
    if desks != list(row["review_desks"]):
        fields["review_desks"] = desks
    if fields:
        await repo.update(row["claim_id"], **fields)
    _count_outcome(uow, row, current, status)
    return status


def _log_reopened(row: asyncpg.Record, current: ClaimStatus, status: ClaimStatus) -> None:
    if current.is_final:
        log.warning(
            "claim %s was %s and is now %s: the record follows the money",
            row["claim_id"],
            current,
            status,
        )


def _finance_deadline(
    row: asyncpg.Record,
    current: ClaimStatus,
    status: ClaimStatus,
    policy: IntakePolicy,
    uow: UnitOfWork,
) -> dict[str, Any]:
    if status in FINANCE_ACTS:
        if status is not current or row["action_due_at"] is None:
            # Finance's deadline runs from the moment the tracker shows them holding it.
            return {"action_due_at": deadline_after(uow.now, policy.finance_due_working_days)}
        return {}
    return {"action_due_at": None} if row["action_due_at"] is not None else {}


def _holders(
    row: asyncpg.Record,
    fields: dict[str, Any],
    events: Sequence[TrackedEvent],
    current: ClaimStatus,
    status: ClaimStatus,
    holders: list[str] | None,
) -> list[str]:
    if status is RETURNED and holders is not None:
        return holders
    if status is RETURNED and current is RETURNED:
        return list(row["holders"])  # the enterprise, and the department that asked
    departments = review_departments(events)
    if departments is None and status in IN_REVIEW_STATUSES:
        # Review has not put the claim before its departments yet: the window's quote
        # at registration stands.
        return list(row["holders"])
    decided = fields.get("decided_departments", row["decided_departments"])
    return holders_for(status, departments or [], decided)


def _count_outcome(
    uow: UnitOfWork, row: asyncpg.Record, current: ClaimStatus, status: ClaimStatus
) -> None:
    outcome = OUTCOMES.get(status)
    if status is current or outcome is None or OUTCOMES.get(current) == outcome:
        return
    labels = (row["kind"], program_label(row["program_id"]), outcome)
    uow.after_commit(lambda: CLAIMS_OUTCOME.labels(*labels).inc())


def _last_payload(events: Sequence[TrackedEvent], event_type: str) -> dict[str, Any]:
    return next((e.payload for e in reversed(events) if e.event_type == event_type), {})
