"""What review consumes: intake's claim events, each to its use case.

Events of intake not named here (``claim.registered`` …) are not review's business and
are ignored by the consumer; a new version of one named here is held until this build
subscribes to it.
"""

from __future__ import annotations

from services.review.domain.model import CaseStatus
from services.review.service_layer import arrival, returns, withdrawal
from services.review.service_layer.policy import ReviewPolicy
from shared.contracts import (
    ClaimDocumentsCompletedV1,
    ClaimDocumentSuppliedV1,
    ClaimLapsedV1,
    ClaimSubmittedV1,
    ClaimWithdrawnV1,
    EventEnvelope,
)
from shared.messaging.dispatch import Subscriptions
from shared.unit_of_work import UnitOfWork


def review_subscriptions(policy: ReviewPolicy) -> Subscriptions:
    """The dispatch table; the use cases get ``policy`` from the composition root."""
    subscriptions = Subscriptions("review")

    @subscriptions.on(ClaimSubmittedV1)
    async def claim_submitted(
        uow: UnitOfWork, event: ClaimSubmittedV1, envelope: EventEnvelope
    ) -> None:
        await arrival.open_review(uow, policy, envelope.claim_id, event)

    @subscriptions.on(ClaimDocumentSuppliedV1)
    async def document_supplied(
        uow: UnitOfWork, event: ClaimDocumentSuppliedV1, envelope: EventEnvelope
    ) -> None:
        await returns.documents_arrived(
            uow,
            policy,
            envelope.claim_id,
            supplied=event.document,
            still_pending=event.still_pending,
        )

    @subscriptions.on(ClaimDocumentsCompletedV1)
    async def documents_completed(
        uow: UnitOfWork, event: ClaimDocumentsCompletedV1, envelope: EventEnvelope
    ) -> None:
        await returns.documents_arrived(
            uow, policy, envelope.claim_id, supplied=None, still_pending=[]
        )

    @subscriptions.on(ClaimWithdrawnV1)
    async def withdrawn(uow: UnitOfWork, event: ClaimWithdrawnV1, envelope: EventEnvelope) -> None:
        await withdrawal.end_review(uow, envelope.claim_id, CaseStatus.WITHDRAWN, event.reason)

    @subscriptions.on(ClaimLapsedV1)
    async def lapsed(uow: UnitOfWork, event: ClaimLapsedV1, envelope: EventEnvelope) -> None:
        reason = "documents not supplied by " + event.due_by.isoformat()
        await withdrawal.end_review(uow, envelope.claim_id, CaseStatus.LAPSED, reason)

    return subscriptions
