"""Issue 14, items 1(a), 3 and 4: a short fault campaign on a supervised stack, as CI runs
it, and `claimflow check` finding what it is there to find.

The stack's broker is on MEMORY storage: its restart loses every event it had, and the
campaign passes only if the outbox relays publish the lost ones again — claims in flight
across the restart still end paid once, every published event consumed.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from rich.console import Console
from typer.testing import CliRunner

from shared.devstack import stack
from shared.devstack.chaos import Chaos, ChaosOptions
from shared.devstack.check import run_check
from shared.devstack.cli import app
from shared.devstack.demo_finance import BANK_TROUBLE
from tests.conftest import PORT_BASE

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def chaos_stack() -> Iterator[tuple[stack.StackConfig, dict[str, object]]]:
    data_dir = Path(tempfile.mkdtemp(prefix="claimflow-chaos-", dir="/tmp"))
    data_dir.chmod(0o755)
    cfg = stack.StackConfig(
        data_dir=data_dir,
        ports=stack.StackPorts.from_base(PORT_BASE + 14),
        broker_storage="memory",
        service_env=dict(BANK_TROUBLE),
    )
    try:
        info = stack.up(cfg, with_prometheus=False)
        yield cfg, info
    finally:
        stack.down(cfg)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_a_short_campaign_recovers_from_every_fault_with_no_violation(
    chaos_stack: tuple[stack.StackConfig, dict[str, object]],
) -> None:
    cfg, info = chaos_stack
    options = ChaosOptions(
        # Broker restarts on memory storage: the broker forgets everything, the relays
        # publish it again, and consumers whose offsets belong to the old log read the
        # new one from its beginning (shared/messaging/epochs.py).
        cycles={"kill": 4, "postgres": 1, "broker": 2, "pause": 1, "slow_bank": 1},
        pause_s=5,
        slow_bank_s=5,
        postgres_down_s=2,
        rate=1.5,
        gap_s=(1.0, 3.0),
        recovery_timeout_s=120,
        drain_timeout_s=240,
        seed=14,
        cycles_file=cfg.data_dir / "chaos-cycles.jsonl",
    )
    result = asyncio.run(Chaos(cfg, info, options, Console(stderr=True)).run())
    print(json.dumps(result.as_json(), ensure_ascii=False))
    kinds = result.by_kind()
    assert set(kinds) == {"kill", "postgres", "broker", "pause", "slow_bank"}
    for kind, figures in kinds.items():
        assert figures["recovered"] == figures["cycles"], (kind, figures)
        assert figures["violations"] == 0, (kind, [c.violation_examples for c in result.cycles])
    assert result.final is not None
    assert result.final.violations == 0, result.final.as_json()
    figures = result.final.figures
    assert figures["by_status"].get("paid", 0) > 0, figures
    assert result.ok
    lines = (cfg.data_dir / "chaos-cycles.jsonl").read_text().splitlines()
    assert len(lines) == len(result.cycles) == 9


def test_check_finds_each_broken_invariant(
    chaos_stack: tuple[stack.StackConfig, dict[str, object]],
) -> None:
    """Break the stack's books by hand, one invariant each, as a faulty build would; the
    check names every one, and the CLI exits 1 with the JSON line."""
    cfg, _ = chaos_stack
    dsn = cfg.dsn

    async def break_things() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            payout = await conn.fetchrow(
                """SELECT payout_id, claim_id, amount_fen, fund_id FROM payout.payouts
                   WHERE status = 'paid' ORDER BY paid_at LIMIT 1"""
            )
            assert payout is not None, "the campaign paid nothing"
            # Paid twice at the bank: what the unique index forbids, once it is gone.
            await conn.execute("DROP INDEX bank_sim.instructions_one_live_per_payout")
            await conn.execute(
                """INSERT INTO bank_sim.instructions (payout_id, issue_no, attempt, amount_fen,
                       account_number, account_name, status, settle_after, settled_at)
                   SELECT payout_id, 99, 1, amount_fen, account_number, account_name,
                          'settled', now(), now() - interval '1 hour'
                   FROM bank_sim.instructions WHERE payout_id = $1 AND status = 'settled'""",
                payout["payout_id"],
            )
            # Review approved less than payout paid.
            await conn.execute(
                "UPDATE review.review_cases SET approved_amount_fen = 1 WHERE claim_id = $1",
                payout["claim_id"],
            )
            # A fund's books that no longer add up.
            await conn.execute(
                "UPDATE payout.funds SET paid_fen = paid_fen + 1, committed_fen = "
                "committed_fen + 1 WHERE fund_id = $1",
                payout["fund_id"],
            )
            # A claim stuck between services for an hour.
            await conn.execute(
                """UPDATE intake.claims SET status = 'approved',
                          status_changed_at = now() - interval '1 hour'
                   WHERE claim_id = (SELECT claim_id FROM intake.claims
                                     WHERE status = 'rejected' LIMIT 1)"""
            )
            # An event never published, another never consumed.
            # (Quarantined at once, so intake's relay does not send it meanwhile: a
            # quarantined row is not drained either.)
            await conn.execute(
                """INSERT INTO intake.outbox (event_id, topic, message_key, event_type,
                       payload, created_at, quarantined_at)
                   VALUES (gen_random_uuid(), 'nowhere', NULL, 'test.stuck', '{}',
                           now() - interval '1 hour', now())"""
            )
            # One payout has consumed, made to look published an hour ago: the check
            # only counts events older than its grace period, and the campaign may have
            # ended seconds before (seen in CI: the row picked was 20 s old).
            consumed = await conn.fetchval(
                """SELECT o.event_id FROM review.outbox o
                   JOIN payout.inbox i ON i.message_id = o.event_id::text
                   WHERE o.event_type = 'review.decided' AND o.published_at IS NOT NULL
                   ORDER BY o.published_at LIMIT 1"""
            )
            assert consumed is not None, "payout consumed no decision"
            await conn.execute(
                "UPDATE review.outbox SET published_at = now() - interval '1 hour' "
                "WHERE event_id = $1",
                consumed,
            )
            await conn.execute("DELETE FROM payout.inbox WHERE message_id = $1", str(consumed))
        finally:
            await conn.close()

    asyncio.run(break_things())
    report = asyncio.run(run_check(dsn, grace_s=60))
    broken = {i.name: i.violations for i in report.invariants}
    assert broken == {
        "paid_once": 1,
        "paid_within_approved": 1,
        "fund_books": 1,
        "bank_ledger": 1,
        "claims_settled": 1,
        "outbox_drained": 1,
        "events_consumed": 1,
    }, report.as_json()
    result = CliRunner().invoke(
        app, ["check", "--grace", "60", "--data-dir", str(cfg.data_dir)], catch_exceptions=False
    )
    assert result.exit_code == 1
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["ok"] is False and line["violations"] == report.violations
