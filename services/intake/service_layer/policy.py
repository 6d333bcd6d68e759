"""What intake's use cases need from the settings and the reference data."""

from __future__ import annotations

from dataclasses import dataclass

from services.intake.config import IntakeSettings
from shared.programs import Catalogue, ClaimRules, load_catalogue


@dataclass(frozen=True)
class IntakePolicy:
    policy_year: int
    review_due_working_days: int
    documents_due_working_days: int | None
    catalogue: Catalogue
    finance_due_working_days: int = 5
    """Working days finance has to correct the account of a failed or returned payment
    (or close the claim) once the tracker shows it waiting for them."""

    def due_days(self, rules: ClaimRules) -> int:
        return self.documents_due_working_days or rules.documents_due_working_days

    @classmethod
    def from_settings(
        cls, settings: IntakeSettings, catalogue: Catalogue | None = None
    ) -> IntakePolicy:
        return cls(
            policy_year=settings.refund_policy_year,
            review_due_working_days=settings.review_due_working_days,
            documents_due_working_days=settings.documents_due_working_days,
            catalogue=catalogue or load_catalogue(),
            finance_due_working_days=settings.finance_due_working_days,
        )


def default_policy() -> IntakePolicy:
    return IntakePolicy(
        policy_year=2022,
        review_due_working_days=5,
        documents_due_working_days=None,
        catalogue=load_catalogue(),
    )
