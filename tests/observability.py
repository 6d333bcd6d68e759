"""What deploy/ asks of the code: every PromQL expression of the Grafana dashboards and of
the Prometheus alert rules, the metric names they use, and the metric names the code
defines. Used by the unit test (names), the tool tests and the end-to-end test (a real
Prometheus evaluating every expression).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
RULES = DEPLOY / "prometheus" / "alerts.yml"
FINANCE_DASHBOARD = "finance.json"

# Metric names a dashboard or rule may use before the code defines them, while the
# feature that defines them is built on another branch. Empty on main: every name the
# dashboards and rules use exists, and every finance panel must return data end to end.
# A name listed here that the code already defines fails the tests too.
PLANNED_METRICS: frozenset[str] = frozenset()

# Grafana fills these in before a query reaches Prometheus; the tests do the same.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_METRIC = re.compile(r"\b((?:claimflow|faststream)_[a-zA-Z0-9_]+)\b")
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


@dataclass(frozen=True)
class Query:
    source: str  # "operations.json", "finance.json" or "alerts.yml"
    title: str  # panel title or alert name
    expr: str

    @property
    def promql(self) -> str:
        """The expression as Prometheus receives it (Grafana variables filled in)."""
        text = self.expr
        for var, value in GRAFANA_VARIABLES.items():
            text = text.replace(var, value)
        return text

    def __str__(self) -> str:
        return f"{self.source} / {self.title}: {self.expr}"


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries() -> list[Query]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in _panels(board["panels"]):
            for target in panel.get("targets", []):
                found.append(Query(path.name, panel["title"], target["expr"]))
    return found


def rule_queries() -> list[Query]:
    doc = yaml.safe_load(RULES.read_text())
    return [
        Query(RULES.name, rule.get("alert") or rule["record"], str(rule["expr"]))
        for group in doc["groups"]
        for rule in group["rules"]
    ]


def all_queries() -> list[Query]:
    return dashboard_queries() + rule_queries()


def metric_names(expr: str) -> set[str]:
    """claimflow_* and faststream_* names in an expression, histogram series reduced to
    the histogram's name (``x_bucket`` → ``x``) when that is what the code calls it."""
    names = set()
    for token in _METRIC.findall(_STRING.sub('""', expr)):
        names.add(token)
    return names


def base_name(series: str, known: set[str]) -> str:
    if series in known:
        return series
    for suffix in _HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and series.removesuffix(suffix) in known:
            return series.removesuffix(suffix)
    return series


def _series_of(registry: CollectorRegistry) -> set[str]:
    """The series names a registry exposes: counters with _total, histograms with
    their base name (the queries' _bucket/_count/_sum are reduced to it)."""
    names = set()
    for family in registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        else:
            names.add(family.name)
    return names


def implemented_metric_names() -> set[str]:
    """Every metric the code defines: import every module of shared/ and services/ (not
    the __main__ modules, which start a server), read the one registry, and add what
    FastStream's Kafka Prometheus middleware registers (its own container of metrics)."""
    import services
    import shared

    for package in (shared, services):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.rsplit(".", 1)[-1] != "__main__":
                importlib.import_module(info.name)
    from faststream.prometheus.container import MetricsContainer

    from shared.metrics import REGISTRY

    names = _series_of(REGISTRY)
    middleware = CollectorRegistry()
    MetricsContainer(middleware, custom_label_names=())
    return names | _series_of(middleware)


def require_binary(name: str) -> str:
    """The path of a tool the test needs. Missing: skip locally, fail in CI (CI=true)."""
    path = shutil.which(name)
    if path:
        return path
    reason = f"`{name}` is not installed (Debian: apt-get install prometheus docker-compose)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; .ci/run installs it, so CI must have it")
    pytest.skip(reason)
