"""The finance and audit screens' own logic without a stack: account masking, the CSV
export, the payouts filter as payout's API takes it, the merged audit history, who may
reach which screen."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

from fastapi.testclient import TestClient

from services.console.app import create_app
from services.console.audit import MISSING, merge_audits
from services.console.finance import (
    ACTIONS,
    CSV_COLUMNS,
    PayoutFilter,
    action,
    export_name,
    mask_account,
    payouts_csv,
)
from services.console.session import SessionStore
from tests.unit.test_console import caller, settings

ROW = {
    "payout_id": "p-1",
    "claim_id": "c-1",
    "claim_kind": "subsidy",
    "fund_id": "direct-financing-2026",
    "status": "paid",
    "approved_amount": "50000.00",
    "paid_amount": "50000.00",
    "requested_at": "2026-11-26T02:00:00+00:00",
    "paid_at": "2026-11-26T02:00:05+00:00",
    "time_to_payment_seconds": 12.5,
    "payee": {
        "bank_name": "中国工商银行",
        "account_name": '=HYPERLINK("http://x")',
        "account_number": "6222020200001234567",
    },
    "failure_reason": None,
}


def read_csv(text: str) -> list[dict[str, str]]:
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


def test_account_numbers_are_masked_to_their_last_four_digits() -> None:
    assert mask_account("6222020200001234567") == "****4567"
    assert mask_account("1234") == "****"
    assert mask_account("") == ""
    assert mask_account(None) == ""


def test_the_csv_has_full_account_numbers_only_for_finance() -> None:
    full = read_csv(payouts_csv([ROW], full_accounts=True))
    masked = read_csv(payouts_csv([ROW], full_accounts=False))
    assert list(full[0]) == list(CSV_COLUMNS)
    assert full[0]["account_number"] == "6222020200001234567"
    assert masked[0]["account_number"] == "****4567"
    assert "6222020200001234567" not in payouts_csv([ROW], full_accounts=False)
    assert full[0]["approved_amount"] == "50000.00"
    assert full[0]["bank_name"] == "中国工商银行"


def test_a_csv_cell_that_looks_like_a_formula_is_made_text() -> None:
    row = read_csv(payouts_csv([ROW], full_accounts=True))[0]
    assert row["account_name"].startswith("'=")


def test_the_payouts_filter_becomes_beijing_days_with_an_exclusive_end() -> None:
    chosen = PayoutFilter.parse("returned", "treasury-refund", "2026-11-01", "2026-11-26")
    assert chosen.api_params() == {
        "status": "returned",
        "fund": "treasury-refund",
        "from": "2026-11-01T00:00:00+08:00",
        "to": "2026-11-27T00:00:00+08:00",
    }
    assert chosen.query() == {
        "status": "returned",
        "fund": "treasury-refund",
        "from": "2026-11-01",
        "to": "2026-11-26",
    }


def test_unknown_statuses_and_bad_dates_are_dropped_not_sent() -> None:
    chosen = PayoutFilter.parse("drop table", "", "2026-13-01", "yesterday")
    assert chosen.api_params() == {}


def test_finance_actions_carry_the_forms_idempotency_key() -> None:
    act = action("account_correction", "p-1", {"reason": "x"}, "key-1")
    assert act.path == "/payouts/p-1/account-correction"
    assert act.idempotency_key == "key-1"
    assert set(ACTIONS) == {"account_correction", "top_up"}
    assert action("top_up", "f", {}, "").idempotency_key  # never without one


def _entry(chain: str, seq: int, at: str, action: str, **extra: object) -> dict[str, object]:
    return {
        "chain": chain,
        "seq": seq,
        "occurred_at": at,
        "actor": extra.pop("actor", "system"),
        "action": action,
        "body": {"data": {"payload": extra.pop("payload", {})}},
        "hash": "h",
        "prev_hash": "p",
        "status": extra.pop("status", "ok"),
        "problems": extra.pop("problems", []),
        "sealed": True,
    }


def test_the_merged_history_shows_what_each_service_verified_in_time_order() -> None:
    intake = {
        "entries": [
            _entry(
                "c1",
                1,
                "2026-11-26T01:00:00Z",
                "claim.submitted",
                actor="window-01",
                payload={"enterprise_name": "自贡", "requested_amount_fen": "72000000"},
            )
        ],
        "chains": [{"chain": "c1", "entries": 1, "seal": "sealed", "sealed_seq": 1}],
        "breaks": [],
    }
    review = {
        "entries": [
            _entry(
                "c1",
                1,
                "2026-11-26T02:00:00Z",
                "review.task_decided",
                actor="tax-reviewer-1",
                payload={"department": "tax", "decision": "approve"},
                status="state_differs",
                problems=["review_tasks task_id=t1 column decided_by is 'x'"],
            ),
            _entry(
                "c1",
                2,
                "2026-11-26T02:30:00Z",
                "review.decided",
                payload={"decision": "approved", "approved_amount_fen": "50000000"},
            ),
        ],
        "chains": [{"chain": "c1", "entries": 2, "seal": "not_sealed_yet", "sealed_seq": 1}],
        "breaks": [
            {"chain": "c1", "seq": 1, "kind": "state_differs", "detail": "decided_by"},
        ],
    }
    payout = {
        "entries": [
            _entry("c1", 1, "2026-11-26T03:00:00Z", "payout.requested"),
            _entry("c1", 3, "2026-11-26T03:10:00Z", "payout.confirmed"),
        ],
        "chains": [{"chain": "c1", "entries": 2, "seal": "bad_seal", "sealed_seq": 3}],
        "breaks": [{"chain": "c1", "seq": 2, "kind": "deleted", "detail": "entries 2 missing"}],
    }
    merged = merge_audits({"intake": intake, "review": review, "payout": payout})
    assert [(e.source, e.what, e.status) for e in merged.history] == [
        ("intake", "claim.submitted", "ok"),
        ("review", "review.task_decided", "state_differs"),
        ("review", "review.decided", "ok"),
        ("payout", "payout.requested", "ok"),
        ("payout", "", MISSING),  # the deleted entry, in its place in the chain
        ("payout", "payout.confirmed", "ok"),
    ]
    assert merged.history[4].seq == 2 and "missing" in merged.history[4].problems[0]
    assert merged.history[1].detail == "department=tax, decision=approve"
    assert merged.history[2].detail == "decision=approved, approved_amount=¥500,000.00"
    assert [b["service"] for b in merged.breaks] == ["review", "payout"]
    assert [s.seal for s in merged.seals] == ["sealed", "not_sealed_yet", "bad_seal"]
    assert merged.facts["enterprise_name"] == "自贡"
    assert merged.facts["requested_amount"] == Decimal("720000")
    assert merged.facts["approved_amount"] == Decimal("500000")


def test_a_claim_only_intake_has_seen_has_its_intake_history() -> None:
    intake = {
        "entries": [_entry("c1", 1, "2026-11-26T01:00:00Z", "claim.submitted")],
        "chains": [],
        "breaks": [],
    }
    merged = merge_audits({"intake": intake, "review": None, "payout": None})
    assert [e.source for e in merged.history] == ["intake"]
    assert merged.services == ["intake"] and not merged.breaks


def _signed_in_client(**who: object) -> TestClient:
    app = create_app(settings(secure_cookies=False))
    client = TestClient(app)
    store: SessionStore = app.state.sessions
    session = store.new("zh")
    session.caller = caller(**who)
    session.access_token = "t"
    session.token_expires_at = 4_000_000_000
    client.cookies.set("claimflow_console", store.cookie_value(session))
    return client


def test_only_finance_and_auditors_reach_the_finance_screens() -> None:
    reviewer = _signed_in_client()
    for path in ("/finance/funds", "/finance/payouts", "/finance/payouts.csv", "/audit"):
        assert reviewer.get(path).status_code == 403, path
    auditor = _signed_in_client(
        subject="auditor-zhou", roles=frozenset({"auditor"}), departments=frozenset()
    )
    r = auditor.get("/audit")
    assert r.status_code == 200
    assert "审计" in r.text
    # The auditor reads, but corrects nothing and imports nothing.
    csrf = _csrf(auditor)
    assert (
        auditor.post("/finance/reconciliation/statements", data={"csrf_token": csrf}).status_code
        == 403
    )


def test_the_dashboards_link_is_for_finance_roles() -> None:
    clerk = _signed_in_client(
        subject="finance-wang",
        roles=frozenset({"finance_clerk"}),
        departments=frozenset({"finance"}),
    )
    window = _signed_in_client(
        subject="window-01", roles=frozenset({"window_clerk"}), departments=frozenset()
    )
    assert 'data-testid="grafana"' in clerk.get("/status").text
    assert 'data-testid="grafana"' not in window.get("/status").text


def _csrf(client: TestClient) -> str:
    page = client.get("/status").text
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match
    return match.group(1)


def test_the_export_file_name_cannot_carry_a_header() -> None:
    chosen = PayoutFilter.parse("paid", 'x"\r\nSet-Cookie: a=b', "2026-11-01", "")
    name = export_name(chosen)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name), name
    assert name.startswith("payouts-paid-x") and name.endswith("-2026-11-01.csv")
