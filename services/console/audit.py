"""The auditor's screen (审计): any claim's merged history from the three services' hash
chains, each entry with the verification status the service computed on the server
(issue 12 item 3: ``GET /claims/{id}/audit`` in intake, review and payout — one call per
service), the seal status of each chain, and a banner when anything is broken.

The console verifies nothing itself: it shows what the services' shared verifier
(``shared.audit``) found — hashes, links, heads, signed seals and state rows against the
chain — and never marks an entry verified that the service did not report ``ok``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.session import Session
from services.console.web import ConsoleError, Kit, with_role

Auditor = Annotated[Session, Depends(with_role("auditor"))]

SERVICES = ("intake", "review", "payout")
DETAIL_FIELDS = ("department", "decision", "status", "reason", "document_id", "stage")
"""Payload fields worth a glance in the detail column (the full body is one click away)."""
MISSING = "missing"
"""The status of a placeholder row: an entry the chain should have and does not."""


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime | None
    source: str
    """The service whose chain holds the entry: intake, review, payout."""
    chain: str
    seq: int
    what: str
    who: str = ""
    detail: str = ""
    status: str = "ok"
    """ok | tampered | inserted | state_differs (from the service) | missing (a deleted seq)."""
    problems: list[str] = field(default_factory=list)
    sealed: bool = False


@dataclass(frozen=True)
class ChainSeal:
    source: str
    chain: str
    entries: int
    seal: str
    sealed_seq: int | None


@dataclass
class Verified:
    """The three services' answers, merged for the page."""

    history: list[HistoryEntry]
    seals: list[ChainSeal]
    breaks: list[dict[str, Any]]
    facts: dict[str, Any]
    services: list[str]
    """The services that have a history of the claim (404 elsewhere: not there yet)."""


def _moment(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _yuan(fen: Any) -> str:
    try:
        return f"¥{Decimal(str(fen)) / 100:,.2f}"
    except (InvalidOperation, ValueError):
        return str(fen)


def _fen_to_yuan(fen: Any) -> Decimal | None:
    try:
        return Decimal(str(fen)) / 100
    except (InvalidOperation, ValueError):
        return None


def summarise(body: dict[str, Any] | None) -> str:
    """A line about the entry: the payload's (or a finance body's) telling fields, money
    in yuan."""
    if not body:
        return ""
    data = body.get("data") or {}
    payload = data.get("payload") if isinstance(data.get("payload"), dict) else data
    if not isinstance(payload, dict):
        return ""
    parts = [f"{k}={payload[k]}" for k in DETAIL_FIELDS if payload.get(k) not in (None, "", [], {})]
    parts += [
        f"{k.removesuffix('_fen')}={_yuan(v)}"
        for k, v in payload.items()
        if k.endswith("_fen") and v not in (None, "")
    ]
    return ", ".join(parts)


def merge_audits(views: dict[str, dict[str, Any] | None]) -> Verified:
    """One history, oldest first (equal times: intake, review, payout, then seq); a row
    for every entry a break says is missing; every break and every chain's seal."""
    history: list[HistoryEntry] = []
    seals: list[ChainSeal] = []
    breaks: list[dict[str, Any]] = []
    facts: dict[str, Any] = {}
    for source in SERVICES:
        view = views.get(source)
        if not view:
            continue
        for e in view.get("entries", []):
            body = e.get("body") or {}
            history.append(
                HistoryEntry(
                    at=_moment(e.get("occurred_at")),
                    source=source,
                    chain=str(e.get("chain", "")),
                    seq=int(e.get("seq", 0)),
                    what=str(e.get("action", "")),
                    who=str(e.get("actor", "")),
                    detail=summarise(body),
                    status=str(e.get("status", "")),
                    problems=[str(p) for p in e.get("problems", [])],
                    sealed=bool(e.get("sealed")),
                )
            )
            payload = (body.get("data") or {}).get("payload") or {}
            if e.get("action") == "claim.submitted":
                facts.update(
                    enterprise_name=payload.get("enterprise_name"),
                    uscc=payload.get("uscc"),
                    requested_amount=_fen_to_yuan(payload.get("requested_amount_fen")),
                )
            if e.get("action") == "review.decided":
                facts.update(
                    decision=payload.get("decision"),
                    approved_amount=_fen_to_yuan(payload.get("approved_amount_fen")),
                )
        present = {(h.chain, h.seq) for h in history if h.source == source}
        for b in view.get("breaks", []):
            breaks.append({**b, "service": source})
            seq = b.get("seq")
            if b.get("kind") == "deleted" and seq is not None and (b["chain"], seq) not in present:
                present.add((b["chain"], seq))
                history.append(
                    HistoryEntry(
                        at=None,
                        source=source,
                        chain=str(b["chain"]),
                        seq=int(seq),
                        what="",
                        status=MISSING,
                        problems=[str(b.get("detail", ""))],
                    )
                )
        for c in view.get("chains", []):
            seals.append(
                ChainSeal(
                    source=source,
                    chain=str(c.get("chain", "")),
                    entries=int(c.get("entries", 0)),
                    seal=str(c.get("seal", "")),
                    sealed_seq=c.get("sealed_seq"),
                )
            )
    # A missing entry sits right after its chain's entry before it.
    after: dict[tuple[str, str, int], datetime | None] = {
        (h.source, h.chain, h.seq): h.at for h in history
    }
    placed = [
        h
        if h.at is not None
        else HistoryEntry(**{**h.__dict__, "at": _before(after, h.source, h.chain, h.seq)})
        for h in history
    ]
    order = {s: i for i, s in enumerate(SERVICES)}
    epoch = datetime.min.replace(tzinfo=UTC)
    placed.sort(key=lambda h: (h.at or epoch, order.get(h.source, 3), h.chain, h.seq))
    return Verified(
        history=placed,
        seals=seals,
        breaks=breaks,
        facts=facts,
        services=[s for s in SERVICES if views.get(s)],
    )


def _before(
    at: dict[tuple[str, str, int], datetime | None], source: str, chain: str, seq: int
) -> datetime | None:
    for earlier in range(seq - 1, 0, -1):
        moment = at.get((source, chain, earlier))
        if moment is not None:
            return moment
    return None


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
        # One call per service. Intake registered the claim: its 404 is "no such claim".
        # Review and payout answer 404 until the claim reaches them: "nothing there yet".
        views: dict[str, dict[str, Any] | None] = {
            "intake": await kit.need(request, "intake", f"/claims/{claim_id}/audit")
        }
        for service in ("review", "payout"):
            answer = await kit.call(request, service, "GET", f"/claims/{claim_id}/audit")
            if answer.status == 404:
                views[service] = None
            elif not answer.ok:
                raise ConsoleError(502, "error.unavailable", f"{service}: {answer.detail}")
            else:
                views[service] = answer.body
        verified = merge_audits(views)
        return kit.render(
            request,
            "audit.html",
            {
                "query": str(claim_id),
                "claim_id": str(claim_id),
                "verified": verified,
                "history": verified.history,
                "broken": bool(verified.breaks),
            },
        )
