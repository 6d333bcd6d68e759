"""Maps (event type, version) to the payload model that validates it.

Every EventPayload subclass in the producer modules is registered; a producer adds an
event by defining its class there and nothing else.
"""

from __future__ import annotations

from shared.contracts import intake_events, payout_events, review_events
from shared.contracts.envelope import EventPayload

_PRODUCER_MODULES = (intake_events, review_events, payout_events)


def _collect() -> dict[tuple[str, int], type[EventPayload]]:
    found: dict[tuple[str, int], type[EventPayload]] = {}
    for module in _PRODUCER_MODULES:
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, EventPayload)
                and value is not EventPayload
                and value.__module__ == module.__name__
            ):
                key = (value.event_type, value.version)
                if key in found:
                    raise RuntimeError(f"two contracts for {key}: {found[key]} and {value}")
                found[key] = value
    return found


REGISTRY: dict[tuple[str, int], type[EventPayload]] = _collect()


class UnknownEventType(LookupError):
    pass


def payload_model(event_type: str, version: int) -> type[EventPayload]:
    try:
        return REGISTRY[(event_type, version)]
    except KeyError:
        raise UnknownEventType(
            f"no contract for event type {event_type!r} version {version}"
        ) from None
