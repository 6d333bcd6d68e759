"""The broker credentials of the services' settings (shared/messaging/kafka_security.py):
PLAINTEXT for the embedded tansu stack, SASL/SCRAM (optionally over TLS) for
docker-compose's Apache Kafka, the same for FastStream and the outbox relay."""

from __future__ import annotations

import os
import ssl

import pytest
from faststream.security import SASLScram256
from pydantic import ValidationError

from shared.config import ServiceSettings
from shared.messaging.kafka_security import aiokafka_security, broker_security


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> ServiceSettings:
    for name in list(os.environ):
        if name.startswith("CLAIMFLOW_KAFKA_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(f"CLAIMFLOW_{name}", value)
    return ServiceSettings()


def test_no_settings_is_plaintext_as_the_embedded_stack_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = settings(monkeypatch)
    assert broker_security(plain) is None
    assert aiokafka_security(plain) == {}


def test_scram_sha_256_builds_faststreams_security_object(monkeypatch: pytest.MonkeyPatch) -> None:
    scram = settings(
        monkeypatch,
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        KAFKA_SASL_USERNAME="review",
        KAFKA_SASL_PASSWORD="s3cret",
    )
    security = broker_security(scram)
    assert isinstance(security, SASLScram256)
    assert (security.username, security.password, security.use_ssl) == ("review", "s3cret", False)
    assert aiokafka_security(scram) == {
        "security_protocol": "SASL_PLAINTEXT",
        "ssl_context": None,
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "review",
        "sasl_plain_password": "s3cret",
    }
    # The password is a secret: not in the settings' repr (logs, tracebacks).
    assert "s3cret" not in repr(scram)


def test_scram_over_tls_verifies_the_brokers(monkeypatch: pytest.MonkeyPatch) -> None:
    tls = settings(
        monkeypatch,
        KAFKA_SASL_MECHANISM="SCRAM-SHA-256",
        KAFKA_SASL_USERNAME="payout",
        KAFKA_SASL_PASSWORD="s3cret",
        KAFKA_TLS="true",
    )
    kwargs = aiokafka_security(tls)
    assert kwargs["security_protocol"] == "SASL_SSL"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    only_tls = aiokafka_security(settings(monkeypatch, KAFKA_TLS="true"))
    assert only_tls["security_protocol"] == "SSL"


@pytest.mark.parametrize(
    "env",
    [
        {"KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"},
        {"KAFKA_SASL_MECHANISM": "SCRAM-SHA-256", "KAFKA_SASL_USERNAME": "intake"},
        {"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "a", "KAFKA_SASL_PASSWORD": "b"},
        {"KAFKA_TLS_CAFILE": "/etc/ssl/kafka-ca.pem"},
    ],
)
def test_incomplete_or_unknown_broker_settings_stop_the_service(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    with pytest.raises(ValidationError):
        settings(monkeypatch, **env)
