"""What a service publishes when it cannot parse or process a message."""

from __future__ import annotations

import uuid

from pydantic import AwareDatetime, BaseModel, ConfigDict


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

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
    """The original bytes, decoded as UTF-8 with replacement characters where invalid."""
    failed_at: AwareDatetime
