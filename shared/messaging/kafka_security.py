"""How a service authenticates to the broker: one security object for every Kafka client
of the process (FastStream's consumer and the outbox relay's aiokafka producer and
offset checker), built from the ``CLAIMFLOW_KAFKA_*`` settings.

* no settings (the embedded tansu stack, loopback only): PLAINTEXT, ``None``;
* ``CLAIMFLOW_KAFKA_SASL_MECHANISM=SCRAM-SHA-256`` with username and password
  (docker-compose's Apache Kafka): FastStream's ``SASLScram256``; the broker's ACLs then
  let this principal write only its own topics and read what it consumes (docs/audit.md);
* ``CLAIMFLOW_KAFKA_TLS=true``: the same over TLS (SASL_SSL, or SSL without a mechanism),
  verifying the brokers against ``CLAIMFLOW_KAFKA_TLS_CAFILE`` or the system's CAs.

The aiokafka keyword arguments come from FastStream's own translation
(``faststream.kafka.security.parse_security``), so the relay and the consumer can never
connect differently.
"""

from __future__ import annotations

import ssl
from typing import Any

from faststream.kafka.security import parse_security
from faststream.security import BaseSecurity, SASLScram256, SASLScram512

from shared.config import ServiceSettings


def broker_security(settings: ServiceSettings) -> BaseSecurity | None:
    """The security object for FastStream's broker/router; None: PLAINTEXT."""
    context = _tls_context(settings) if settings.kafka_tls else None
    mechanism = settings.kafka_sasl_mechanism
    if mechanism:
        scram = SASLScram256 if mechanism == "SCRAM-SHA-256" else SASLScram512
        return scram(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value(),
            ssl_context=context,
            use_ssl=settings.kafka_tls,
        )
    if context is not None:
        return BaseSecurity(ssl_context=context, use_ssl=True)
    return None


def aiokafka_security(settings: ServiceSettings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer`` / ``AIOKafkaConsumer`` (empty: PLAINTEXT)."""
    return parse_security(broker_security(settings))


def _tls_context(settings: ServiceSettings) -> ssl.SSLContext:
    # Certificate and host name verified (create_default_context's defaults).
    return ssl.create_default_context(cafile=settings.kafka_tls_cafile or None)
