"""Integration contracts: everything that crosses Kafka, and nothing else."""

from shared.contracts.dead_letter import DeadLetter
from shared.contracts.envelope import EventEnvelope, EventPayload
from shared.contracts.events import (
    BankAccount,
    ClaimKind,
    ClaimSubmittedV1,
    PayoutConfirmedV1,
    PayoutFailedV1,
    PayoutRequestedV1,
    PayoutSentV1,
    ReviewDecidedV1,
    ReviewTaskDecidedV1,
)
from shared.contracts.registry import UnknownEventType, payload_model

__all__ = [
    "BankAccount",
    "ClaimKind",
    "ClaimSubmittedV1",
    "DeadLetter",
    "EventEnvelope",
    "EventPayload",
    "PayoutConfirmedV1",
    "PayoutFailedV1",
    "PayoutRequestedV1",
    "PayoutSentV1",
    "ReviewDecidedV1",
    "ReviewTaskDecidedV1",
    "UnknownEventType",
    "payload_model",
]
