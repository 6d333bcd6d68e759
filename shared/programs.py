"""Claim kinds and subsidy programs as data (shared/reference/programs.yaml).

Every service reads the same reference file for what it needs from it (intake: the
documents and windows; review: the departments; payout: the funds and budgets). The file
is configuration, not state: balances live in payout's tables.
"""

from __future__ import annotations

import functools
from datetime import date
from decimal import Decimal
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from shared.money import yuan_to_fen

PROGRAMS_FILE = Path(__file__).parent / "reference" / "programs.yaml"


class DocumentRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    critical: bool


class ClaimKindRules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    fund: str
    departments: list[str] = Field(min_length=1)
    documents_due_working_days: int = Field(ge=1)
    documents: list[DocumentRule]

    @property
    def critical_documents(self) -> set[str]:
        return {d.id for d in self.documents if d.critical}

    @property
    def optional_documents(self) -> set[str]:
        return {d.id for d in self.documents if not d.critical}


class Program(ClaimKindRules):
    id: str
    budget: Decimal = Field(gt=0)
    per_enterprise_cap: Decimal = Field(gt=0)
    opens: date
    closes: date

    @property
    def budget_fen(self) -> int:
        return yuan_to_fen(self.budget)

    @property
    def cap_fen(self) -> int:
        return yuan_to_fen(self.per_enterprise_cap)

    def is_open(self, day: date) -> bool:
        return self.opens <= day <= self.closes


class Catalogue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vat_refund: ClaimKindRules
    programs: list[Program]

    def program(self, program_id: str) -> Program | None:
        return next((p for p in self.programs if p.id == program_id), None)


@functools.cache
def load_catalogue(path: Path = PROGRAMS_FILE) -> Catalogue:
    return Catalogue.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
