"""The auditor's screen (审计): any claim's merged history — intake's tracker timeline (the
events of every service as intake saw them), review's decisions and deadlines, payout's
hops and vouchers — in one list ordered by time, from the services' existing APIs.

The hash-chain verification of each entry comes with issue 12 (shared/audit). Until
then every entry's verification column says "not verified yet": the console shows no
check it has not made.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.session import Session
from services.console.web import ConsoleError, Kit, with_role

Auditor = Annotated[Session, Depends(with_role("auditor"))]

ACTOR_FIELDS = ("registered_by", "recorded_by", "withdrawn_by", "decided_by", "corrected_by")
"""The person an event names (shared/contracts), shown as "who" rather than the service."""
VERIFICATION_PENDING = "not_verified_yet"
"""The only verification state until issue 12 gives entries a chain to check against."""


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    source: str
    """intake (tracker timeline), review, payout."""
    what: str
    who: str = ""
    detail: str = ""
    ref: str = ""
    """The entry's own id in its source (event id, task id, hop's payout)."""
    verification: str = field(default=VERIFICATION_PENDING)


def _moment(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def merge_history(
    claim: dict[str, Any] | None,
    review: dict[str, Any] | None,
    payouts: list[dict[str, Any]],
) -> list[HistoryEntry]:
    """One list, oldest first; equal times keep the sources' order (intake, review,
    payout). Entries without a time are left out rather than guessed."""
    entries: list[HistoryEntry] = []
    for event in (claim or {}).get("timeline", []):
        at = _moment(event.get("occurred_at"))
        if at is None:
            continue
        payload = event.get("payload") or {}
        detail = ", ".join(
            f"{k}={payload[k]}"
            for k in ("department", "decision", "status", "reason", "document_id", "stage")
            if payload.get(k) not in (None, "", [])
        )
        actor = next((str(payload[k]) for k in ACTOR_FIELDS if payload.get(k)), "")
        producer = str(event.get("producer", ""))
        entries.append(
            HistoryEntry(
                at=at,
                source="intake",
                what=str(event.get("event_type", "")),
                who=f"{actor} ({producer})" if actor else producer,
                detail=detail,
                ref=str(event.get("event_id", "")),
            )
        )
    for task in (review or {}).get("tasks", []):
        created = _moment(task.get("created_at"))
        if created is not None:
            entries.append(
                HistoryEntry(
                    at=created,
                    source="review",
                    what=f"task.created:{task.get('stage')}",
                    detail=str(task.get("department", "")),
                    ref=str(task.get("task_id", "")),
                )
            )
        decided = _moment(task.get("decided_at"))
        if decided is not None:
            entries.append(
                HistoryEntry(
                    at=decided,
                    source="review",
                    what=f"task.{task.get('status')}",
                    who=f"{task.get('decided_by') or ''} ({task.get('decided_role') or ''})",
                    detail=f"{task.get('department', '')}: {task.get('comment') or ''}".strip(),
                    ref=str(task.get("task_id", "")),
                )
            )
    if review and _moment(review.get("decided_at")) is not None:
        entries.append(
            HistoryEntry(
                at=_moment(review["decided_at"]),  # type: ignore[arg-type]
                source="review",
                what=f"review.{review.get('status')}",
                detail=str(review.get("decision_reason") or ""),
            )
        )
    for payout in payouts:
        for hop in payout.get("hops", []):
            at = _moment(hop.get("at"))
            if at is None:
                continue
            detail = hop.get("detail")
            entries.append(
                HistoryEntry(
                    at=at,
                    source="payout",
                    what=f"hop.{hop.get('hop')}",
                    detail=(
                        f"issue {hop.get('issue_no')}, attempt {hop.get('attempt')}"
                        + (f": {detail}" if detail else "")
                    ),
                    ref=str(payout.get("payout_id", "")),
                )
            )
    order = {"intake": 0, "review": 1, "payout": 2}
    entries.sort(key=lambda e: (e.at, order.get(e.source, 3)))
    return entries


def install_audit(app: FastAPI, kit: Kit) -> None:
    @app.get("/audit", response_model=None)
    async def audit_home(request: Request, session: Auditor, claim: str = "") -> Response:
        claim = claim.strip()
        if claim:
            try:
                claim_id = uuid.UUID(claim)
            except ValueError:
                return kit.render(
                    request, "audit.html", {"query": claim, "bad_query": True}, status=422
                )
            return RedirectResponse(f"/audit/claims/{claim_id}", status_code=303)
        return kit.render(request, "audit.html", {"query": ""})

    @app.get("/audit/claims/{claim_id}")
    async def claim_history(
        request: Request, claim_id: uuid.UUID, session: Auditor
    ) -> HTMLResponse:
        claim = await kit.need(request, "intake", f"/claims/{claim_id}")
        # A claim review has not seen yet (or one it never will: withdrawn at once) has no
        # review case: 404 from review is "nothing yet", not an error of the page.
        review_answer = await kit.call(request, "review", "GET", f"/claims/{claim_id}/review")
        review = review_answer.body if review_answer.ok else None
        if not review_answer.ok and review_answer.status != 404:
            raise ConsoleError(502, "error.unavailable", f"review: {review_answer.detail}")
        found = await kit.need(request, "payout", "/payouts", params={"claim_id": str(claim_id)})
        payouts = [await kit.need(request, "payout", f"/payouts/{p['payout_id']}") for p in found]
        return kit.render(
            request,
            "audit.html",
            {
                "query": str(claim_id),
                "claim": claim,
                "review": review,
                "payouts": payouts,
                "history": merge_history(claim, review, payouts),
            },
        )
