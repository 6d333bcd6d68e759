"""A promised (容缺) or asked-for document is handed in at the window."""

from __future__ import annotations

from typing import Any

from services.intake.adapters.repository import ClaimRepository
from services.intake.domain.commands import SupplyDocument
from services.intake.domain.model import CLOSED, ClaimStatus
from services.intake.domain.rules import Violation
from services.intake.service_layer.policy import IntakePolicy
from services.intake.service_layer.refusals import Refusal, closed, invalid, no_claim
from services.intake.service_layer.tracker import publish, settle
from shared.contracts import ClaimDocumentsCompletedV1, ClaimDocumentSuppliedV1
from shared.unit_of_work import UnitOfWork

_NO_DEADLINE = {
    "documents_due_by": None,
    "documents_due_at": None,
    "documents_due_from": None,
    "documents_due_days": None,
}


async def supply_document(
    uow: UnitOfWork, cmd: SupplyDocument, policy: IntakePolicy
) -> dict[str, Any]:
    repo = ClaimRepository(uow.conn)
    row = await repo.get(cmd.claim_id, for_update=True)
    if row is None:
        raise no_claim(cmd.claim_id)
    if ClaimStatus(row["status"]) in CLOSED:
        raise closed(row["status"], "record a document")
    pending: list[str] = list(row["pending_documents"])
    if cmd.document_id not in pending:
        raise await _not_pending(repo, cmd, pending)
    still = [d for d in pending if d != cmd.document_id]
    await repo.mark_supplied(cmd.claim_id, cmd.document_id, recorded_by=cmd.recorded_by, at=uow.now)
    supplied = ClaimDocumentSuppliedV1(
        document=cmd.document_id, still_pending=still, recorded_by=cmd.recorded_by
    )
    await publish(uow, supplied, claim_id=cmd.claim_id)
    if not still:
        await publish(uow, ClaimDocumentsCompletedV1(completed_at=uow.now), claim_id=cmd.claim_id)
    fields = {"pending_documents": still} | ({} if still else _NO_DEADLINE)
    await settle(uow, row, fields, policy=policy)
    return {
        "claim_id": str(cmd.claim_id),
        "document_id": cmd.document_id,
        "pending_documents": still,
        "documents_completed": not still,
    }


async def _not_pending(repo: ClaimRepository, cmd: SupplyDocument, pending: list[str]) -> Refusal:
    if cmd.document_id in await repo.supplied_documents(cmd.claim_id):
        return Refusal(
            "document already supplied",
            [Violation("document_id", "already_supplied", f"{cmd.document_id!r} is in")],
        )
    return invalid(
        Violation(
            "document_id",
            "not_pending",
            f"{cmd.document_id!r} is not pending; pending: {', '.join(pending) or '-'}",
        )
    )
