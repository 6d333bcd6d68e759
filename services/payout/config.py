from __future__ import annotations

from pydantic import Field

from shared.config import ServiceSettings


class PayoutSettings(ServiceSettings):
    http_port: int = 8103
    dispatch_interval_s: float = Field(default=0.2, gt=0)
    gateway_min_delay_s: float = Field(default=0.1, ge=0)
    gateway_max_delay_s: float = Field(default=0.6, ge=0)
    gateway_failure_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of instructions the simulated bank fails permanently (closed account)."""
