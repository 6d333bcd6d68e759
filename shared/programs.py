"""Claim kinds and subsidy programs as data (shared/reference/programs.yaml).

Every service reads the same reference file for what it needs from it (intake: the
documents and windows; review: the departments; payout: the funds and budgets). The file
is configuration, not state: balances live in payout's tables.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
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


def critical_ids(documents: Iterable[DocumentRule]) -> set[str]:
    """The documents that cannot be missing at the window (no 容缺受理)."""
    return {d.id for d in documents if d.critical}


class ClaimKindRules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    fund: str
    departments: list[str] = Field(min_length=1)
    documents_due_working_days: int = Field(ge=1)
    documents: list[DocumentRule]
    # Amount (yuan) from which a leader must sign off; absent: the service's global
    # setting (CLAIMFLOW_REVIEW_SIGN_OFF_THRESHOLD_YUAN) applies.
    sign_off_threshold: Decimal | None = Field(default=None, gt=0)

    @property
    def critical_documents(self) -> set[str]:
        return critical_ids(self.documents)

    @property
    def optional_documents(self) -> set[str]:
        return {d.id for d in self.documents} - critical_ids(self.documents)


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


class UnknownProgram(LookupError):
    """A claim names a kind or program the catalogue does not have."""


VAT_REFUND = "vat_refund"


@dataclass(frozen=True)
class ClaimRules:
    """Everything the services need to know about one kind of claim (one program).

    The one place that knows that a VAT refund has no program and a subsidy claim is
    ruled by its program: callers ask ``Catalogue.rules_for`` instead of switching on
    the kind themselves.
    """

    kind: str
    program_id: str | None
    name: str
    fund: str
    departments: tuple[str, ...]
    documents: tuple[DocumentRule, ...]
    documents_due_working_days: int
    cap_fen: int | None
    """Per-enterprise cap of a program; None for VAT refunds (the treasury pays what is due)."""
    budget_fen: int | None
    program: Program | None
    sign_off_threshold_fen_override: int | None

    @property
    def critical_documents(self) -> set[str]:
        return critical_ids(self.documents)

    @property
    def optional_documents(self) -> set[str]:
        return set(self.document_names) - critical_ids(self.documents)

    @property
    def document_names(self) -> dict[str, str]:
        return {d.id: d.name for d in self.documents}

    def sign_off_threshold_fen(self, default_fen: int) -> int:
        """The program's own sign-off threshold, or the global one."""
        if self.sign_off_threshold_fen_override is not None:
            return self.sign_off_threshold_fen_override
        return default_fen

    def is_open(self, day: date) -> bool:
        return self.program is None or self.program.is_open(day)


def _rules(kind: str, source: ClaimKindRules, program: Program | None) -> ClaimRules:
    threshold = source.sign_off_threshold
    return ClaimRules(
        kind=kind,
        program_id=program.id if program else None,
        name=source.name,
        fund=source.fund,
        departments=tuple(source.departments),
        documents=tuple(source.documents),
        documents_due_working_days=source.documents_due_working_days,
        cap_fen=program.cap_fen if program else None,
        budget_fen=program.budget_fen if program else None,
        program=program,
        sign_off_threshold_fen_override=None if threshold is None else yuan_to_fen(threshold),
    )


class Catalogue(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vat_refund: ClaimKindRules
    programs: list[Program]

    def program(self, program_id: str) -> Program | None:
        return next((p for p in self.programs if p.id == program_id), None)

    def rules_for(self, kind: str, program_id: str | None = None) -> ClaimRules:
        """The rules of a claim of ``kind`` (and ``program_id`` for a subsidy claim).

        Raises ``UnknownProgram`` for a subsidy claim whose program is not in the file.
        """
        if kind == VAT_REFUND:
            return _rules(kind, self.vat_refund, None)
        program = self.program(program_id or "")
        if program is None:
            raise UnknownProgram(f"unknown program {program_id!r} for a {kind} claim")
        return _rules(kind, program, program)

    def all_rules(self) -> list[ClaimRules]:
        """The VAT refund's rules and every program's, in file order."""
        return [_rules(VAT_REFUND, self.vat_refund, None)] + [
            _rules("subsidy", p, p) for p in self.programs
        ]

    @property
    def departments(self) -> set[str]:
        """Every department that reviews some kind of claim."""
        return {d for rules in self.all_rules() for d in rules.departments}

    @property
    def funds(self) -> set[str]:
        return {rules.fund for rules in self.all_rules()}


@functools.cache
def load_catalogue(path: Path = PROGRAMS_FILE) -> Catalogue:
    return Catalogue.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
