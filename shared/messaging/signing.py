"""Signed events (issue 12 item 4): no one but the entitled service can produce an event
its consumers will apply.

**Producer.** When a service stages an event in its outbox (``stage_events``), the
envelope is serialised once as RFC 8785 canonical JSON — the exact bytes that will be
published — and signed with the service's Ed25519 key over
``EVENT_CONTEXT + value``. The outbox row keeps the key id and the signature; the relay
sends them as the Kafka headers ``claimflow-key-id`` and ``claimflow-signature`` (base64).

Signing at *stage* time, not in the relay: the signature is made by the process that
made the change, inside its transaction, so a row written into ``outbox`` by anyone with
database access but without the service's key is published unsigned and refused; and the
relay (which another issue is changing) only passes two columns on.

**Consumer.** Before an event reaches the inbox or a handler, ``EventVerifier.check``
wants: both headers; a key id in the configured public keys (``public.json``); a valid
signature over the exact bytes received; the envelope's ``producer`` equal to the
signing service; and that service entitled to the event type (``ENTITLED``: review alone
may emit ``review.*``). Anything else is dead-lettered with the reason and counted
(``claimflow_events_refused_total{reason}``); it never claims the inbox under its event
id, so a forgery cannot shadow the genuine event. A replay of a signed event unchanged
is a duplicate for the inbox; changed in any byte (an amount), its signature fails.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import rfc8785
from cryptography.exceptions import InvalidSignature

from shared.audit.keys import KeyRing, ServiceKey, UnknownKey
from shared.contracts import EventEnvelope

EVENT_CONTEXT = b"claimflow-event/1\n"
"""Prefixed to what an event signature covers (the same key seals the audit chains)."""
HEADER_KEY_ID = "claimflow-key-id"
HEADER_SIGNATURE = "claimflow-signature"

ENTITLED: dict[str, str] = {"claim": "intake", "review": "review", "payout": "payout"}
"""Event type prefix (before the first dot) -> the one service that may emit it."""
ANY_SERVICE = frozenset({"dead_letter"})
"""Types every service emits (its dead letters)."""

_signers: dict[str, ServiceKey] = {}


def install_signer(service: str, key: ServiceKey) -> None:
    """From now on, everything ``service`` stages in its outbox is signed with ``key``."""
    if key.service != service:
        raise ValueError(f"{service} cannot sign with {key.service}'s key")
    _signers[service] = key


def remove_signer(service: str) -> None:
    _signers.pop(service, None)


def signer_for(service: str) -> ServiceKey | None:
    return _signers.get(service)


def envelope_bytes(envelope: EventEnvelope) -> bytes:
    """The bytes published for an envelope: RFC 8785 canonical JSON."""
    data = envelope.model_dump(mode="json")
    try:
        return rfc8785.dumps(data)
    except rfc8785.CanonicalizationError:
        # An integer beyond what JSON numbers hold exactly: publish pydantic's JSON; the
        # signature covers the exact bytes either way.
        return envelope.model_dump_json().encode()


def sign(key: ServiceKey, value: bytes) -> str:
    return base64.b64encode(key.sign(EVENT_CONTEXT + value)).decode()


def signed_headers(key_id: str | None, signature: str | None) -> list[tuple[str, bytes]] | None:
    if key_id is None or signature is None:
        return None
    return [(HEADER_KEY_ID, key_id.encode()), (HEADER_SIGNATURE, signature.encode())]


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            try:
                return value.decode("ascii")
            except (UnicodeDecodeError, AttributeError):
                return None
    return None


def entitled_service(event_type: str) -> str | None:
    return ENTITLED.get(event_type.split(".", 1)[0])


class Refused(Exception):
    """An event whose origin cannot be trusted; ``code`` is the metric's reason label."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass(frozen=True)
class EventVerifier:
    keyring: KeyRing

    def check(self, value: bytes, headers: Sequence[tuple[str, bytes]] | None) -> str:
        """The signing service; raises Refused with the reason otherwise."""
        key_id = header(headers, HEADER_KEY_ID)
        signature = header(headers, HEADER_SIGNATURE)
        if not key_id or not signature:
            raise Refused("unsigned", "the event is not signed (no claimflow-key-id/-signature)")
        try:
            signer = self.keyring.verify(
                key_id, base64.b64decode(signature, validate=True), EVENT_CONTEXT + value
            )
        except UnknownKey:
            raise Refused("unknown_key", f"signed with unknown key {key_id!r}") from None
        except (InvalidSignature, ValueError):
            raise Refused(
                "bad_signature",
                f"the signature of key {key_id!r} does not match the bytes received "
                "(altered, or signed by another key)",
            ) from None
        producer, event_type = _peek(value)
        if producer is None or not event_type:
            # Signed, but no envelope (no producer or type): the signer's own bug. The
            # envelope parse refuses it next ("envelope invalid"), and the consumer checks
            # producer and entitlement again on whatever does parse (check_envelope).
            return signer
        return self.check_envelope(signer, producer, event_type)

    def check_envelope(self, signer: str, producer: str | None, event_type: str) -> str:
        """The signing service must be the envelope's producer and entitled to its type."""
        if event_type not in ANY_SERVICE and producer != signer:
            raise Refused("not_entitled", f"signed by {signer} but the envelope names {producer!r}")
        entitled = entitled_service(event_type)
        if event_type not in ANY_SERVICE and entitled != signer:
            raise Refused(
                "not_entitled",
                f"{signer} is not entitled to emit {event_type!r} "
                f"(only {entitled or 'no service'} is)",
            )
        return signer


def _peek(value: bytes) -> tuple[str | None, str]:
    try:
        data: Any = json.loads(value)
    except ValueError:
        return None, ""
    if not isinstance(data, dict):
        return None, ""
    producer, event_type = data.get("producer"), data.get("event_type")
    return (
        producer if isinstance(producer, str) else None,
        event_type if isinstance(event_type, str) else "",
    )
