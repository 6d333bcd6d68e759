"""What payout consumes, and the use case that handles each (``service_layer.on_events``).

Only these: review's decision and intake's submission (what payout checks an approval
against), documents completed, lapse and withdrawal.
Other events on those topics have no subscription here, so the consumer passes them by.
"""

from __future__ import annotations

from services.payout.service_layer import on_events
from shared.contracts import (
    ClaimDocumentsCompletedV1,
    ClaimLapsedV1,
    ClaimSubmittedV1,
    ClaimWithdrawnV1,
    EventEnvelope,
    ReviewDecidedV1,
)
from shared.messaging.dispatch import Subscriptions
from shared.programs import Catalogue, load_catalogue
from shared.unit_of_work import UnitOfWork

SERVICE = "payout"


def payout_subscriptions(catalogue: Catalogue) -> Subscriptions:
    """The table for one catalogue (an approval's fund comes from its rules)."""
    table = Subscriptions(SERVICE)

    @table.on(ReviewDecidedV1)
    async def review_decided(uow: UnitOfWork, event: ReviewDecidedV1, env: EventEnvelope) -> None:
        await on_events.review_decided(uow, event, env, catalogue)

    @table.on(ClaimSubmittedV1)
    async def claim_submitted(uow: UnitOfWork, event: ClaimSubmittedV1, env: EventEnvelope) -> None:
        await on_events.claim_submitted(uow, event, env, catalogue)

    table.add(ClaimDocumentsCompletedV1, on_events.documents_completed)
    table.add(ClaimLapsedV1, on_events.claim_lapsed)
    table.add(ClaimWithdrawnV1, on_events.claim_withdrawn)
    return table


subscriptions = payout_subscriptions(load_catalogue())
"""The table of the shipped catalogue (what the README's event-flow diagram shows)."""
