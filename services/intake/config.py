from __future__ import annotations

from pydantic import Field

from shared.config import ServiceSettings


class IntakeSettings(ServiceSettings):
    http_port: int = 8101
    refund_policy_year: int = Field(default=2022)
    """Which VAT credit refund rule computes the eligible amount (2019 or 2022)."""
