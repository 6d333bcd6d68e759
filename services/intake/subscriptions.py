"""What intake consumes: every event of review and payout, for the tracker.

Each goes on the claim's timeline and the claim is settled from it
(``service_layer/tracker.py``); two of review's events change more than the timeline
(a department's decision, a return for documents). A new contract in
``shared/contracts/review_events.py`` or ``payout_events.py`` is subscribed to here by
itself (``_TRACKED``); one that needs its own handling gets an ``@on`` below.
"""

from __future__ import annotations

from services.intake.service_layer import tracker
from services.intake.service_layer.policy import IntakePolicy, default_policy
from shared.contracts import (
    REGISTRY,
    EventEnvelope,
    EventPayload,
    ReviewReturnedForDocumentsV1,
    ReviewTaskDecidedV1,
    payout_events,
    review_events,
)
from shared.messaging.dispatch import Subscriptions, TypedHandler
from shared.unit_of_work import UnitOfWork

SERVICE = "intake"

_TRACKED: list[type[EventPayload]] = sorted(
    (
        model
        for model in REGISTRY.values()
        if model.__module__ in (review_events.__name__, payout_events.__name__)
    ),
    key=lambda m: (m.event_type, m.version),
)


def build(policy: IntakePolicy) -> Subscriptions:
    """Intake's subscriptions, bound to the policy of the running service (bootstrap)."""
    table = Subscriptions(SERVICE)

    @table.on(ReviewTaskDecidedV1)
    async def department_decided(
        uow: UnitOfWork, event: ReviewTaskDecidedV1, envelope: EventEnvelope
    ) -> None:
        await tracker.department_decided(uow, event, envelope, policy)

    @table.on(ReviewReturnedForDocumentsV1)
    async def documents_requested(
        uow: UnitOfWork, event: ReviewReturnedForDocumentsV1, envelope: EventEnvelope
    ) -> None:
        await tracker.documents_requested(uow, event, envelope, policy)

    keys = {(s.model.event_type, s.model.version) for s in table}
    for model in _TRACKED:
        if (model.event_type, model.version) not in keys:
            table.add(model, _on_timeline(policy))
    return table


def _on_timeline(policy: IntakePolicy) -> TypedHandler[EventPayload]:
    async def on_timeline(uow: UnitOfWork, event: EventPayload, envelope: EventEnvelope) -> None:
        await tracker.track(uow, envelope, policy)

    return on_timeline


subscriptions = build(default_policy())
"""The declaration (the README's event-flow diagram is generated from it); the running
service uses ``build`` with its own settings (``bootstrap.py``)."""
