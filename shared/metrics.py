"""One Prometheus registry per process and the messaging metrics every service has.

Business metrics live with their service; label sets stay small (never claim ids).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

OUTBOX_PUBLISHED = Counter(
    "claimflow_outbox_published_total",
    "Events the outbox relay handed to the broker.",
    ["service", "topic"],
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "claimflow_outbox_backlog",
    "Outbox rows not yet published.",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_OLDEST_AGE = Gauge(
    "claimflow_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row (0 when empty).",
    ["service"],
    registry=REGISTRY,
)
CONSUMED = Counter(
    "claimflow_consumed_events_total",
    "Events read by a service's consumer, by what became of them.",
    ["service", "event_type", "outcome"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "claimflow_dead_letters_total",
    "Messages sent to the dead-letter topic.",
    ["service"],
    registry=REGISTRY,
)
CONSUMER_BATCH_FAILURES = Counter(
    "claimflow_consumer_batch_failures_total",
    "Batches rolled back and re-read (database or broker trouble).",
    ["service"],
    registry=REGISTRY,
)
PROCESSING_LATENCY = Histogram(
    "claimflow_event_processing_latency_seconds",
    "From an event's occurred_at to its handling committed by this service.",
    ["service", "event_type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
HELD = Counter(
    "claimflow_held_events_total",
    "Events held because the service has no handler for their version (not dropped).",
    ["service"],
    registry=REGISTRY,
)
HELD_WAITING = Gauge(
    "claimflow_held_events_waiting",
    "Events held now, waiting for a handler of their version (held_events rows).",
    ["service"],
    registry=REGISTRY,
)
DEAD_LETTERS_OPEN = Gauge(
    "claimflow_dead_letters_open",
    "Dead letters not yet re-driven (dead_letters rows), by what failed.",
    ["service", "kind"],
    registry=REGISTRY,
)
OUTBOX_QUARANTINED = Counter(
    "claimflow_outbox_quarantined_total",
    "Outbox rows set aside after failing to send too often (dead-lettered, re-drivable).",
    ["service", "topic"],
    registry=REGISTRY,
)
OUTBOX_SEND_FAILURES = Counter(
    "claimflow_outbox_send_failures_total",
    "Outbox rows the broker did not take in a relay cycle.",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_RELAY_FAILURES = Counter(
    "claimflow_outbox_relay_failures_total",
    "Relay cycles that failed as a whole (broker or database unreachable).",
    ["service"],
    registry=REGISTRY,
)
OUTBOX_REPLAYED = Counter(
    "claimflow_outbox_replayed_total",
    "Published outbox rows put back for publishing: the broker lost them "
    "(log_end_below_mark, offset_regressed, cluster_changed) or an operator asked.",
    ["service", "reason"],
    registry=REGISTRY,
)
AUDIT_BREAKS = Gauge(
    "claimflow_audit_breaks",
    "Breaks the service's last audit verification found (tampered, deleted, inserted "
    "entries, unusable seals); 0 when its chains verified.",
    ["service"],
    registry=REGISTRY,
)
AUDIT_VERIFICATIONS = Counter(
    "claimflow_audit_verifications_total",
    "Audit verification runs of the service's chains against their seals, by result.",
    ["service", "result"],
    registry=REGISTRY,
)
AUDIT_LAST_SEAL = Gauge(
    "claimflow_audit_last_seal_timestamp_seconds",
    "When the service last sealed its chain heads (or found them unchanged since the last seal).",
    ["service"],
    registry=REGISTRY,
)
EVENTS_REFUSED = Counter(
    "claimflow_events_refused_total",
    "Consumed events dead-lettered for their signature: none, unknown key, invalid, or "
    "signed by a service not entitled to the event type.",
    ["service", "reason"],
    registry=REGISTRY,
)
