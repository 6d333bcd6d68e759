"""One rules API for kinds and programs (issue 10 item 4): a YAML edit plus a test."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.programs import PROGRAMS_FILE, UnknownProgram, load_catalogue

DEFAULT_THRESHOLD = 1_000_000_00
NEW_PROGRAM = {
    "id": "green-transition-2027",
    "name": "绿色转型补贴",
    "fund": "green-transition-2027",
    "budget": "5000000.00",
    "per_enterprise_cap": "250000.00",
    "opens": "2027-01-01",
    "closes": "2027-12-31",
    "departments": ["finance", "ecology"],
    "documents_due_working_days": 5,
    "documents": [{"id": "application_form", "name": "申请表", "critical": True}],
}
"""A program added to the file (tests of item 4 in every service use it)."""


def edited(tmp_path: Path, change: object) -> Path:
    data = yaml.safe_load(PROGRAMS_FILE.read_text(encoding="utf-8"))
    change(data)  # type: ignore[operator]
    path = tmp_path / "programs.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_vat_refund_and_program_rules_come_from_one_call() -> None:
    catalogue = load_catalogue()
    vat = catalogue.rules_for("vat_refund")
    assert vat.fund == "treasury-refund" and vat.departments == ("tax", "treasury")
    assert vat.cap_fen is None and vat.program_id is None
    assert "refund_application" in vat.critical_documents
    relief = catalogue.rules_for("subsidy", "stable-growth-relief-2026")
    assert relief.departments == ("finance", "industry", "tax")
    assert relief.cap_fen == 2_000_000_00 and relief.budget_fen == 60_000_000_00
    assert relief.sign_off_threshold_fen(DEFAULT_THRESHOLD) == DEFAULT_THRESHOLD
    with pytest.raises(UnknownProgram):
        catalogue.rules_for("subsidy", "no-such-program")


def test_a_fourth_department_is_a_yaml_edit(tmp_path: Path) -> None:
    def add(data: dict) -> None:  # type: ignore[type-arg]
        data["programs"][0]["departments"].append("ecology")

    catalogue = load_catalogue(edited(tmp_path, add))
    rules = catalogue.rules_for("subsidy", "direct-financing-2026")
    assert rules.departments == ("finance", "industry", "ecology")
    assert "ecology" in catalogue.departments


def test_a_per_program_sign_off_threshold_is_a_yaml_edit(tmp_path: Path) -> None:
    def lower(data: dict) -> None:  # type: ignore[type-arg]
        data["programs"][1]["sign_off_threshold"] = "200000.00"

    catalogue = load_catalogue(edited(tmp_path, lower))
    assert (
        catalogue.rules_for("subsidy", "startup-loan-interest-2026").sign_off_threshold_fen(
            DEFAULT_THRESHOLD
        )
        == 200_000_00
    )
    # The other programs keep the global threshold.
    assert (
        catalogue.rules_for("subsidy", "direct-financing-2026").sign_off_threshold_fen(
            DEFAULT_THRESHOLD
        )
        == DEFAULT_THRESHOLD
    )


def test_a_new_program_is_a_yaml_edit(tmp_path: Path) -> None:
    def new(data: dict) -> None:  # type: ignore[type-arg]
        data["programs"].append(dict(NEW_PROGRAM))

    catalogue = load_catalogue(edited(tmp_path, new))
    rules = catalogue.rules_for("subsidy", "green-transition-2027")
    assert rules.fund == "green-transition-2027" and rules.cap_fen == 250_000_00
    assert "green-transition-2027" in catalogue.funds
    assert rules.critical_documents == {"application_form"}
