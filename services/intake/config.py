from __future__ import annotations

from pydantic import Field

from shared.config import ServiceSettings


class IntakeSettings(ServiceSettings):
    http_port: int = 8101
    refund_policy_year: int = Field(default=2022)
    """Which VAT credit refund rule computes the eligible amount (2019 or 2022)."""

    documents_due_working_days: int | None = Field(default=None, ge=1)
    """Working days to supply promised documents (容缺); None: each kind's / program's
    ``documents_due_working_days`` in shared/reference/programs.yaml."""

    review_due_working_days: int = Field(default=5, ge=1)
    """The time limit (限时办结) the window quotes for the review step."""

    finance_due_working_days: int = Field(default=5, ge=1)
    """Working days finance has to correct the account of a permanently failed or
    returned payment, or close the claim (the tracker shows the deadline)."""

    lapse_check_interval_s: float = Field(default=5.0, gt=0)
    """How often the lapse loop looks for claims past their documents deadline."""

    clock_offset_s: float = Field(default=0.0, ge=0)
    """TEST ONLY (CLAIMFLOW_CLOCK_OFFSET_S): the lapse loop compares deadlines against
    now + this offset, to make deadlines pass without waiting days. Always 0 in
    production; the events it emits still carry the real time."""
