"""SQL of review_cases: the claim under review, its stage and its decision."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.review.adapters.rows import build
from services.review.domain.cross_checks import OtherClaim
from services.review.domain.model import Case, CaseStatus, Outcome
from shared.contracts import ClaimSubmittedV1, CrossCheckFinding
from shared.db import DbConnection


def _case(row: asyncpg.Record) -> Case:
    return build(
        Case,
        row,
        status=CaseStatus(row["status"]),
        payee_json=row["payee"],
        pending_documents=tuple(row["pending_documents"]),
        returned_documents=tuple(row["returned_documents"]),
    )


async def insert(
    conn: DbConnection, claim_id: uuid.UUID, claim: ClaimSubmittedV1, *, fund: str, now: datetime
) -> bool:
    """A new case in stage ``cross_check``; False when the claim is already known."""
    inserted = await conn.fetchval(
        """INSERT INTO review_cases (claim_id, kind, program_id, fund, uscc, enterprise_name,
               tax_period, requested_amount_fen, eligible_amount_fen, payee, claim_received_at,
               registered_by, status, pending_documents, documents_due_by, stage_started_at,
               created_at)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10::jsonb,$11,$12,'cross_check',$13,$14,$15,$15)
           ON CONFLICT (claim_id) DO NOTHING RETURNING true""",
        claim_id,
        claim.claim_kind,
        claim.program_id,
        fund,
        claim.uscc,
        claim.enterprise_name,
        claim.tax_period,
        claim.requested_amount_fen,
        claim.eligible_amount_fen,
        claim.payee.model_dump_json(),
        claim.received_at,
        claim.registered_by,
        list(claim.pending_documents),
        claim.documents_due_by,
        now,
    )
    return bool(inserted)


async def get(conn: DbConnection, claim_id: uuid.UUID) -> Case | None:
    row = await conn.fetchrow("SELECT * FROM review_cases WHERE claim_id = $1", claim_id)
    return _case(row) if row is not None else None


async def lock(conn: DbConnection, claim_id: uuid.UUID) -> Case | None:
    """The case, locked: concurrent decisions and events on one claim are serialised here."""
    row = await conn.fetchrow("SELECT * FROM review_cases WHERE claim_id = $1 FOR UPDATE", claim_id)
    return _case(row) if row is not None else None


async def others_in_period(
    conn: DbConnection, uscc: str, tax_period: str, claim_id: uuid.UUID
) -> list[OtherClaim]:
    """The enterprise's other claims for the same period (the duplicate check)."""
    rows = await conn.fetch(
        """SELECT claim_id, kind, program_id, status FROM review_cases
           WHERE uscc = $1 AND tax_period = $2 AND claim_id <> $3""",
        uscc,
        tax_period,
        claim_id,
    )
    return [OtherClaim(str(r["claim_id"]), r["kind"], r["program_id"], r["status"]) for r in rows]


async def used_in_program(
    conn: DbConnection, uscc: str, program_id: str, claim_id: uuid.UUID
) -> int:
    """What the enterprise's other live claims take of the program's cap: approved
    amounts, and the recommended amounts of claims still under review."""
    used = await conn.fetchval(
        """SELECT coalesce(sum(CASE WHEN status = 'approved' THEN approved_amount_fen
                                    ELSE recommended_amount_fen END), 0)
           FROM review_cases
           WHERE uscc = $1 AND program_id = $2 AND claim_id <> $3
             AND status IN ('approved', 'department_review', 'returned', 'sign_off')""",
        uscc,
        program_id,
        claim_id,
    )
    return int(used)


async def record_cross_check(
    conn: DbConnection,
    claim_id: uuid.UUID,
    result: str,
    findings: Sequence[CrossCheckFinding],
    recommended_fen: int,
) -> None:
    await conn.execute(
        """UPDATE review_cases SET cross_check_result = $2, findings = $3::jsonb,
               recommended_amount_fen = $4 WHERE claim_id = $1""",
        claim_id,
        result,
        json.dumps([f.model_dump() for f in findings], ensure_ascii=False),
        recommended_fen,
    )


async def set_stage(
    conn: DbConnection,
    claim_id: uuid.UUID,
    to: CaseStatus,
    now: datetime,
    decision: Outcome | None = None,
) -> None:
    """Move the case to stage ``to``, with its decision when final."""
    await conn.execute(
        """UPDATE review_cases SET status = $2, stage_started_at = $3,
               approved_amount_fen = coalesce($4, approved_amount_fen),
               decision_reason = coalesce($5, decision_reason), decided_at = $6
           WHERE claim_id = $1""",
        claim_id,
        to.value,
        now,
        decision.approved_amount_fen if decision else None,
        decision.reason if decision else None,
        now if decision else None,
    )


async def set_decision_reason(conn: DbConnection, claim_id: uuid.UUID, reason: str) -> None:
    await conn.execute(
        "UPDATE review_cases SET decision_reason = $2 WHERE claim_id = $1", claim_id, reason
    )


async def set_recommended(conn: DbConnection, claim_id: uuid.UUID, amount_fen: int) -> None:
    await conn.execute(
        "UPDATE review_cases SET recommended_amount_fen = $2 WHERE claim_id = $1",
        claim_id,
        amount_fen,
    )


async def set_returned_documents(
    conn: DbConnection, claim_id: uuid.UUID, documents: Sequence[str]
) -> None:
    await conn.execute(
        "UPDATE review_cases SET returned_documents = $2 WHERE claim_id = $1",
        claim_id,
        list(documents),
    )


async def set_documents(
    conn: DbConnection, claim_id: uuid.UUID, pending: Sequence[str], returned: Sequence[str]
) -> None:
    """The 容缺 documents intake still waits for, and what a return still waits for."""
    await conn.execute(
        """UPDATE review_cases SET pending_documents = $2, returned_documents = $3
           WHERE claim_id = $1""",
        claim_id,
        list(pending),
        list(returned),
    )
