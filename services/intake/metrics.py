"""Intake's business metrics (names in docs/metrics.md, "Intake")."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from shared.metrics import REGISTRY

CLAIMS_RECEIVED = Counter(
    "claimflow_claims_received_total",
    "Claims registered at the window.",
    ["kind", "program"],
    registry=REGISTRY,
)
CLAIMS_OUTCOME = Counter(
    "claimflow_claims_outcome_total",
    "Claims reaching an outcome, as the tracker sees them.",
    ["kind", "program", "outcome"],
    registry=REGISTRY,
)
AMOUNT_REQUESTED = Counter(
    "claimflow_amount_requested_yuan_total",
    "Yuan requested in registered claims.",
    ["kind", "program"],
    registry=REGISTRY,
)
DOCUMENTS_PENDING = Gauge(
    "claimflow_claims_documents_pending",
    "Live claims with promised documents outstanding.",
    ["kind"],
    registry=REGISTRY,
)


def program_label(program_id: str | None) -> str:
    return program_id or "none"
