"""Every metric the dashboards and alert rules use exists in the code (or is explicitly
awaited from another issue), and the catalogue docs/metrics.md names it."""

from __future__ import annotations

import json
import re

import yaml

from tests.observability import (
    DASHBOARDS,
    DEPLOY,
    FINANCE_DASHBOARD,
    PLANNED_METRICS,
    REPO,
    all_queries,
    base_name,
    dashboard_queries,
    implemented_metric_names,
    metric_names,
    rule_queries,
)

CATALOGUE = REPO / "docs" / "metrics.md"


def used_names() -> dict[str, list[str]]:
    """metric name → where it is used, histogram series reduced to the histogram."""
    known = implemented_metric_names() | PLANNED_METRICS
    used: dict[str, list[str]] = {}
    for query in all_queries():
        for series in metric_names(query.expr):
            used.setdefault(base_name(series, known), []).append(f"{query.source}/{query.title}")
    return used


def test_dashboards_and_rules_have_queries() -> None:
    sources = {q.source for q in dashboard_queries()}
    assert sources == {"operations.json", FINANCE_DASHBOARD}
    assert len(dashboard_queries()) >= 40
    alerts = {q.title for q in rule_queries()}
    assert {
        "ServiceDown",
        "PayoutFailures",
        "FundBudgetBelow10Percent",
        "ReviewTasksOverdue",
        "OutboxStuck",
        "DeadLetters",
        "ConsumerLag",
    } <= alerts


def test_every_metric_used_exists_in_the_code() -> None:
    implemented = implemented_metric_names()
    missing = {
        name: places
        for name, places in used_names().items()
        if name not in implemented and name not in PLANNED_METRICS
    }
    assert not missing, f"dashboards/rules use metrics the code does not define: {missing}"


def test_planned_metrics_are_not_implemented_yet() -> None:
    """The allow-list only holds names still missing: once a branch that defines one is
    merged, this fails until the name is taken off PLANNED_METRICS."""
    already_there = PLANNED_METRICS & implemented_metric_names()
    assert not already_there, f"remove from PLANNED_METRICS: {sorted(already_there)}"


def test_every_metric_used_is_in_the_catalogue() -> None:
    catalogue = set(re.findall(r"`((?:claimflow|faststream)_[a-z0-9_]+)`", CATALOGUE.read_text()))
    not_listed = {
        name
        for name in used_names()
        if name not in catalogue and not name.startswith("faststream_")
    }
    assert not not_listed, f"docs/metrics.md does not list: {sorted(not_listed)}"
    assert catalogue >= PLANNED_METRICS


def test_the_faststream_middleware_metrics_are_used() -> None:
    """The operations dashboard shows FastStream's own Kafka metrics, not only ours."""
    used = used_names()
    assert "faststream_received_messages_total" in used
    assert "faststream_received_processed_messages_duration_seconds" in used
    assert "faststream_received_processed_messages_exceptions_total" in used


def test_labels_stay_small() -> None:
    """No claim ids, USCCs or user ids in any label set of the code's metrics."""
    from shared.metrics import REGISTRY

    implemented_metric_names()  # imports every module, so every metric is registered
    forbidden = {"claim_id", "uscc", "user", "user_id", "payout_id", "task_id", "event_id"}
    for family in REGISTRY.collect():
        for sample in family.samples:
            assert not forbidden & set(sample.labels), (family.name, sample.labels)
    for query in all_queries():
        for label in forbidden:
            assert not re.search(rf"\b{label}\b", query.expr), query


def test_dashboards_use_the_provisioned_datasource() -> None:
    provisioning = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uid = provisioning["datasources"][0]["uid"]
    for path in DASHBOARDS.glob("*.json"):
        board = json.loads(path.read_text())
        assert board["uid"] and board["title"]
        panel_ids = [p["id"] for p in board["panels"]]
        assert len(panel_ids) == len(set(panel_ids)), path.name
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == uid, (path.name, panel["title"])
            assert panel["targets"], (path.name, panel["title"])


def test_alert_rules_say_what_is_wrong() -> None:
    for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule
            assert rule["annotations"]["summary"], rule
