"""The lapse loop's use case: claims whose documents deadline passed lapse, once each."""

from __future__ import annotations

import functools
import logging
import uuid
from datetime import datetime

from services.intake.adapters.repository import ClaimRepository
from services.intake.domain.model import FINAL, LAPSABLE, ClaimStatus
from services.intake.metrics import CLAIMS_OUTCOME, DOCUMENTS_PENDING, program_label
from services.intake.service_layer.tracker import publish
from shared.contracts import ClaimLapsedV1
from shared.db import DbConnection
from shared.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)


async def lapse_overdue(uow: UnitOfWork, *, as_of: datetime, limit: int = 100) -> list[uuid.UUID]:
    """Lapse every live claim whose documents deadline passed before ``as_of`` (the
    loop's clock, which tests may run ahead), with a claim.lapsed event at the real
    time. Returns the lapsed claims."""
    rows = await ClaimRepository(uow.conn).lapse_overdue(
        as_of=as_of, at=uow.now, lapsable=[s.value for s in LAPSABLE], limit=limit
    )
    for r in rows:
        lapsed = ClaimLapsedV1(
            missing_documents=list(r["pending_documents"]), due_by=r["documents_due_by"]
        )
        await publish(uow, lapsed, claim_id=r["claim_id"])
        uow.after_commit(functools.partial(_lapsed, r["claim_id"], r["kind"], r["program_id"]))
    return [r["claim_id"] for r in rows]


def _lapsed(claim_id: uuid.UUID, kind: str, program_id: str | None) -> None:
    CLAIMS_OUTCOME.labels(kind, program_label(program_id), "lapsed").inc()
    log.info("claim %s lapsed: its documents were not supplied in time", claim_id)


async def refresh_documents_pending(conn: DbConnection) -> None:
    """The documents-pending gauge, from the table (one intake instance exports it)."""
    live = [s.value for s in ClaimStatus if s not in FINAL]
    counts = await ClaimRepository(conn).documents_pending_by_kind(live)
    for kind in ("vat_refund", "subsidy"):
        DOCUMENTS_PENDING.labels(kind).set(counts.get(kind, 0))
