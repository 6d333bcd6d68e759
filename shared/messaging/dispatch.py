"""Typed event dispatch: what a service consumes, declared in one place.

Each service has one ``subscriptions.py`` that builds a ``Subscriptions`` table::

    subscriptions = Subscriptions("review")

    @subscriptions.on(ClaimSubmittedV1)
    async def claim_arrived(uow: UnitOfWork, event: ClaimSubmittedV1, envelope: EventEnvelope):
        ...

The handler receives the payload already parsed into its contract model (tolerant
reader: unknown fields ignored) and a unit of work whose cause is the consumed event.
Routing is on (event type, version): a version nobody subscribed to is held by the
consumer (``held_events``), a type nobody subscribed to is ignored. The same table
yields the consumer's handler map, the topics to subscribe to and the event-flow
diagram of the README (``mermaid_flow``; a test keeps the README in step).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.contracts import EventEnvelope, EventPayload, intake_events, payout_events
from shared.contracts import review_events as _review_events
from shared.contracts.topics import INTAKE_EVENTS, PAYOUT_EVENTS, REVIEW_EVENTS
from shared.db import DbConnection
from shared.messaging.consumer import EventHandler
from shared.unit_of_work import UnitOfWork, UnitOfWorkFactory

P = TypeVar("P", bound=EventPayload)
TypedHandler = Callable[[UnitOfWork, P, EventEnvelope], Awaitable[None]]

# Which service produces a contract, and on which topic: by the module it lives in.
_PRODUCERS: dict[str, tuple[str, str]] = {
    intake_events.__name__: ("intake", INTAKE_EVENTS),
    _review_events.__name__: ("review", REVIEW_EVENTS),
    payout_events.__name__: ("payout", PAYOUT_EVENTS),
}


def producer_of(model: type[EventPayload]) -> tuple[str, str]:
    """(producing service, its topic) of an event contract."""
    try:
        return _PRODUCERS[model.__module__]
    except KeyError:
        raise ValueError(f"{model.__name__} is not a contract of a producing service") from None


@dataclass(frozen=True)
class Subscription:
    model: type[EventPayload]
    handler: Callable[[UnitOfWork, Any, EventEnvelope], Awaitable[None]]

    @property
    def key(self) -> tuple[str, int]:
        return (self.model.event_type, self.model.version)


class Subscriptions:
    """The events one service consumes and the use case that handles each."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._by_key: dict[tuple[str, int], Subscription] = {}

    def on(self, model: type[P]) -> Callable[[TypedHandler[P]], TypedHandler[P]]:
        """Decorator: ``handler`` applies events of contract ``model``."""

        def register(handler: TypedHandler[P]) -> TypedHandler[P]:
            self.add(model, handler)
            return handler

        return register

    def add(self, model: type[P], handler: TypedHandler[P]) -> None:
        key = (model.event_type, model.version)
        if key in self._by_key:
            raise ValueError(f"{self.service} subscribes to {key} twice")
        producer_of(model)  # only contracts of a producing service can be consumed
        self._by_key[key] = Subscription(model, handler)

    def __iter__(self) -> Any:
        return iter(self._by_key.values())

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def topics(self) -> list[str]:
        """The topics to subscribe to, in a stable order."""
        return sorted({producer_of(s.model)[1] for s in self._by_key.values()})

    def handlers(self, uows: UnitOfWorkFactory) -> dict[tuple[str, int], EventHandler]:
        """The consumer's handler map: parse the payload, open a unit of work, call."""
        return {key: _bind(sub, uows) for key, sub in self._by_key.items()}


def _bind(sub: Subscription, uows: UnitOfWorkFactory) -> EventHandler:
    async def handle(conn: DbConnection, envelope: EventEnvelope) -> None:
        # Tolerant reader: fields this build does not know are ignored, nested too.
        payload = sub.model.model_validate(envelope.payload, extra="ignore")
        async with uows.begin(conn, cause=envelope) as uow:
            await sub.handler(uow, payload, envelope)

    handle.__qualname__ = f"dispatch[{sub.model.__name__}]"
    return handle


def flow_edges(tables: Iterable[Subscriptions]) -> list[tuple[str, str, str]]:
    """(producer, event type, consumer) for every subscription, sorted."""
    return sorted(
        {(producer_of(s.model)[0], s.model.event_type, t.service) for t in tables for s in t}
    )


def mermaid_flow(tables: Iterable[Subscriptions]) -> str:
    """A Mermaid flowchart of who consumes which events of whom (for the README)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for producer, event_type, consumer in flow_edges(tables):
        grouped.setdefault((producer, consumer), []).append(event_type)
    lines = ["flowchart LR"]
    for (producer, consumer), types in sorted(grouped.items()):
        lines.append(f'    {producer} -- "{"<br/>".join(types)}" --> {consumer}')
    return "\n".join(lines)
