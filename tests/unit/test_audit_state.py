"""The state-against-chain projections (shared/audit/state.py) without a database: what
differs is named with table, row, column and both values; what the chain does not fix is
left alone; payee accounts are masked in what is reported."""

from __future__ import annotations

from typing import Any

from shared.audit.chain import plain
from shared.audit.state import PROJECTIONS, ChainedEntry, _check_row, mask_accounts

TASKS, CASES = PROJECTIONS["review"]
(PAYOUTS,) = PROJECTIONS["payout"]
PAYEE = {"bank_name": "b", "account_name": "n", "account_number": "6222020200001234567"}


def entry(seq: int, action: str, **payload: Any) -> ChainedEntry:
    return ChainedEntry("review", "c1", seq, action, "x", "t", {"payload": plain(payload)})


def test_a_rewritten_decided_by_is_named_with_both_values() -> None:
    decided = entry(3, "review.task_decided", task_id="t1", decision="approve", decided_by="tax-1")
    row = {"task_id": "t1", "claim_id": "c1", "decided_by": "mallory", "status": "approved"}
    (diff,) = _check_row("review", TASKS, {**row, "_must_be_chained": True}, [decided])
    assert (diff.table, diff.row, diff.column, diff.seq) == ("review_tasks", "t1", "decided_by", 3)
    assert (diff.found, diff.chained) == ("mallory", "tax-1")
    assert _check_row("review", TASKS, {**row, "decided_by": "tax-1"}, [decided]) == []


def test_a_decision_status_the_chain_never_made_and_a_made_up_task() -> None:
    decided = entry(3, "review.task_decided", task_id="t1", decision="return", decided_by="tax-1")
    row = {"task_id": "t1", "claim_id": "c1", "decided_by": "tax-1", "status": "approved"}
    (diff,) = _check_row("review", TASKS, row, [decided])
    assert (diff.column, diff.found, diff.chained) == ("status", "approved", "returned")
    other = {**row, "task_id": "t2", "_must_be_chained": True}
    (made_up,) = _check_row("review", TASKS, other, [decided])
    assert made_up.row == "t2" and "made up" in made_up.detail


def test_a_payout_amount_times_ten_and_a_paid_status_without_confirmation() -> None:
    chained = [
        entry(1, "payout.requested", payout_id="p1", amount_fen=500, payee=PAYEE),
        entry(2, "payout.sent", payout_id="p1", amount_fen=500, gateway_reference="g"),
    ]
    payee_json = '{"bank_name": "b", "account_name": "n", "account_number": "6222020200001234567"}'
    row: dict[str, Any] = {
        "payout_id": "p1",
        "claim_id": "c1",
        "amount_fen": 5000,
        "paid_amount_fen": 5000,
        "payee": payee_json,
        "status": "paid",
    }
    diffs = {d.column: d for d in _check_row("payout", PAYOUTS, row, chained)}
    assert set(diffs) == {"amount_fen", "status"}  # paid_amount: no confirmation chained
    assert (diffs["amount_fen"].found, diffs["amount_fen"].chained) == ("5000", "500")
    assert diffs["status"].chained == "payout.sent"
    moved = {**row, "payee": payee_json.replace("4567", "9999")}
    payee = next(d for d in _check_row("payout", PAYOUTS, moved, chained) if d.column == "payee")
    assert "6222020200001" not in f"{payee.found}{payee.chained}{payee.detail}"
    assert "****9999" in (payee.found or "") and "****4567" in (payee.chained or "")


def test_an_approved_amount_against_review_decided() -> None:
    decided = entry(
        6, "review.decided", decision="approved", approved_amount_fen=72000000, payee=PAYEE
    )
    row = {
        "claim_id": "c1",
        "status": "approved",
        "approved_amount_fen": 720000000,
        "payee": dict(PAYEE),
    }
    (diff,) = _check_row("review", CASES, row, [decided])
    assert (diff.column, diff.found, diff.chained) == (
        "approved_amount_fen",
        "720000000",
        "72000000",
    )


def test_account_numbers_are_masked_in_text() -> None:
    assert mask_accounts('{"account_number": "6222020200001234567"}') == (
        '{"account_number": "****4567"}'
    )
