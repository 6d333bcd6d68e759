"""Returns for documents: a department pauses the claim until the enterprise brings
what it asked for (补正), and the claim resumes when the documents arrived; the 容缺
documents intake still waits for are tracked on the way."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from services.review.adapters import cases, deadlines, tasks
from services.review.domain.model import Case, CaseStatus, Task, remaining_documents
from services.review.domain.returns import checked_request, number_other_documents
from services.review.service_layer.policy import ReviewPolicy
from services.review.service_layer.stages import (
    restart_task_clock,
    set_stage,
    stage_changed,
    start_department_tasks,
)
from shared.contracts import ReviewReturnedForDocumentsV1
from shared.unit_of_work import UnitOfWork


async def asked_documents(
    uow: UnitOfWork,
    policy: ReviewPolicy,
    case: Case,
    documents: Sequence[str],
    other_documents: Sequence[str],
) -> tuple[list[str], dict[str, str]]:
    """The ids a return asks for (checklist ids, then ``other-N``) and the titles of the
    ``other-N`` ones; a refusal for anything the window could not record."""
    checklist = [d.id for d in policy.rules_for(case.kind, case.program_id).documents]
    asked, titles = checked_request(checklist, documents, other_documents)
    if not titles:
        return asked, {}
    earlier = await tasks.other_document_titles(uow.conn, case.claim_id)
    return number_other_documents(asked, titles, earlier)


async def pause_for_documents(
    uow: UnitOfWork,
    case: Case,
    task: Task,
    documents: Sequence[str],
    titles: dict[str, str],
    comment: str | None,
) -> None:
    """A department returned the claim: it waits for the documents, its clocks stop
    (they start afresh when it resumes)."""
    await set_stage(uow, case, CaseStatus.RETURNED)
    await cases.set_returned_documents(uow.conn, case.claim_id, sorted(set(documents)))
    await deadlines.close_all(uow.conn, case.claim_id, uow.now)
    uow.emit(
        ReviewReturnedForDocumentsV1(
            department=task.department,
            documents=list(documents),
            comment=comment,
            document_titles=titles,
        ),
        claim_id=case.claim_id,
    )
    stage_changed(
        uow, case.claim_id, CaseStatus.DEPARTMENT_REVIEW, CaseStatus.RETURNED, [task.department]
    )


async def documents_arrived(
    uow: UnitOfWork,
    policy: ReviewPolicy,
    claim_id: uuid.UUID,
    *,
    supplied: str | None,
    still_pending: Sequence[str],
) -> bool:
    """Track 容缺 documents; resume a returned claim once what was asked for arrived
    (``supplied`` None: intake says every document is in). True when it resumed."""
    case = await cases.lock(uow.conn, claim_id)
    if case is None:
        return False
    asked = list(case.returned_documents)
    left = [] if supplied is None else remaining_documents(asked, supplied)
    returned = case.status is CaseStatus.RETURNED
    await cases.set_documents(uow.conn, claim_id, still_pending, left if returned else asked)
    if not returned or left:
        return False
    await _resume(uow, policy, case)
    return True


async def _resume(uow: UnitOfWork, policy: ReviewPolicy, case: Case) -> None:
    """A fresh task for each department that returned the claim, fresh clocks for all."""
    reopened = await tasks.departments_to_reopen(uow.conn, case.claim_id)
    await set_stage(uow, case, CaseStatus.DEPARTMENT_REVIEW)
    pending = await tasks.pending_department_tasks(uow.conn, case.claim_id)
    for task_id, department in pending:
        await restart_task_clock(uow, policy, case.claim_id, task_id, department)
    due = await start_department_tasks(uow, policy, case.claim_id, reopened)
    holders = sorted(reopened + [department for _, department in pending])
    stage_changed(
        uow, case.claim_id, CaseStatus.RETURNED, CaseStatus.DEPARTMENT_REVIEW, holders, due
    )
