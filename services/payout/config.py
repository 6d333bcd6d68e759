from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from shared.config import ServiceSettings


class PayoutSettings(ServiceSettings):
    http_port: int = 8103
    dispatch_interval_s: float = Field(default=0.2, gt=0)

    treasury_refund_cap_yuan: Decimal | None = Field(default=None, gt=0)
    """Optional cap of the treasury refund fund; None: refunds are tracked, not capped.
    Applied only when the fund is first created (later changes: top-ups)."""

    top_up_max_yuan: Decimal = Field(default=Decimal(10_000_000), gt=0, le=10_000_000_000)
    """Most one top-up request may add (422 ``max_top_up`` above it). The database's own
    ceiling (migration 0004) is 10,000,000,000 yuan."""
    top_up_supervisor_from_yuan: Decimal = Field(default=Decimal(1_000_000), gt=0)
    """A top-up above this needs an approver holding ``funds.top_up`` (a supervisor)."""

    # The simulated treasury/bank (CLAIMFLOW_GATEWAY_*).
    gateway_database_url: str | None = None
    """The simulated bank's own role (schema bank_sim, docs/database-roles.md); None: the
    service's database_url (a single-role database)."""
    gateway_min_delay_s: float = Field(default=0.05, ge=0)
    """Each hop (accepted, sent, arrived) comes after a delay drawn in [min, max]."""
    gateway_max_delay_s: float = Field(default=0.3, ge=0)
    gateway_transient_failure_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of submissions the treasury rejects for now (retried with backoff)."""
    gateway_permanent_failure_rate: float = Field(default=0.0, ge=0, le=1)
    """Share failing for good (account closed): the commitment is released."""
    gateway_return_rate: float = Field(default=0.0, ge=0, le=1)
    """Share returned by the bank (account name does not match)."""
    gateway_lost_answer_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of submissions the bank takes but whose answer is lost (a timeout): the
    payout goes unknown and is resolved by asking the bank."""
    gateway_seed: int | None = None
    """Seed for the simulator's draws, for reproducible runs."""
    gateway_magic_accounts: bool = True
    """Account numbers ending 0000001/2/3/4 force transient/permanent/return/lost answer
    (first issue, first attempt)."""

    retry_base_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    """Transient failures after this many attempts fail the payout for good."""

    payout_claim_lease_s: float = Field(default=60.0, gt=0)
    """A payout left ``issuing`` this long (its instance died while calling the bank) is
    resolved by asking the bank for the instruction's status."""
    payout_stuck_after_s: float = Field(default=900.0, gt=0)
    """Payouts issuing / unknown / issued for longer than this are counted as stuck
    (gauge claimflow_payouts_stuck, alert PayoutsStuck)."""
