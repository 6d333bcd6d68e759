"""deploy/ and docker-compose.yml checked by the real tools: promtool (Debian's
`prometheus` package) and docker-compose (Debian's `docker-compose` package). No Docker
daemon is needed. Skipped with a reason when a tool is missing, failed instead in CI."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from shared import db_roles
from shared.contracts.topics import ALL_TOPICS
from shared.devstack import prometheus
from shared.devstack.stack import StackConfig, StackPorts
from tests.observability import DEPLOY, REPO, RULES, require_binary


def run(*cmd: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    return done


def test_promtool_checks_the_compose_prometheus_config() -> None:
    promtool = require_binary("promtool")
    out = run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert "1 rule files found" in out.stdout


def test_promtool_checks_the_alert_rules() -> None:
    promtool = require_binary("promtool")
    out = run(promtool, "check", "rules", str(RULES))
    assert "SUCCESS" in out.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    """deploy/prometheus/alerts_test.yml: the alerts fire on made-up series, and only then."""
    promtool = require_binary("promtool")
    run(promtool, "test", "rules", str(DEPLOY / "prometheus" / "alerts_test.yml"))


def test_promtool_checks_the_embedded_stack_config(tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    cfg = StackConfig(data_dir=tmp_path, ports=StackPorts())
    path = prometheus.write_config(cfg)
    run(promtool, "check", "config", str(path))
    jobs = [job["job_name"] for job in yaml.safe_load(path.read_text())["scrape_configs"]]
    assert jobs == ["intake", "review", "payout"]


def test_docker_compose_config_is_valid() -> None:
    compose = require_binary("docker-compose")
    run(compose, "-f", "docker-compose.yml", "config", "--quiet")
    services = set(run(compose, "-f", "docker-compose.yml", "config", "--services").stdout.split())
    assert services == {
        "postgres",
        "kafka",
        "kafka-2",
        "kafka-3",
        "kafka-init",
        "db-migrate",
        "keys",
        "keycloak",
        "intake",
        "review",
        "payout",
        "demo",
        "prometheus",
        "grafana",
    }


def test_compose_file_wires_the_parts() -> None:
    """What `docker-compose config` cannot know: our images, topics and ports agree."""
    compose = require_binary("docker-compose")
    doc = yaml.safe_load(run(compose, "-f", "docker-compose.yml", "config").stdout)
    services = doc["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]
    # The topics (and SCRAM users and ACLs: tests/unit/test_compose_kafka_acls.py) come
    # from the kafka-init job's script.
    assert "/claimflow/kafka-init.sh" in services["kafka-init"]["entrypoint"]
    topic_job = (DEPLOY / "kafka" / "init.sh").read_text()
    for topic in ALL_TOPICS:
        assert topic in topic_job
    assert "--partitions 12" in topic_job  # scale-out: up to 12 instances a service
    # Replication (docs/resilience.md): three brokers, three replicas, two in sync.
    assert "--replication-factor 3" in topic_job
    assert "min.insync.replicas=2" in topic_job
    voters = services["kafka"]["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    for node, name in enumerate(("kafka", "kafka-2", "kafka-3"), start=1):
        broker = services[name]
        env = broker["environment"]
        assert env["KAFKA_NODE_ID"] == node and f"{node}@{name}:9093" in voters
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == 2
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == 3
        assert broker["restart"] == "unless-stopped" and broker["healthcheck"]["test"]
        assert services["kafka-init"]["depends_on"][name]["condition"] == "service_healthy"
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"][0] for job in scrape["scrape_configs"]
    }
    for name in ("intake", "review", "payout"):
        svc = services[name]
        assert svc["build"]["dockerfile"] == "deploy/Dockerfile"
        assert svc["command"] == ["python", "-m", f"services.{name}"]
        env = svc["environment"]
        assert env["CLAIMFLOW_HTTP_HOST"] == "0.0.0.0"
        assert targets[name] == f"{name}:{env['CLAIMFLOW_HTTP_PORT']}"
        assert env["CLAIMFLOW_HTTP_PORT"] in " ".join(svc["healthcheck"]["test"])
        assert svc["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
        # Signed events (docs/audit.md): its own key, everyone's public keys.
        assert svc["depends_on"]["keys"]["condition"] == "service_completed_successfully"
        assert env["CLAIMFLOW_EVENT_SIGNING_KEY"] == f"/keys/{name}.key"
        assert env["CLAIMFLOW_EVENT_PUBLIC_KEYS"] == "/keys/public.json"
        assert "/keys" in mounts(svc) and "/seals" in mounts(svc)
        # Docker restarts a service that exits, and gives it time to drain on SIGTERM.
        assert svc["restart"] == "unless-stopped"
        assert svc["stop_grace_period"] == "25s"
        assert "/health" in " ".join(svc["healthcheck"]["test"])
        assert env["CLAIMFLOW_KAFKA_BOOTSTRAP"].count(":9092") == 3
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= mounts(
        services["grafana"]
    )
    assert "/etc/prometheus" in mounts(services["prometheus"])


def test_compose_gives_each_service_its_own_database_role() -> None:
    """The same roles as the embedded stack (shared/db_roles.py): created by the init
    script on an empty volume, migrations as the owners, services as runtime roles."""
    compose = require_binary("docker-compose")
    doc = yaml.safe_load(run(compose, "-f", "docker-compose.yml", "config").stdout)
    services = doc["services"]
    postgres = services["postgres"]
    assert {"/docker-entrypoint-initdb.d", "/claimflow/roles.sql"} <= mounts(postgres)
    env = postgres["environment"]
    assert env["POSTGRES_HOST_AUTH_METHOD"] == "scram-sha-256"
    for role in db_roles.schema_roles():
        assert env["DB_PASSWORD_" + role.removeprefix("claimflow_").upper()]
    migrate_job = services["db-migrate"]
    assert migrate_job["command"][:3] == ["claimflow", "db", "migrate"]
    owners = [a for a in migrate_job["command"] if "=postgresql://" in a]
    assert [o.split("=")[0] for o in owners] == list(db_roles.SCHEMAS)
    for owner in owners:
        schema, url = owner.split("=", 1)
        assert url.startswith(f"postgresql://{db_roles.owner_role(schema)}:")
    for name in ("intake", "review", "payout"):
        svc = services[name]
        url = svc["environment"]["CLAIMFLOW_DATABASE_URL"]
        assert url.startswith(f"postgresql://{db_roles.runtime_role(name)}:"), url
        assert svc["depends_on"]["db-migrate"]["condition"] == "service_completed_successfully"
    bank = services["payout"]["environment"]["CLAIMFLOW_GATEWAY_DATABASE_URL"]
    assert bank.startswith(f"postgresql://{db_roles.runtime_role('bank_sim')}:")


def mounts(service: dict[str, Any]) -> set[str]:
    """Container paths of the volumes (docker-compose 1.x prints the short syntax)."""
    return {
        v["target"] if isinstance(v, dict) else str(v).split(":")[1] for v in service["volumes"]
    }


def test_dockerfile_builds_the_services_image() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.startswith("# ") and "FROM python:3.11-slim" in text
    assert "pip install ." in text
