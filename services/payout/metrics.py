from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics import REGISTRY

PAYOUTS = Counter(
    "claimflow_payouts_total",
    "Payouts reaching a status.",
    ["claim_kind", "status"],
    registry=REGISTRY,
)
PAID_YUAN = Counter(
    "claimflow_paid_yuan_total",
    "Yuan arrived in enterprises' accounts.",
    ["claim_kind"],
    registry=REGISTRY,
)
TIME_TO_PAYMENT = Histogram(
    "claimflow_time_to_payment_seconds",
    "Claim received at the window → funds arrived (到账).",
    ["claim_kind"],
    # Minutes to weeks: the demo lands in the first buckets, real claims in the later ones.
    buckets=(
        1,
        5,
        30,
        60,
        300,
        1800,
        3600,
        4 * 3600,
        86400,
        3 * 86400,
        7 * 86400,
        14 * 86400,
        30 * 86400,
    ),
    registry=REGISTRY,
)
