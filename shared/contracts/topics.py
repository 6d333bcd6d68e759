"""Kafka topic names. Each service publishes to exactly one topic of its own."""

from typing import Final

INTAKE_EVENTS: Final = "claimflow.intake.events.v1"
REVIEW_EVENTS: Final = "claimflow.review.events.v1"
PAYOUT_EVENTS: Final = "claimflow.payout.events.v1"
DEAD_LETTER: Final = "claimflow.dead-letter.v1"

ALL_TOPICS: Final = (INTAKE_EVENTS, REVIEW_EVENTS, PAYOUT_EVENTS, DEAD_LETTER)
