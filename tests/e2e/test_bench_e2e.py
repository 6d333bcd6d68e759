"""Issue 15, item 1: `make bench-e2e --quick` runs end to end on a stack of its own and
reports every figure. A smoke test: it checks that each figure is there and sane, never
how fast anything was (this machine is shared)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from shared.devstack.stack import REPO_ROOT, SERVICES
from tests.conftest import PORT_BASE

HOPS = (
    "submit → intake committed",
    "intake → review consumed",
    "tasks open → decided (bots)",
    "review.decided → payout consumed",
    "payout consumed → issued (payment loop)",
    "payout.confirmed → intake paid",
)


def test_quick_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.e2e",
            "--quick",
            "--port-base",
            str(PORT_BASE + 20),  # ports BASE+20..+33: beside the session's stack
            "--json",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for label in (
        "claims/s (max rate, end to end)",
        "raw durable 3-hop relay (msg/s)",
        "ratio (claims/s × events/claim ÷ relay msg/s)",
        "SQL statements per claim",
        "transactions per claim",
        "submit → paid at 2/s",
        "submit → paid at 10/s",
    ):
        assert label in run.stdout, f"{label!r} missing from the report"

    figures = json.loads(out.read_text())
    for key in (
        "claims_per_s",
        "relay_msgs_per_s",
        "ratio",
        "cpu_ms_per_claim_system",
        "statements_per_claim",
        "transactions_per_claim",
        "events_per_claim",
        "deliveries_per_claim",
    ):
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, figures[key])
    cpu = figures["cpu_ms_per_claim"]
    for label in (*SERVICES, *(f"postgres: {s}" for s in SERVICES), "broker"):
        assert label in cpu and cpu[label] >= 0, (label, cpu)
    assert sum(cpu[s] for s in SERVICES) > 0
    # A claim's journey: 12 events (intake 1, review 5, payout 6 on this path), every one
    # delivered to each of its consumers; the figures are whole per claim.
    assert figures["events_per_claim"] >= 10
    assert figures["deliveries_per_claim"] >= figures["events_per_claim"]
    assert set(figures["latency"]) == {"max rate", "2/s", "10/s"}
    for rate, lat in figures["latency"].items():
        p = lat["submit_to_paid_ms"]
        assert 0 < p["p50"] <= p["p95"] <= p["p99"], (rate, p)
        for hop in HOPS:
            assert math.isfinite(lat["hops_p50_ms"][hop]), (rate, hop, lat["hops_p50_ms"])
