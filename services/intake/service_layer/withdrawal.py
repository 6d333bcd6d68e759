"""The enterprise withdraws its claim at the window, before payout starts."""

from __future__ import annotations

from typing import Any

from services.intake.adapters.repository import ClaimRepository
from services.intake.domain.commands import WithdrawClaim
from services.intake.domain.model import WITHDRAWABLE, ClaimStatus
from services.intake.service_layer.policy import IntakePolicy
from services.intake.service_layer.refusals import closed, no_claim
from services.intake.service_layer.tracker import publish, settle
from shared.contracts import ClaimWithdrawnV1
from shared.unit_of_work import UnitOfWork


async def withdraw_claim(
    uow: UnitOfWork, cmd: WithdrawClaim, policy: IntakePolicy
) -> dict[str, Any]:
    row = await ClaimRepository(uow.conn).get(cmd.claim_id, for_update=True)
    if row is None:
        raise no_claim(cmd.claim_id)
    if ClaimStatus(row["status"]) not in WITHDRAWABLE:
        raise closed(row["status"], "withdraw")
    withdrawn = ClaimWithdrawnV1(reason=cmd.reason, withdrawn_by=cmd.withdrawn_by)
    await publish(uow, withdrawn, claim_id=cmd.claim_id)
    reason = f"withdrawn at the enterprise's request: {cmd.reason}"
    # The outcome (withdrawn) is counted by settle, once the work has committed.
    await settle(uow, row, {"closed_reason": reason}, policy=policy)
    return {"claim_id": str(cmd.claim_id), "status": ClaimStatus.WITHDRAWN.value}
