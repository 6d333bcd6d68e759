"""Events published by payout on the payout topic."""

from __future__ import annotations

import uuid
from typing import ClassVar

from pydantic import AwareDatetime, Field

from shared.contracts.common import BankAccount, Fen
from shared.contracts.envelope import EventPayload


class PayoutRequestedV1(EventPayload):
    event_type: ClassVar[str] = "payout.requested"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    amount_fen: Fen = Field(gt=0)
    payee: BankAccount


class PayoutSentV1(EventPayload):
    event_type: ClassVar[str] = "payout.sent"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    amount_fen: Fen = Field(gt=0)
    gateway_reference: str


class PayoutConfirmedV1(EventPayload):
    """Funds arrived in the enterprise's account (到账)."""

    event_type: ClassVar[str] = "payout.confirmed"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    amount_fen: Fen = Field(gt=0)
    arrived_at: AwareDatetime
    time_to_payment_seconds: float = Field(ge=0)


class PayoutFailedV1(EventPayload):
    event_type: ClassVar[str] = "payout.failed"
    version: ClassVar[int] = 1

    payout_id: uuid.UUID
    reason: str
    permanent: bool
