"""Review (issue 9): a return names documents from the claim's checklist or an explicit
"other" document with a title, each one an id the window can record (items 4 and 8);
the approved amount is counted only after the decision committed (item 15)."""

from __future__ import annotations

import json
import re
import uuid

import asyncpg
import pytest

from services.intake.entrypoints.schemas import DocumentSupplied
from services.review import metrics
from services.review.domain.model import Decision
from services.review.service_layer import decisions
from services.review.service_layer.decisions import DecisionResult
from shared import unit_of_work
from shared.db import DbConnection
from shared.problems import Invalid
from tests.integration.test_review_db import (
    POLICY,
    T0,
    at,
    claim,
    first_task,
    open_case,
    pool,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.integration


async def _return(
    conn: DbConnection,
    task_id: uuid.UUID,
    documents: tuple[str, ...],
    other_documents: tuple[str, ...] = (),
) -> DecisionResult:
    async with at(T0).begin(conn) as uow:
        return await decisions.decide_task(
            uow,
            POLICY,
            task_id=task_id,
            decision=Decision.RETURN,
            comment="materials missing",
            user_id="fin-r1",
            department="finance",
            role="reviewer",
            documents=documents,
            other_documents=other_documents,
        )


async def _returned_payload(conn: DbConnection, claim_id: uuid.UUID) -> dict[str, object]:
    raw = await conn.fetchval(
        """SELECT payload FROM outbox WHERE message_key = $1
           AND event_type = 'review.returned_for_documents' ORDER BY id DESC LIMIT 1""",
        str(claim_id),
    )
    payload: dict[str, object] = json.loads(raw)["payload"]
    return payload


async def test_a_return_names_checklist_documents_or_titled_other_documents(
    pool: asyncpg.Pool,  # noqa: F811
) -> None:
    async with pool.acquire() as conn:
        claim_id = await open_case(conn, claim(program_id="direct-financing-2026"))
    finance = await first_task(pool, claim_id, "finance")
    async with pool.acquire() as conn:
        # Free text is not a document the window can record: refused, nothing changes.
        with pytest.raises(Invalid) as refused:
            await _return(conn, finance, ("补充说明（盖章）",))
        assert (refused.value.field, refused.value.rule) == ("documents", "unknown_document")
        assert "audit_report" in str(refused.value)
        with pytest.raises(Invalid) as blank:
            await _return(conn, finance, (), ("  ",))
        assert (blank.value.field, blank.value.rule) == ("other_documents", "title_required")
        status = await conn.fetchval(
            "SELECT status FROM review_cases WHERE claim_id = $1", claim_id
        )
        assert status == "department_review"
        # A checklist document, critical ones included, and an "other" one with a title.
        result = await _return(
            conn, finance, ("listing_or_bond_proof", "audit_report"), ("补充说明（盖章）",)
        )
        assert result["claim_status"] == "returned"
        payload = await _returned_payload(conn, claim_id)
    assert payload["documents"] == ["listing_or_bond_proof", "audit_report", "other-1"]
    assert payload["document_titles"] == {"other-1": "补充说明（盖章）"}
    documents = payload["documents"]
    assert isinstance(documents, list)
    for document in documents:
        DocumentSupplied(document_id=document)  # the window can record each one
        assert re.fullmatch(r"[a-z0-9_\-]{1,64}", document)


async def test_approved_amount_is_counted_only_after_commit(
    pool: asyncpg.Pool,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with pool.acquire() as conn:
        claim_id = await open_case(conn, claim(program_id="direct-financing-2026"))
    tasks = {d: await first_task(pool, claim_id, d) for d in ("finance", "industry")}
    counter = metrics.AMOUNT_APPROVED.labels(kind="subsidy", fund="direct-financing-2026")
    before = counter._value.get()

    async def decide(department: str, user: str) -> DecisionResult:
        async with at(T0).acquire(pool) as uow:
            return await decisions.decide_task(
                uow,
                POLICY,
                task_id=tasks[department],
                decision=Decision.APPROVE,
                comment=None,
                user_id=user,
                department=department,
                role="reviewer",
            )

    await decide("industry", "ind-r1")

    async def lost_connection(*args: object, **kwargs: object) -> None:
        raise ConnectionResetError("connection lost before the commit")

    monkeypatch.setattr(unit_of_work, "stage_events", lost_connection)
    with pytest.raises(ConnectionResetError):
        await decide("finance", "fin-r1")
    assert counter._value.get() == before  # rolled back: nothing approved, nothing counted
    monkeypatch.undo()
    result = await decide("finance", "fin-r1")
    assert result["claim_status"] == "approved"
    assert counter._value.get() == before + 500_000
