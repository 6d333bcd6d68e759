from __future__ import annotations

from pydantic import Field

from shared.config import ServiceSettings


class ReviewSettings(ServiceSettings):
    http_port: int = 8102
    departments_by_kind: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "vat_refund": ["tax", "treasury"],
            "subsidy": ["finance", "industry"],
        }
    )
    """Departments that must each approve a claim of the kind, in parallel (并联审批)."""
    task_days: int = Field(default=5, ge=1)
