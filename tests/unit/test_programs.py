from __future__ import annotations

from datetime import date

from shared.programs import load_catalogue


def test_sample_programs_load_with_exact_budgets() -> None:
    cat = load_catalogue()
    relief = cat.program("stable-growth-relief-2026")
    assert relief is not None
    assert relief.budget_fen == 60_000_000_00
    assert relief.is_open(date(2026, 11, 26)) and not relief.is_open(date(2026, 2, 1))
    assert "application_form" in relief.critical_documents
    assert cat.vat_refund.departments == ["tax", "treasury"]
    assert {p.id for p in cat.programs} == {
        "direct-financing-2026",
        "startup-loan-interest-2026",
        "stable-growth-relief-2026",
    }
