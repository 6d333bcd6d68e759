"""What a service publishes when it cannot parse or process a message."""

from __future__ import annotations

import uuid

from pydantic import AwareDatetime, BaseModel, ConfigDict


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")  # tolerant reader

    dead_letter_id: uuid.UUID
    service: str
    reason: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_key: str | None
    event_id: uuid.UUID | None
    event_type: str | None
    raw_value: str
    """The original bytes, decoded as UTF-8 with replacement characters where invalid
    (the exact bytes are in the service's ``dead_letters.raw_value``, a bytea)."""
    failed_at: AwareDatetime
