"""Static group membership (docker-compose on Apache Kafka): off by default, and when on,
an id per service and host that survives the process's restarts."""

from __future__ import annotations

import socket

import yaml

from shared.config import ServiceSettings
from shared.devstack.stack import REPO_ROOT
from shared.service_app import group_instance_id


def test_off_unless_asked() -> None:
    assert group_instance_id("review", ServiceSettings()) is None


def test_on_it_is_the_service_and_the_host() -> None:
    settings = ServiceSettings(consumer_static_membership=True)
    assert group_instance_id("review", settings) == f"review-{socket.gethostname()}"
    assert group_instance_id("payout", settings) != group_instance_id("review", settings)


def test_docker_compose_turns_it_on_for_every_service() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    for name in ("intake", "review", "payout"):
        env = compose["services"][name]["environment"]
        assert env["CLAIMFLOW_CONSUMER_STATIC_MEMBERSHIP"] == "true", name
