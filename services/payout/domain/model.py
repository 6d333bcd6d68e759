"""Payout's domain: one payout per approved claim, moving requested → sent → paid | failed."""

from __future__ import annotations

from enum import StrEnum


class PayoutStatus(StrEnum):
    REQUESTED = "requested"
    SENT = "sent"
    PAID = "paid"
    FAILED = "failed"


# Allowed moves; anything else is a bug or a replay and changes nothing.
TRANSITIONS: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    PayoutStatus.REQUESTED: frozenset({PayoutStatus.SENT}),
    PayoutStatus.SENT: frozenset({PayoutStatus.PAID, PayoutStatus.FAILED}),
    PayoutStatus.PAID: frozenset(),
    PayoutStatus.FAILED: frozenset(),
}


def can_move(current: PayoutStatus, target: PayoutStatus) -> bool:
    return target in TRANSITIONS[current]
