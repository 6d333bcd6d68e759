"""The enterprise withdrew the claim, or it lapsed for want of documents: review stops."""

from __future__ import annotations

import uuid

from services.review.adapters import cases
from services.review.domain.model import CaseStatus
from services.review.service_layer.stages import stage_changed, stop
from shared.unit_of_work import UnitOfWork


async def end_review(uow: UnitOfWork, claim_id: uuid.UUID, to: CaseStatus, reason: str) -> bool:
    """Withdrawn or lapsed: cancel the open tasks; no decision is taken afterwards.
    False when the case is unknown or already final."""
    case = await cases.lock(uow.conn, claim_id)
    if case is None or case.status.is_final:
        return False
    await stop(uow, case, to, None)
    await cases.set_decision_reason(uow.conn, claim_id, reason)
    stage_changed(uow, claim_id, case.status, to)
    return True
