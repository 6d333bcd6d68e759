"""The one envelope every integration event travels in.

The envelope is what consumers deduplicate on (``event_id``) and what the tracker
orders by (``occurred_at``); the payload is parsed separately against the model
registered for ``(event_type, version)`` so that an unknown version is a clear error
(``UnknownEventType``; the consumer holds such an event instead of dropping it) instead
of a silent mis-parse.

Readers are tolerant: fields they do not know are ignored, in the envelope and in the
payload (nested models included), so a producer may add an optional field without
breaking consumers built before it. A change that older consumers cannot ignore is a
new version.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class EventPayload(BaseModel):
    """Base of every integration event payload; subclasses set the type and version."""

    # Tolerant reader. Producers' own typos are caught by mypy (pydantic plugin,
    # init_forbid_extra), not by refusing messages at run time.
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_type: ClassVar[str]
    version: ClassVar[int]


class EventEnvelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    event_id: uuid.UUID
    event_type: str = Field(min_length=1)
    version: int = Field(ge=1)
    claim_id: uuid.UUID
    occurred_at: AwareDatetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    producer: str = Field(min_length=1)
    payload: dict[str, Any]

    @classmethod
    def wrap(
        cls,
        payload: EventPayload,
        *,
        claim_id: uuid.UUID,
        producer: str,
        correlation_id: uuid.UUID | None = None,
        causation_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
    ) -> Self:
        return cls(
            event_id=uuid.uuid4(),
            event_type=payload.event_type,
            version=payload.version,
            claim_id=claim_id,
            occurred_at=occurred_at or datetime.now(UTC),
            correlation_id=correlation_id or claim_id,
            causation_id=causation_id,
            producer=producer,
            payload=payload.model_dump(mode="json"),
        )

    def parse_payload(self) -> EventPayload:
        """Validate the payload against the registered model; raises on unknown or bad."""
        from shared.contracts.registry import payload_model

        # extra="ignore" reaches nested models too (BankAccount stays strict for HTTP).
        return payload_model(self.event_type, self.version).model_validate(
            self.payload, extra="ignore"
        )

    @classmethod
    def read(cls, data: str | bytes) -> Self:
        """Parse an envelope from the wire, ignoring fields this build does not know."""
        return cls.model_validate_json(data, extra="ignore")

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()
