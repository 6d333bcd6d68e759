"""Integration contracts: everything that crosses Kafka, and nothing else.

Each producing service has its own module of events; import payloads from here.
"""

from shared.contracts.common import BankAccount, ClaimKind, Fen
from shared.contracts.dead_letter import DeadLetter
from shared.contracts.envelope import EventEnvelope, EventPayload
from shared.contracts.intake_events import (
    ClaimDocumentsCompletedV1,
    ClaimDocumentSuppliedV1,
    ClaimLapsedV1,
    ClaimSubmittedV1,
    ClaimWithdrawnV1,
)
from shared.contracts.payout_events import (
    PayoutAcceptedV1,
    PayoutAccountCorrectedV1,
    PayoutConfirmedV1,
    PayoutFailedV1,
    PayoutHeldV1,
    PayoutIssuedV1,
    PayoutQueuedV1,
    PayoutReleasedV1,
    PayoutRequestedV1,
    PayoutRetryScheduledV1,
    PayoutReturnedV1,
    PayoutSentV1,
    PayoutWithheldV1,
)
from shared.contracts.registry import REGISTRY, UnknownEventType, payload_model
from shared.contracts.review_events import (
    CrossCheckFinding,
    ReviewCrossCheckedV1,
    ReviewDeadlineWarningV1,
    ReviewDecidedV1,
    ReviewEscalatedV1,
    ReviewReturnedForDocumentsV1,
    ReviewSignedOffV1,
    ReviewStageChangedV1,
    ReviewTaskDecidedV1,
)

__all__ = [
    "REGISTRY",
    "BankAccount",
    "ClaimDocumentSuppliedV1",
    "ClaimDocumentsCompletedV1",
    "ClaimKind",
    "ClaimLapsedV1",
    "ClaimSubmittedV1",
    "ClaimWithdrawnV1",
    "CrossCheckFinding",
    "DeadLetter",
    "EventEnvelope",
    "EventPayload",
    "Fen",
    "PayoutAcceptedV1",
    "PayoutAccountCorrectedV1",
    "PayoutConfirmedV1",
    "PayoutFailedV1",
    "PayoutHeldV1",
    "PayoutIssuedV1",
    "PayoutQueuedV1",
    "PayoutReleasedV1",
    "PayoutRequestedV1",
    "PayoutRetryScheduledV1",
    "PayoutReturnedV1",
    "PayoutSentV1",
    "PayoutWithheldV1",
    "ReviewCrossCheckedV1",
    "ReviewDeadlineWarningV1",
    "ReviewDecidedV1",
    "ReviewEscalatedV1",
    "ReviewReturnedForDocumentsV1",
    "ReviewSignedOffV1",
    "ReviewStageChangedV1",
    "ReviewTaskDecidedV1",
    "UnknownEventType",
    "payload_model",
]
