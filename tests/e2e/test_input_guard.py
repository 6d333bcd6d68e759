"""Bad input never reaches PostgreSQL or a crash: every case below answered 500 (or held a
service for seconds) before, and must now get a 4xx naming the field and the rule, with
nothing stored. Against the three real service processes."""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.devstack.demo_claims import make_claim
from shared.devstack.stack import StackConfig
from tests.conftest import ServiceProcesses
from tests.tokens import finance_clerk, finance_supervisor, reviewer, window

pytestmark = pytest.mark.e2e

WINDOW = window("window-guard")
FINANCE = finance_clerk("finance-guard")
SUPERVISOR = finance_supervisor("finance-guard-supervisor")
REVIEWER = reviewer("tax", "tax-guard")
STATEMENT_HEADER = "value_date,bank_reference,end_to_end_id,amount,account_number,direction"


def claim(**overrides: Any) -> dict[str, Any]:
    body = make_claim(random.Random(7), "2026-01")
    body.update(overrides)
    return body


async def claims_total(client: httpx.AsyncClient, cfg: StackConfig) -> int:
    r = await client.get(f"{cfg.url('intake')}/claims", params={"limit": 1})
    assert r.status_code == 200, r.text
    total: int = r.json()["total"]
    return total


def assert_refused(r: httpx.Response, field: str, rule: str, status: int = 422) -> None:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert isinstance(body["detail"], str)
    pairs = {(e["field"], e["rule"]) for e in body["errors"]}
    assert (field, rule) in pairs, body


@pytest.mark.parametrize(
    ("service", "path", "field"),
    [
        ("intake", "/claims?program_id=%00", "query.program_id"),
        ("intake", "/enterprises/%00/claims", "path.uscc"),
        ("review", "/worklist?department=%00", "query.department"),
        ("payout", "/payouts?fund=%00", "query.fund"),
        ("payout", "/funds/%00/queue", "path.fund_id"),
        ("payout", "/funds/a%00b/queue", "path.fund_id"),
    ],
)
async def test_nul_in_path_or_query_is_refused(
    client: httpx.AsyncClient, services: StackConfig, service: str, path: str, field: str
) -> None:
    r = await client.get(services.url(service) + path)
    assert_refused(r, field, "no_nul")


@pytest.mark.parametrize(("service", "path"), [("intake", "/claims"), ("payout", "/payouts")])
async def test_offset_beyond_bigint_is_refused(
    client: httpx.AsyncClient, services: StackConfig, service: str, path: str
) -> None:
    r = await client.get(services.url(service) + path, params={"offset": str(2**63)})
    assert_refused(r, "query.offset", "less_than_equal")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"enterprise_name": "自贡\u0000科技"}, "enterprise_name"),
        ({"tax_period": "2026-01\u0000"}, "tax_period"),
        (
            {
                "bank_account": {
                    "bank_name": "中国工商银行\u0000",
                    "account_name": "x",
                    "account_number": "6222020000000000001",
                }
            },
            "bank_account.bank_name",
        ),
        ({"documents_supplied": ["vat_refund_form\u0000"]}, "documents_supplied.0"),
    ],
)
async def test_nul_in_a_claim_field_is_refused_and_nothing_stored(
    client: httpx.AsyncClient, services: StackConfig, overrides: dict[str, Any], field: str
) -> None:
    before = await claims_total(client, services)
    r = await client.post(
        f"{services.url('intake')}/claims", json=claim(**overrides), headers=WINDOW
    )
    assert_refused(r, field, "no_nul")
    assert await claims_total(client, services) == before


async def test_nul_in_other_post_text_fields_is_refused(
    client: httpx.AsyncClient, services: StackConfig
) -> None:
    task = "00000000-0000-4000-8000-000000000001"
    r = await client.post(
        f"{services.url('review')}/tasks/{task}/decision",
        json={"decision": "reject", "comment": "no\u0000"},
        headers=WINDOW,
    )
    assert_refused(r, "comment", "no_nul")
    r = await client.post(
        f"{services.url('payout')}/funds/treasury-refund/top-ups",
        json={"amount": "1.00", "reason": "\u0000"},
        headers=SUPERVISOR,
    )
    assert_refused(r, "reason", "no_nul")
    r = await client.post(
        f"{services.url('intake')}/claims/{task}/withdraw",
        json={"reason": "a\u0000"},
        headers=WINDOW,
    )
    assert_refused(r, "reason", "no_nul")


async def test_lone_surrogate_is_refused_and_nothing_stored(
    client: httpx.AsyncClient, services: StackConfig
) -> None:
    before = await claims_total(client, services)
    raw = json.dumps(claim(enterprise_name="NAME")).replace("NAME", "\\ud800")
    r = await client.post(
        f"{services.url('intake')}/claims",
        content=raw.encode(),
        headers={**WINDOW, "Content-Type": "application/json"},
    )
    assert_refused(r, "enterprise_name", "no_lone_surrogate")
    # In a key, too (the unknown key would be echoed in the error body).
    raw = json.dumps(claim(KEY="x")).replace("KEY", "\\udfff")
    r = await client.post(
        f"{services.url('intake')}/claims",
        content=raw.encode(),
        headers={**WINDOW, "Content-Type": "application/json"},
    )
    assert_refused(r, "\\udfff", "no_lone_surrogate")
    assert await claims_total(client, services) == before


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("intake", "/claims"),
        ("review", "/tasks/00000000-0000-4000-8000-000000000001/decision"),
        ("payout", "/funds/treasury-refund/top-ups"),
    ],
)
async def test_json_nested_too_deep_is_refused(
    client: httpx.AsyncClient, services: StackConfig, service: str, path: str
) -> None:
    r = await client.post(
        services.url(service) + path,
        content=b"[" * 1000 + b"]" * 1000,
        headers={**FINANCE, "Content-Type": "application/json"},
    )
    assert_refused(r, "body", "json_depth")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


async def test_a_huge_body_is_refused_at_once_without_holding_memory(
    client: httpx.AsyncClient, service_processes: ServiceProcesses
) -> None:
    """Was: 19 s, a 342 MB error body, intake at 2.1 GB while other requests waited."""
    services = service_processes.cfg
    before = await claims_total(client, services)
    peak_before = peak_rss_mb(service_processes.pids["intake"])
    body = claim(documents_supplied=[f"doc_{i}" for i in range(2_000_000)])
    payload = json.dumps(body).encode()
    assert len(payload) > 10_000_000
    started = time.monotonic()
    r = await client.post(
        f"{services.url('intake')}/claims",
        content=payload,
        headers={**WINDOW, "Content-Type": "application/json"},
    )
    elapsed = time.monotonic() - started
    assert_refused(r, "body", "max_body_bytes", status=413)
    assert len(r.content) < 2_000
    # Well under a second on an idle machine; loose, for a CI machine under load.
    assert elapsed < 20, elapsed
    assert peak_rss_mb(service_processes.pids["intake"]) - peak_before < 50
    assert await claims_total(client, services) == before


async def test_a_chunked_body_over_the_limit_is_refused(
    client: httpx.AsyncClient, services: StackConfig
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 100_000

    r = await client.post(
        f"{services.url('payout')}/reconciliation/statements",
        content=chunks(),
        headers={**FINANCE, "Content-Type": "text/csv"},
    )
    assert_refused(r, "body", "max_body_bytes", status=413)


async def test_echoed_errors_are_capped(client: httpx.AsyncClient, services: StackConfig) -> None:
    body = claim(documents_supplied=[f"BAD ID {i}" for i in range(5_000)])
    r = await client.post(f"{services.url('intake')}/claims", json=body, headers=WINDOW)
    assert r.status_code == 422, r.text[:300]
    assert len(r.json()["errors"]) <= 21
    assert len(r.content) < 10_000
    r = await client.post(
        f"{services.url('review')}/tasks/00000000-0000-4000-8000-000000000001/decision",
        json={"decision": "return", "documents": [""] * 20, "comment": 5, "x": 1, "y": 2},
        headers=REVIEWER,
    )
    assert r.status_code == 422
    assert len(r.json()["errors"]) <= 21


@pytest.mark.parametrize("amount", ["1_000", "١٢٣", " 5 ", "5 ", "+5", "1e3", "٥.00"])
async def test_amounts_are_plain_ascii_decimals(
    client: httpx.AsyncClient, services: StackConfig, amount: str
) -> None:
    before = await claims_total(client, services)
    r = await client.post(
        f"{services.url('intake')}/claims", json=claim(requested_amount=amount), headers=WINDOW
    )
    assert_refused(r, "requested_amount", "plain_decimal")
    r = await client.post(
        f"{services.url('payout')}/funds/treasury-refund/top-ups",
        json={"amount": amount, "reason": "budget"},
        headers=SUPERVISOR,
    )
    assert_refused(r, "amount", "plain_decimal")
    assert await claims_total(client, services) == before


@pytest.mark.parametrize("name", [" ", "\u200b\u200b", "\t\n", "\u2060\ufeff", "\u0001\u0002"])
async def test_invisible_names_are_refused(
    client: httpx.AsyncClient, services: StackConfig, name: str
) -> None:
    before = await claims_total(client, services)
    r = await client.post(
        f"{services.url('intake')}/claims", json=claim(enterprise_name=name), headers=WINDOW
    )
    assert_refused(r, "enterprise_name", "visible_text")
    account = {"bank_name": "中国工商银行", "account_name": name, "account_number": "62220200001"}
    r = await client.post(
        f"{services.url('intake')}/claims", json=claim(bank_account=account), headers=WINDOW
    )
    assert_refused(r, "bank_account.account_name", "visible_text")
    assert await claims_total(client, services) == before


@pytest.mark.parametrize(
    ("lines", "field"),
    [
        (["2026-01-05,R1,V1,10.00,6222,debit\r2026-01-05,R2,V2,1.00,6222,debit"], "line 2"),
        (["2026-01-05,R3,V3,100000000000000000000,6222,debit"], "line 2.amount"),
        (["2026-01-05,R4,V4,1_000,6222,debit"], "line 2.amount"),
        (["2026-01-05,R5,V5,٥,6222,debit"], "line 2.amount"),
    ],
)
async def test_bad_statement_csv_is_refused(
    client: httpx.AsyncClient, services: StackConfig, lines: list[str], field: str
) -> None:
    text = STATEMENT_HEADER + "\n" + "\n".join(lines) + "\n"
    r = await client.post(
        f"{services.url('payout')}/reconciliation/statements",
        content=text.encode(),
        headers={**FINANCE, "Content-Type": "text/csv"},
    )
    assert r.status_code == 422, r.text
    assert any(e["field"].startswith(field) for e in r.json()["errors"]), r.json()


@pytest.mark.parametrize(
    ("name", "value"),
    [("from", "9999-12-31T23:59:59-23:59"), ("to", "0001-01-01T00:00:00+23:59")],
)
async def test_instants_beyond_the_calendar_in_utc_are_refused(
    client: httpx.AsyncClient, services: StackConfig, name: str, value: str
) -> None:
    r = await client.get(f"{services.url('payout')}/payouts", params={name: value})
    assert_refused(r, f"query.{name}", "datetime_range")
