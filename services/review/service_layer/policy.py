"""What review needs to decide: thresholds, time limits, reference data.

Built once by the composition root (``bootstrap``) from the settings; the per-kind and
per-program rules (departments, fund, cap, checklist, sign-off threshold) come from
``Catalogue.rules_for``, never from a switch on the claim kind here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from services.review.adapters.watchlists import Watchlists, load_watchlists
from services.review.config import ReviewSettings
from services.review.domain.model import SIGN_OFF, DeadlinePlan, plan_deadline
from shared.money import yuan_to_fen
from shared.programs import Catalogue, ClaimRules, load_catalogue


@dataclass(frozen=True)
class ReviewPolicy:
    sign_off_threshold_fen: int = 1_000_000_00
    """The global threshold; a program may set its own (``sign_off_threshold``)."""
    task_working_days: int = 3
    department_review_working_days: int = 5
    sign_off_working_days: int = 2
    warn_working_days_before: int = 1
    blacklist_lookback_months: int = 36
    catalogue: Catalogue = field(default_factory=load_catalogue)
    watchlists: Watchlists = field(default_factory=load_watchlists)

    @classmethod
    def from_settings(
        cls, settings: ReviewSettings, catalogue: Catalogue | None = None
    ) -> ReviewPolicy:
        return cls(
            sign_off_threshold_fen=yuan_to_fen(settings.sign_off_threshold_yuan),
            task_working_days=settings.task_working_days,
            department_review_working_days=settings.department_review_working_days,
            sign_off_working_days=settings.sign_off_working_days,
            warn_working_days_before=settings.warn_working_days_before,
            blacklist_lookback_months=settings.blacklist_lookback_months,
            catalogue=catalogue or load_catalogue(),
            watchlists=load_watchlists(settings.watchlists_file),
        )

    def rules_for(self, kind: str, program_id: str | None) -> ClaimRules:
        return self.catalogue.rules_for(kind, program_id)

    def sign_off_threshold_for(self, kind: str, program_id: str | None) -> int:
        """Above this approved amount (fen) a claim of this kind/program is signed off."""
        return self.rules_for(kind, program_id).sign_off_threshold_fen(self.sign_off_threshold_fen)

    @property
    def departments(self) -> set[str]:
        """Every department with tasks, and the approvers' pseudo-department."""
        return self.catalogue.departments | {SIGN_OFF}

    def plan(self, start: datetime, working_days: int) -> DeadlinePlan:
        return plan_deadline(start, working_days, self.warn_working_days_before)

    def working_days(self, scope: str, stage: str) -> int:
        """The time limit of a stage's or a task's clock."""
        if stage == SIGN_OFF:
            return self.sign_off_working_days
        return self.task_working_days if scope == "task" else self.department_review_working_days
