"""docker-compose's Apache Kafka authenticates every client (SASL/SCRAM-SHA-256) and
authorizes by ACL: each service's principal writes only its own topic and the
dead-letter topic, reads only the topics it consumes, in its own consumer group
(issue 12, item 4). No Docker here: the compose file is read as YAML and the init
script's grants are compared with what the code consumes and produces
(``Subscriptions``), so a new subscription without its ACL — or a grant nobody
needs — fails this test."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.intake.service_layer.policy import default_policy
from services.intake.subscriptions import build as intake_subscriptions
from services.payout.subscriptions import payout_subscriptions
from services.review.service_layer.policy import ReviewPolicy
from services.review.subscriptions import review_subscriptions
from shared.contracts.topics import ALL_TOPICS, DEAD_LETTER
from shared.messaging.dispatch import Subscriptions, producer_of
from shared.programs import load_catalogue

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
INIT_SCRIPT = ROOT / "deploy" / "kafka" / "init.sh"
SERVICES = ("intake", "review", "payout")
BROKERS = ("kafka", "kafka-2", "kafka-3")


def tables() -> dict[str, Subscriptions]:
    found = {
        "intake": intake_subscriptions(default_policy()),
        "review": review_subscriptions(ReviewPolicy()),
        "payout": payout_subscriptions(load_catalogue()),
    }
    assert {name: t.service for name, t in found.items()} == {s: s for s in SERVICES}
    return found


def expected_grants() -> set[tuple[str, str, str, str]]:
    """(principal, operation, resource type, name) every service needs, from the code."""
    subscriptions = tables()
    # Who produces on which topic: from the contracts the services consume.
    own_topic = dict(producer_of(s.model) for t in subscriptions.values() for s in t)
    assert set(own_topic) == set(SERVICES), own_topic
    grants: set[tuple[str, str, str, str]] = set()
    for service, table in subscriptions.items():
        principal = f"User:{service}"
        grants |= {
            (principal, "Write", "topic", own_topic[service]),
            # The consumer dead-letters what it cannot apply (shared/messaging/consumer.py).
            (principal, "Write", "topic", DEAD_LETTER),
            # Its consumer group is named after the service (shared/service_app.py).
            (principal, "Read", "group", service),
        }
        grants |= {(principal, "Read", "topic", topic) for topic in table.topics}
    return grants


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services: dict[str, Any] = doc["services"]
    return services


def script_calls(function: str) -> list[list[str]]:
    """The arguments of every call of a shell function of the init script."""
    text = INIT_SCRIPT.read_text(encoding="utf-8").replace("\\\n", " ")
    return [
        shlex.split(line)[1:] for line in text.splitlines() if re.match(rf"\s*{function}\s", line)
    ]


def test_the_init_script_grants_exactly_what_each_service_produces_and_consumes() -> None:
    granted: set[tuple[str, str, str, str]] = set()
    for args in script_calls("allow"):
        service, operation, resource, name = args
        assert resource in ("--topic", "--group"), args
        granted.add((f"User:{service}", operation, resource.removeprefix("--"), name))
    expected = expected_grants()
    assert granted == expected, (
        f"missing: {sorted(expected - granted)}; not needed: {sorted(granted - expected)}"
    )
    text = INIT_SCRIPT.read_text(encoding="utf-8")
    # One place adds ACLs (allow), literal names only: no wildcard, no prefix grants.
    assert text.count("--add --allow-principal") == 1
    assert "--resource-pattern-type literal" in text
    assert "'*'" not in text and '"*"' not in text and "prefixed" not in text
    assert "--deny-principal" not in text


def test_each_service_has_a_scram_user_and_the_topics_exist() -> None:
    users = {args[0]: args[1] for args in script_calls("scram_user")}
    assert set(users) == set(SERVICES)
    for service, password in users.items():
        assert password == f"${{PASSWORD_{service.upper()}:?}}", (service, password)
    text = INIT_SCRIPT.read_text(encoding="utf-8")
    assert "SCRAM-SHA-256=[iterations=8192,password=$2]" in text
    created = re.search(r"for topic in ([^;]+); do", text)
    assert created and set(created[1].split()) == set(ALL_TOPICS)
    assert "--replication-factor 3" in text and "min.insync.replicas=2" in text


def test_every_service_connects_with_its_own_credentials() -> None:
    services = compose()
    init = services["kafka-init"]
    assert init["image"].startswith("apache/kafka:")
    assert "/claimflow/kafka-init.sh" in " ".join(init["volumes"])
    for name in SERVICES:
        env = services[name]["environment"]
        assert env["CLAIMFLOW_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256", name
        assert env["CLAIMFLOW_KAFKA_SASL_USERNAME"] == name
        password = env["CLAIMFLOW_KAFKA_SASL_PASSWORD"]
        assert password.startswith(f"${{KAFKA_PASSWORD_{name.upper()}:-"), password
        # The init job sets the same password for the user it creates.
        assert init["environment"][f"PASSWORD_{name.upper()}"] == password
        assert all(h.endswith(":9092") for h in env["CLAIMFLOW_KAFKA_BOOTSTRAP"].split(","))
        depends = services[name]["depends_on"]
        assert depends["kafka-init"]["condition"] == "service_completed_successfully"
        # Nobody but the init job (and the brokers) knows the admin's password.
        assert not any("ADMIN" in key for key in env), name
    passwords = {services[n]["environment"]["CLAIMFLOW_KAFKA_SASL_PASSWORD"] for n in SERVICES}
    assert len(passwords) == len(SERVICES)


def broker_config(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in compose()[name]["environment"].items()}


@pytest.mark.parametrize("broker", BROKERS)
def test_the_brokers_authenticate_every_listener_and_deny_without_an_acl(broker: str) -> None:
    env = broker_config(broker)
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = [entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")]
    assert set(listeners) == set(protocols)
    assert all(p.startswith("SASL_") for p in protocols.values()), protocols  # no PLAINTEXT
    # Clients (services, and the host's tools) on SCRAM-SHA-256; the brokers, controllers
    # and the init job's admin on PLAIN with passwords in the brokers' JAAS config.
    for listener in ("CLIENT", "HOST"):
        assert env[f"KAFKA_LISTENER_NAME_{listener}_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-256"
        jaas = env[f"KAFKA_LISTENER_NAME_{listener}_SCRAM___SHA___256_SASL_JAAS_CONFIG"]
        assert "ScramLoginModule required" in jaas
    for listener in ("BROKER", "CONTROLLER"):
        assert env[f"KAFKA_LISTENER_NAME_{listener}_SASL_ENABLED_MECHANISMS"] == "PLAIN"
        assert (
            "PlainLoginModule required"
            in env[f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG"]
        )
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "BROKER"
    assert env["KAFKA_SASL_MECHANISM_INTER_BROKER_PROTOCOL"] == "PLAIN"
    assert env["KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL"] == "PLAIN"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert set(env["KAFKA_SUPER_USERS"].split(";")) == {"User:broker", "User:admin"}
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert f"CLIENT://{broker}:9092" in advertised and f"BROKER://{broker}:9091" in advertised
