"""Maps (event type, version) to the payload model that validates it."""

from __future__ import annotations

from shared.contracts import events
from shared.contracts.envelope import EventPayload

_MODELS: tuple[type[EventPayload], ...] = (
    events.ClaimSubmittedV1,
    events.ReviewTaskDecidedV1,
    events.ReviewDecidedV1,
    events.PayoutRequestedV1,
    events.PayoutSentV1,
    events.PayoutConfirmedV1,
    events.PayoutFailedV1,
)

REGISTRY: dict[tuple[str, int], type[EventPayload]] = {
    (model.event_type, model.version): model for model in _MODELS
}


class UnknownEventType(LookupError):
    pass


def payload_model(event_type: str, version: int) -> type[EventPayload]:
    try:
        return REGISTRY[(event_type, version)]
    except KeyError:
        raise UnknownEventType(
            f"no contract for event type {event_type!r} version {version}"
        ) from None
