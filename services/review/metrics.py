"""Review's business metrics (names in docs/metrics.md, "Review")."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import REGISTRY

STAGE_DURATION = Histogram(
    "claimflow_review_stage_duration_seconds",
    "Time a claim spent in a review stage: cross_check / department_review / sign_off.",
    ["kind", "stage"],
    buckets=(0.01, 0.1, 1, 10, 60, 600, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400),
    registry=REGISTRY,
)
TASK_DURATION = Histogram(
    "claimflow_review_task_duration_seconds",
    "A department task from created to decided.",
    ["department"],
    buckets=(0.1, 1, 10, 60, 600, 3600, 4 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400),
    registry=REGISTRY,
)
TASKS_OPEN = Gauge(
    "claimflow_review_tasks_open",
    "Open review tasks by deadline state: on_time / approaching / overdue.",
    ["department", "state"],
    registry=REGISTRY,
)
DEADLINE_EVENTS = Counter(
    "claimflow_review_deadline_events_total",
    "Deadline warnings and escalations emitted (stage deadlines count under the stage name).",
    ["department", "kind"],
    registry=REGISTRY,
)
DECISIONS = Counter(
    "claimflow_review_decisions_total",
    "Decisions recorded by departments and approvers (department sign_off).",
    ["department", "decision"],
    registry=REGISTRY,
)
AMOUNT_APPROVED = Counter(
    "claimflow_amount_approved_yuan_total",
    "Yuan approved by the joint review.",
    ["kind", "fund"],
    registry=REGISTRY,
)


def initialise(departments: set[str], stages: tuple[str, ...]) -> None:
    """Create the deadline counters at zero, so "no escalations yet" reads as 0 on the
    dashboards and in increase(), not as a missing series."""
    for scope in sorted(departments | set(stages)):
        for kind in ("warning", "escalation"):
            DEADLINE_EVENTS.labels(department=scope, kind=kind)
