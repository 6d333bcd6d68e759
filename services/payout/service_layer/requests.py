"""Dual control (maker–checker) on money: a top-up, an account correction, or the release
or cancellation of a withheld payout is a pending request of one person, applied
(``finance.top_up`` / ``correct_account`` / ``release_withheld`` / ``cancel_withheld``)
in the unit of work of another person's approval. The requester never decides their own
request (here: 403 ``four_eyes``; in the database: CHECK ``finance_requests_four_eyes``),
and a large top-up needs an approver holding ``funds.top_up`` (a supervisor)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import asyncpg

from services.payout.adapters import audit
from services.payout.service_layer import finance
from shared.contracts import BankAccount
from shared.db import DbConnection
from shared.money import yuan_to_fen
from shared.problems import Conflict, Forbidden, Invalid, NotFound
from shared.programs import Catalogue, load_catalogue
from shared.unit_of_work import UnitOfWork

SUPERVISOR_PERMISSION = "funds.top_up"
"""Who may approve a top-up above the supervisor threshold."""


@dataclass(frozen=True)
class Limits:
    """Per-request top-up bounds (PayoutSettings), in fen."""

    max_fen: int
    supervisor_from_fen: int

    @classmethod
    def of(cls, max_yuan: Decimal, supervisor_from_yuan: Decimal) -> Limits:
        return cls(yuan_to_fen(max_yuan), yuan_to_fen(supervisor_from_yuan))


@dataclass(frozen=True)
class Decider:
    user_id: str
    permissions: frozenset[str]


@dataclass(frozen=True)
class Decided:
    """The decided request and, when approved, what applying it gave."""

    request: asyncpg.Record
    applied: dict[str, Any] | None


async def _insert(uow: UnitOfWork, **values: Any) -> asyncpg.Record:
    columns = ", ".join(values)
    params = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    row: asyncpg.Record | None = await uow.conn.fetchrow(
        f"INSERT INTO finance_requests ({columns}, requested_at) VALUES ({params}, "
        f"${len(values) + 1}) RETURNING *",
        *values.values(),
        uow.now,
    )
    assert row is not None
    return row


async def request_top_up(
    uow: UnitOfWork, fund_id: str, amount_fen: int, actor: str, reason: str, limits: Limits
) -> asyncpg.Record:
    """A pending top-up request (audited); refused at once when it could never apply."""
    if amount_fen > limits.max_fen:
        raise Invalid(
            f"one top-up request adds at most {limits.max_fen // 100} yuan",
            field="body.amount",
            rule="max_top_up",
        )
    await finance.lock_capped_fund(uow, fund_id)
    row = await _insert(
        uow,
        request_id=uuid.uuid4(),
        kind="top_up",
        fund_id=fund_id,
        amount_fen=amount_fen,
        reason=reason,
        requested_by=actor,
    )
    detail = {"request_id": str(row["request_id"])}
    await audit.record(
        uow.conn,
        actor,
        "top_up_requested",
        fund_id=fund_id,
        amount_fen=amount_fen,
        reason=reason,
        detail=detail,
    )
    return row


async def request_correction(
    uow: UnitOfWork, payout_id: uuid.UUID, payee: BankAccount, actor: str, reason: str
) -> asyncpg.Record:
    """A pending correction request of a returned or failed payout (audited)."""
    payout = await finance.correctable(uow, payout_id, "corrected")  # locks the payout
    pending = await uow.conn.fetchval(
        """SELECT request_id FROM finance_requests
            WHERE payout_id = $1 AND status = 'pending'""",
        payout_id,
    )
    if pending is not None:
        # Two pending corrections of one payout: the second approval could only fail.
        raise Conflict(
            f"correction request {pending} of this payout is still pending",
            field="path.payout_id",
            rule="one_pending_request",
        )
    row = await _insert(
        uow,
        request_id=uuid.uuid4(),
        kind="account_correction",
        payout_id=payout_id,
        payee=payee.model_dump_json(),
        reason=reason,
        requested_by=actor,
    )
    detail = {"request_id": str(row["request_id"]), "after": payee.model_dump()}
    await audit.record(
        uow.conn,
        actor,
        "account_correction_requested",
        fund_id=payout["fund_id"],
        payout_id=payout_id,
        amount_fen=payout["amount_fen"],
        reason=reason,
        detail=detail,
    )
    return row


async def request_hold_decision(
    uow: UnitOfWork,
    payout_id: uuid.UUID,
    action: Literal["release", "cancel"],
    payee: BankAccount | None,
    actor: str,
    reason: str,
) -> asyncpg.Record:
    """A pending request to release (pay) or cancel a withheld payout (audited)."""
    payout = await finance.withheld(uow, payout_id)  # locks the payout
    await _no_other_pending(uow, payout_id)
    kind = "hold_release" if action == "release" else "hold_cancel"
    if kind == "hold_cancel" and payee is not None:
        raise Invalid("a cancel pays no one: leave payee out", field="body.payee", rule="no_payee")
    row = await _insert(
        uow,
        request_id=uuid.uuid4(),
        kind=kind,
        payout_id=payout_id,
        payee=None if payee is None else payee.model_dump_json(),
        reason=reason,
        requested_by=actor,
    )
    detail: dict[str, Any] = {
        "request_id": str(row["request_id"]),
        "withheld_reason": payout["withheld_reason"],
    }
    if payee is not None:
        detail["payee"] = payee.model_dump()
    await audit.record(
        uow.conn,
        actor,
        "hold_release_requested" if kind == "hold_release" else "hold_cancel_requested",
        fund_id=payout["fund_id"],
        payout_id=payout_id,
        amount_fen=payout["amount_fen"],
        reason=reason,
        detail=detail,
    )
    return row


async def _no_other_pending(uow: UnitOfWork, payout_id: uuid.UUID) -> None:
    pending = await uow.conn.fetchval(
        "SELECT request_id FROM finance_requests WHERE payout_id = $1 AND status = 'pending'",
        payout_id,
    )
    if pending is not None:
        # Two pending requests on one payout: the second approval could only fail.
        raise Conflict(
            f"request {pending} of this payout is still pending",
            field="path.payout_id",
            rule="one_pending_request",
        )


async def decide(
    uow: UnitOfWork,
    request_id: uuid.UUID,
    decider: Decider,
    *,
    approve: bool,
    comment: str | None,
    limits: Limits,
    catalogue: Catalogue | None = None,
) -> Decided:
    """Approve (apply, same unit of work) or reject a pending request of another person."""
    row = await uow.conn.fetchrow(
        "SELECT * FROM finance_requests WHERE request_id = $1 FOR UPDATE", request_id
    )
    if row is None:
        raise NotFound(f"no finance request {request_id}", field="path.request_id")
    if row["status"] != "pending":
        raise Conflict(
            f"request is already {row['status']}", field="path.request_id", rule="pending_only"
        )
    if row["requested_by"] == decider.user_id:
        raise Forbidden(
            "dual control: the requester cannot decide their own request",
            field="path.request_id",
            rule="four_eyes",
        )
    if (
        approve
        and row["kind"] == "top_up"
        and row["amount_fen"] > limits.supervisor_from_fen
        and SUPERVISOR_PERMISSION not in decider.permissions
    ):
        raise Forbidden(
            f"a top-up above {limits.supervisor_from_fen // 100} yuan needs a finance "
            "supervisor's approval",
            field="path.request_id",
            rule="supervisor_required",
        )
    status = "approved" if approve else "rejected"
    decided = await uow.conn.fetchrow(
        """UPDATE finance_requests
              SET status = $2, decided_by = $3, decided_at = $4, comment = $5
            WHERE request_id = $1 RETURNING *""",
        request_id,
        status,
        decider.user_id,
        uow.now,
        comment,
    )
    assert decided is not None
    payout_id: uuid.UUID | None = row["payout_id"]
    fund_id: str = row["fund_id"]
    amount_fen: int = row["amount_fen"]
    if payout_id is not None:
        payout = await uow.conn.fetchrow(
            "SELECT fund_id, amount_fen FROM payouts WHERE payout_id = $1", payout_id
        )
        assert payout is not None
        fund_id, amount_fen = payout["fund_id"], payout["amount_fen"]
    await audit.record(
        uow.conn,
        decider.user_id,
        "request_approved" if approve else "request_rejected",
        fund_id=fund_id,
        payout_id=payout_id,
        amount_fen=amount_fen,
        reason=comment or status,
        detail={"request_id": str(request_id), "requested_by": row["requested_by"]},
    )
    if not approve:
        return Decided(decided, None)
    # The change itself is recorded under its requester (the approval row above names
    # the decider), so the audit reads "who asked" on the change as before.
    actor: str = row["requested_by"]
    if payout_id is None:
        events = await finance.top_up(uow, fund_id, amount_fen, actor, row["reason"])
        released = sum(e.event_type != "payout.queued" for e in events)
        return Decided(decided, {"fund_id": fund_id, "released_from_queue": released})
    if row["kind"] in ("hold_release", "hold_cancel"):
        chosen = None if row["payee"] is None else BankAccount.model_validate_json(row["payee"])
        if row["kind"] == "hold_cancel":
            await finance.cancel_withheld(uow, payout_id, actor, row["reason"])
            return Decided(decided, {"payout_id": str(payout_id), "status": "released"})
        status = await finance.release_withheld(
            uow, payout_id, chosen, actor, row["reason"], catalogue or load_catalogue()
        )
        return Decided(decided, {"payout_id": str(payout_id), "status": status.value})
    payee = BankAccount.model_validate(json.loads(row["payee"]))
    issue_no, target = await finance.correct_account(uow, payout_id, payee, actor, row["reason"])
    applied = {"payout_id": str(payout_id), "issue_no": issue_no, "status": target.value}
    return Decided(decided, applied)


async def listing(conn: DbConnection, status: str | None, limit: int) -> list[asyncpg.Record]:
    """Requests, oldest first (pending ones are a worklist), optionally of one status."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT * FROM finance_requests
            WHERE ($1::text IS NULL OR status = $1)
            ORDER BY requested_at, request_id LIMIT $2""",
        status,
        limit,
    )
    return rows
