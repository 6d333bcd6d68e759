from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from pydantic import Field

from services.review.adapters.watchlists import DEFAULT_FILE
from shared.config import ServiceSettings


class ReviewSettings(ServiceSettings):
    """Review's settings (CLAIMFLOW_*). The departments per claim kind / program are in
    shared/reference/programs.yaml, not here."""

    http_port: int = 8102
    sign_off_threshold_yuan: Decimal = Field(default=Decimal("1000000.00"), ge=0)
    """Approved amounts above this need an approver's sign-off (联批)."""
    task_working_days: int = Field(default=3, ge=1)
    """Time limit of each department task (stage 2)."""
    department_review_working_days: int = Field(default=5, ge=1)
    """Time limit of stage 2 as a whole."""
    sign_off_working_days: int = Field(default=2, ge=1)
    warn_working_days_before: int = Field(default=1, ge=0)
    """Warning this many working days before a deadline (half-way for shorter limits)."""
    deadline_scan_interval_s: float = Field(default=5.0, gt=0)
    blacklist_lookback_months: int = Field(default=36, ge=1)
    watchlists_file: Path = DEFAULT_FILE
