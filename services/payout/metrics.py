"""Payout's metrics (names in docs/metrics.md, "Payout"). Labels: fund ids, kinds, hops."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
HOP_SECONDS = Histogram(
    "claimflow_payout_hop_seconds",
    "Time of one hop of a payment voucher.",
    ["hop"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 4 * 3600, 86400, 3 * 86400),
    registry=REGISTRY,
)
FUND_BUDGET = Gauge("claimflow_fund_budget_yuan", "Budget.", ["fund"], registry=REGISTRY)
FUND_REMAINING = Gauge(
    "claimflow_fund_remaining_yuan", "Budget − reserved − committed.", ["fund"], registry=REGISTRY
)
FUND_RESERVED = Gauge(
    "claimflow_fund_reserved_yuan",
    "Reserved for approved, unissued claims.",
    ["fund"],
    registry=REGISTRY,
)
WAITING = Gauge(
    "claimflow_payouts_waiting",
    "Payouts that will not move without a person.",
    ["fund", "reason"],
    registry=REGISTRY,
)
STUCK = Gauge(
    "claimflow_payouts_stuck",
    "Payouts with the bank and no news (issuing / unknown / issued) for longer than "
    "CLAIMFLOW_PAYOUT_STUCK_AFTER_S. Exported by one payout instance only.",
    ["status"],
    registry=REGISTRY,
)
FAILURES = Counter(
    "claimflow_payout_failures_total",
    "Gateway failures: transient / permanent / returned.",
    ["fund", "kind"],
    registry=REGISTRY,
)
RECONCILIATION_MISMATCHES = Counter(
    "claimflow_reconciliation_mismatches_total",
    "Mismatches found when a statement is imported.",
    ["type"],
    registry=REGISTRY,
)
WITHHELD = Counter(
    "claimflow_payouts_withheld_total",
    "Approvals payout refused to pay as they stood (issue 12 item 5), by reason: "
    "awaiting_intake, claim_mismatch, payee_mismatch, above_eligible, above_cap.",
    ["reason"],
    registry=REGISTRY,
)
WITHHELD_REASONS = (
    "awaiting_intake",
    "claim_mismatch",
    "payee_mismatch",
    "above_eligible",
    "above_cap",
)


def initialise(funds: set[str]) -> None:
    """Create the failure and mismatch counters at zero, so "none yet" reads as 0 on
    the finance dashboard and in increase(), not as a missing series."""
    for fund in sorted(funds):
        for kind in ("transient", "permanent", "returned"):
            FAILURES.labels(fund, kind)
    for mismatch in ("missing_statement_line", "unknown_statement_line", "amount_mismatch"):
        RECONCILIATION_MISMATCHES.labels(mismatch)
    for reason in WITHHELD_REASONS:
        WITHHELD.labels(reason)
