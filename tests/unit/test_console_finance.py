"""The finance and audit screens' own logic without a stack: account masking, the CSV
export, the payouts filter as payout's API takes it, the merged audit history, who may
reach which screen."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

from fastapi.testclient import TestClient

from services.console.app import create_app
from services.console.audit import VERIFICATION_PENDING, merge_history
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


def test_the_merged_history_is_ordered_by_time_and_never_claims_verification() -> None:
    claim = {
        "timeline": [
            {
                "event_id": "e1",
                "event_type": "claim.submitted",
                "producer": "intake",
                "occurred_at": "2026-11-26T01:00:00Z",
                "payload": {"registered_by": "window-01"},
            },
            {
                "event_id": "e2",
                "event_type": "payout.confirmed",
                "producer": "payout",
                "occurred_at": "2026-11-26T03:00:00Z",
                "payload": {},
            },
        ]
    }
    review = {
        "status": "approved",
        "decided_at": "2026-11-26T02:30:00+00:00",
        "decision_reason": None,
        "tasks": [
            {
                "task_id": "t1",
                "stage": "department",
                "department": "tax",
                "status": "approved",
                "created_at": "2026-11-26T01:10:00+00:00",
                "decided_at": "2026-11-26T02:00:00+00:00",
                "decided_by": "tax-reviewer-1",
                "decided_role": "reviewer",
                "comment": "ok",
            }
        ],
    }
    payouts = [
        {
            "payout_id": "p1",
            "hops": [
                {"issue_no": 1, "attempt": 1, "hop": "arrived", "at": "2026-11-26T02:59:00+00:00"}
            ],
        }
    ]
    history = merge_history(claim, review, payouts)
    assert [e.what for e in history] == [
        "claim.submitted",
        "task.created:department",
        "task.approved",
        "review.approved",
        "hop.arrived",
        "payout.confirmed",
    ]
    assert history[2].who == "tax-reviewer-1 (reviewer)"
    assert history[0].who == "window-01 (intake)"
    assert history[-1].who == "payout"
    assert all(e.verification == VERIFICATION_PENDING for e in history)
    assert history[0].at == datetime(2026, 11, 26, 1, tzinfo=UTC)


def test_a_claim_without_review_or_payout_has_its_intake_history() -> None:
    claim = {
        "timeline": [
            {
                "event_id": "e1",
                "event_type": "claim.submitted",
                "producer": "intake",
                "occurred_at": "2026-11-26T01:00:00Z",
                "payload": {},
            }
        ]
    }
    assert [e.source for e in merge_history(claim, None, [])] == ["intake"]


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
