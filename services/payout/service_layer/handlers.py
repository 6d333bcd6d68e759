"""Payout's use cases: reserve on approval (or queue, or hold), issue vouchers to the
gateway, record each hop the treasury/bank reports, retry, release, top up, correct
accounts. Every state change and its events commit in one transaction (outbox).

Lock order: a payout row before its fund row; only the queue drain (which runs under a
fund lock) takes queued payouts after the fund. A deadlock between the two is retried
(the consumer treats it as transient; HTTP routes retry it).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg

from services.payout.adapters.gateway import (
    GatewayUnavailable,
    Notice,
    PaymentGateway,
    PaymentInstruction,
)
from services.payout.domain.model import (
    CANCELLABLE,
    COMMITTED,
    RESERVED,
    WAITING,
    PayoutStatus,
    after_approval,
    backoff_seconds,
    fund_of,
    target_of_notice,
    voucher_kind,
    voucher_no,
)
from services.payout.metrics import (
    FAILURES,
    FUND_BUDGET,
    FUND_REMAINING,
    FUND_RESERVED,
    HOP_SECONDS,
    PAID_YUAN,
    PAYOUTS,
    TIME_TO_PAYMENT,
)
from services.payout.metrics import WAITING as WAITING_GAUGE
from shared.contracts import (
    BankAccount,
    EventEnvelope,
    EventPayload,
    PayoutAcceptedV1,
    PayoutAccountCorrectedV1,
    PayoutConfirmedV1,
    PayoutFailedV1,
    PayoutHeldV1,
    PayoutIssuedV1,
    PayoutQueuedV1,
    PayoutReleasedV1,
    PayoutRequestedV1,
    PayoutRetryScheduledV1,
    PayoutReturnedV1,
    PayoutSentV1,
    ReviewDecidedV1,
)
from shared.contracts.topics import PAYOUT_EVENTS
from shared.db import DbConnection
from shared.messaging.consumer import TransientError
from shared.messaging.outbox import stage_events
from shared.programs import Catalogue, load_catalogue

SERVICE = "payout"
T = TypeVar("T")


class NotFound(LookupError):
    pass


class Conflict(Exception):
    pass


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 0.5
    max_s: float = 60.0
    max_attempts: int = 8


# --- funds ----------------------------------------------------------------------------


def fund_map(catalogue: Catalogue) -> dict[str, str]:
    """'vat_refund' or a program id → its fund id."""
    found = {"vat_refund": catalogue.vat_refund.fund}
    found.update({p.id: p.fund for p in catalogue.programs})
    return found


async def seed_funds(conn: DbConnection, catalogue: Catalogue, treasury_cap_fen: int | None) -> int:
    """Create the catalogue's funds that do not exist yet; existing budgets are kept
    (they change only by audited top-ups). Returns how many were created."""
    rows: list[tuple[str, str, str, int | None]] = [
        (catalogue.vat_refund.fund, "vat_refund", catalogue.vat_refund.name, treasury_cap_fen)
    ]
    rows += [(p.fund, "subsidy", p.name, p.budget_fen) for p in catalogue.programs]
    created = 0
    for fund_id, kind, name, budget in rows:
        created += bool(
            await conn.fetchval(
                """INSERT INTO funds (fund_id, claim_kind, name, budget_fen)
                   VALUES ($1, $2, $3, $4) ON CONFLICT (fund_id) DO NOTHING RETURNING true""",
                fund_id,
                kind,
                name,
                budget,
            )
        )
    return created


async def _try_reserve(conn: DbConnection, fund_id: str, amount_fen: int) -> bool:
    """The budget guard: a conditional update; the CHECK constraint backs it up."""
    return bool(
        await conn.fetchval(
            """UPDATE funds SET reserved_fen = reserved_fen + $2
               WHERE fund_id = $1
                 AND (budget_fen IS NULL OR budget_fen - reserved_fen - committed_fen >= $2)
               RETURNING true""",
            fund_id,
            amount_fen,
        )
    )


async def _documents(conn: DbConnection, claim_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM claim_documents WHERE claim_id = $1", claim_id)


def _wrap(
    payload: EventPayload,
    claim_id: uuid.UUID,
    at: datetime,
    cause: EventEnvelope | None = None,
) -> EventEnvelope:
    return EventEnvelope.wrap(
        payload,
        claim_id=claim_id,
        producer=SERVICE,
        correlation_id=cause.correlation_id if cause else None,
        causation_id=cause.event_id if cause else None,
        occurred_at=at,
    )


async def _hop(
    conn: DbConnection,
    payout_id: uuid.UUID,
    issue_no: int,
    attempt: int,
    hop: str,
    at: datetime,
    detail: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO payout_hops (payout_id, issue_no, attempt, hop, at, detail)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (payout_id, issue_no, attempt, hop) DO NOTHING""",
        payout_id,
        issue_no,
        attempt,
        hop,
        at,
        detail,
    )


async def _after_reserved(
    conn: DbConnection, row: asyncpg.Record, now: datetime, cause: EventEnvelope | None
) -> EventEnvelope:
    """Move a payout whose amount was just reserved to held or requested."""
    docs = await _documents(conn, row["claim_id"])
    pending = bool(row["documents_pending"]) and not (docs and docs["documents_completed_at"])
    status = after_approval(reserved=True, documents_pending=pending)
    await conn.execute(
        """UPDATE payouts SET status = $2::text, reserved_at = $3::timestamptz,
               held_at = CASE WHEN $2::text = 'held' THEN $3::timestamptz END,
               documents_pending = $4
           WHERE payout_id = $1""",
        row["payout_id"],
        status.value,
        now,
        pending,
    )
    await _hop(conn, row["payout_id"], 1, 0, "reserved", now)
    PAYOUTS.labels(row["claim_kind"], status.value).inc()
    if status is PayoutStatus.HELD:
        await _hop(conn, row["payout_id"], 1, 0, "held", now, "documents pending (容缺)")
        return _wrap(
            PayoutHeldV1(
                payout_id=row["payout_id"], fund_id=row["fund_id"], amount_fen=row["amount_fen"]
            ),
            row["claim_id"],
            now,
            cause,
        )
    return _wrap(
        PayoutRequestedV1(
            payout_id=row["payout_id"],
            amount_fen=row["amount_fen"],
            payee=BankAccount.model_validate_json(row["payee"]),
        ),
        row["claim_id"],
        now,
        cause,
    )


async def drain_queue(conn: DbConnection, fund_id: str, now: datetime) -> list[EventEnvelope]:
    """Reserve for queued payouts of a fund, first come first served, until one does not
    fit (it stays at the head). Call inside the transaction that freed the money."""
    await conn.execute("SELECT 1 FROM funds WHERE fund_id = $1 FOR NO KEY UPDATE", fund_id)
    events: list[EventEnvelope] = []
    queued = await conn.fetch(
        """SELECT * FROM payouts WHERE fund_id = $1 AND status = 'queued'
           ORDER BY queue_seq FOR UPDATE""",
        fund_id,
    )
    for row in queued:
        if not await _try_reserve(conn, fund_id, row["amount_fen"]):
            break
        events.append(await _after_reserved(conn, row, now, None))
    return events


# --- events from review and intake ----------------------------------------------------


async def on_review_decided(conn: DbConnection, envelope: EventEnvelope) -> None:
    decided = envelope.parse_payload()
    assert isinstance(decided, ReviewDecidedV1)
    if decided.decision != "approved" or decided.approved_amount_fen <= 0:
        return
    fund_id = fund_of(decided.claim_kind, decided.program_id, fund_map(load_catalogue()))
    # The fund's row lock serialises every reservation on the fund (taken before the
    # payout row, whose foreign key would otherwise share-lock the fund first).
    if not await conn.fetchval(
        "SELECT true FROM funds WHERE fund_id = $1 FOR NO KEY UPDATE", fund_id
    ):
        # Funds are seeded when the service starts; read the batch again shortly.
        raise TransientError(f"fund {fund_id!r} not seeded yet")
    payout_id = uuid.uuid4()
    now = datetime.now(UTC)
    row = await conn.fetchrow(
        """INSERT INTO payouts (payout_id, claim_id, claim_kind, amount_fen,
               approved_amount_fen, payee, status, claim_received_at, requested_at, fund_id,
               program_id, voucher_kind, documents_pending)
           VALUES ($1, $2, $3, $4, $4, $5::jsonb, 'queued', $6, $7, $8, $9, $10, $11)
           ON CONFLICT (claim_id) DO NOTHING RETURNING *""",
        payout_id,
        envelope.claim_id,
        decided.claim_kind,
        decided.approved_amount_fen,
        decided.payee.model_dump_json(),
        decided.claim_received_at,
        now,
        fund_id,
        decided.program_id,
        voucher_kind(decided.claim_kind),
        decided.documents_pending,
    )
    if row is None:
        return  # a second approval for a claim already in payout pays nothing more
    docs = await _documents(conn, envelope.claim_id)
    if docs and (docs["lapsed_at"] or docs["withdrawn_at"]):
        reason = "lapsed" if docs["lapsed_at"] else "withdrawn"
        events = [await _release(conn, row, f"claim {reason} before approval", now, envelope)]
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
        return
    # A claim that finds others waiting joins the queue behind them (first come, first
    # served), even when it would fit.
    someone_waiting = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM payouts WHERE fund_id = $1 AND status = 'queued' "
        "AND payout_id <> $2)",
        fund_id,
        payout_id,
    )
    if not someone_waiting and await _try_reserve(conn, fund_id, decided.approved_amount_fen):
        events = [await _after_reserved(conn, row, now, envelope)]
    else:
        seq = await conn.fetchval(
            """UPDATE payouts SET queue_seq = nextval('payout_queue_seq'), queued_at = $2
               WHERE payout_id = $1 RETURNING queue_seq""",
            payout_id,
            now,
        )
        position = await conn.fetchval(
            """SELECT count(*) FROM payouts
               WHERE fund_id = $1 AND status = 'queued' AND queue_seq <= $2""",
            fund_id,
            seq,
        )
        await _hop(conn, payout_id, 1, 0, "queued", now, f"position {position}")
        PAYOUTS.labels(decided.claim_kind, PayoutStatus.QUEUED.value).inc()
        events = [
            _wrap(
                PayoutQueuedV1(
                    payout_id=payout_id,
                    fund_id=fund_id,
                    amount_fen=decided.approved_amount_fen,
                    position=int(position),
                ),
                envelope.claim_id,
                now,
                envelope,
            )
        ]
    await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)


async def _release(
    conn: DbConnection,
    row: asyncpg.Record,
    reason: str,
    now: datetime,
    cause: EventEnvelope | None,
) -> EventEnvelope:
    """A cancellable payout → released, giving its reservation or commitment back."""
    status = PayoutStatus(row["status"])
    if status in RESERVED:
        await conn.execute(
            "UPDATE funds SET reserved_fen = reserved_fen - $2 WHERE fund_id = $1",
            row["fund_id"],
            row["amount_fen"],
        )
    elif status in COMMITTED:  # retrying or returned: no money is with the bank
        await conn.execute(
            "UPDATE funds SET committed_fen = committed_fen - $2 WHERE fund_id = $1",
            row["fund_id"],
            row["amount_fen"],
        )
    await conn.execute(
        """UPDATE payouts SET status = 'released', released_at = $2, release_reason = $3,
               queue_seq = NULL
           WHERE payout_id = $1""",
        row["payout_id"],
        now,
        reason,
    )
    await _hop(conn, row["payout_id"], row["issue_no"], row["attempts"], "released", now, reason)
    PAYOUTS.labels(row["claim_kind"], PayoutStatus.RELEASED.value).inc()
    return _wrap(
        PayoutReleasedV1(
            payout_id=row["payout_id"],
            fund_id=row["fund_id"],
            amount_fen=row["amount_fen"],
            reason=reason,
        ),
        row["claim_id"],
        now,
        cause,
    )


async def on_documents_completed(conn: DbConnection, envelope: EventEnvelope) -> None:
    now = datetime.now(UTC)
    await conn.execute(
        """INSERT INTO claim_documents (claim_id, documents_completed_at) VALUES ($1, $2)
           ON CONFLICT (claim_id) DO UPDATE
               SET documents_completed_at = coalesce(claim_documents.documents_completed_at,
                                                     excluded.documents_completed_at),
                   updated_at = now()""",
        envelope.claim_id,
        envelope.occurred_at,
    )
    row = await conn.fetchrow(
        "SELECT * FROM payouts WHERE claim_id = $1 FOR UPDATE", envelope.claim_id
    )
    if row is None:
        return  # recorded: the approval, when it comes, will find the documents complete
    if row["status"] == PayoutStatus.QUEUED:
        await conn.execute(
            "UPDATE payouts SET documents_pending = false WHERE payout_id = $1", row["payout_id"]
        )
        return
    if row["status"] != PayoutStatus.HELD:
        return
    await conn.execute(
        """UPDATE payouts SET status = 'requested', documents_pending = false
           WHERE payout_id = $1""",
        row["payout_id"],
    )
    PAYOUTS.labels(row["claim_kind"], PayoutStatus.REQUESTED.value).inc()
    event = _wrap(
        PayoutRequestedV1(
            payout_id=row["payout_id"],
            amount_fen=row["amount_fen"],
            payee=BankAccount.model_validate_json(row["payee"]),
        ),
        row["claim_id"],
        now,
        envelope,
    )
    await stage_events(conn, SERVICE, PAYOUT_EVENTS, [event])


async def _on_claim_ended(conn: DbConnection, envelope: EventEnvelope, ending: str) -> None:
    column = "lapsed_at" if ending == "lapsed" else "withdrawn_at"
    await conn.execute(
        f"""INSERT INTO claim_documents (claim_id, {column}, reason) VALUES ($1, $2, $3)
            ON CONFLICT (claim_id) DO UPDATE
                SET {column} = coalesce(claim_documents.{column}, excluded.{column}),
                    reason = coalesce(claim_documents.reason, excluded.reason),
                    updated_at = now()""",
        envelope.claim_id,
        envelope.occurred_at,
        f"claim {ending}",
    )
    row = await conn.fetchrow(
        "SELECT * FROM payouts WHERE claim_id = $1 FOR UPDATE", envelope.claim_id
    )
    if row is None:
        return  # recorded: a later approval releases at once
    now = datetime.now(UTC)
    status = PayoutStatus(row["status"])
    if status in CANCELLABLE:
        events = [await _release(conn, row, f"claim {ending}", now, envelope)]
        events += await drain_queue(conn, row["fund_id"], now)
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    elif status is not PayoutStatus.RELEASED:
        # Payment has started or finished: never un-pay; record and surface it.
        note = f"claim {ending} at {envelope.occurred_at.isoformat()} while payout {status}"
        await conn.execute(
            """UPDATE payouts SET late_cancellation = coalesce(late_cancellation, $2)
               WHERE payout_id = $1""",
            row["payout_id"],
            note,
        )
        await _hop(
            conn,
            row["payout_id"],
            row["issue_no"],
            row["attempts"],
            "late_cancellation",
            now,
            note,
        )


async def on_claim_lapsed(conn: DbConnection, envelope: EventEnvelope) -> None:
    await _on_claim_ended(conn, envelope, "lapsed")


async def on_claim_withdrawn(conn: DbConnection, envelope: EventEnvelope) -> None:
    await _on_claim_ended(conn, envelope, "withdrawn")


# --- the gateway: issue vouchers, record notices --------------------------------------


async def dispatch_requested(
    pool: asyncpg.Pool,
    gateway: PaymentGateway,
    policy: RetryPolicy | None = None,
    limit: int = 100,
) -> int:
    """Issue requested payouts and due retries. A crash after the bank took a voucher
    and before the commit resubmits the same key next time, which the bank ignores."""
    policy = policy or RetryPolicy()
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT * FROM payouts
               WHERE status = 'requested'
                  OR (status = 'retrying' AND next_attempt_at <= now())
               ORDER BY requested_at LIMIT $1
               FOR UPDATE SKIP LOCKED""",
            limit,
        )
        events: list[EventEnvelope] = []
        for r in rows:
            now = datetime.now(UTC)
            if r["status"] == PayoutStatus.REQUESTED:
                # The reservation becomes a commitment: the money is leaving.
                await conn.execute(
                    """UPDATE funds SET reserved_fen = reserved_fen - $2,
                           committed_fen = committed_fen + $2
                       WHERE fund_id = $1""",
                    r["fund_id"],
                    r["amount_fen"],
                )
            payee = BankAccount.model_validate_json(r["payee"])
            attempt = r["attempts"] + 1
            kind = r["voucher_kind"] or voucher_kind(r["claim_kind"])
            number = voucher_no(kind, r["payout_id"], r["issue_no"])
            await conn.execute(
                """INSERT INTO vouchers (payout_id, issue_no, voucher_no, voucher_kind,
                       amount_fen, bank_name, account_name, account_number, issued_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                   ON CONFLICT (payout_id, issue_no) DO NOTHING""",
                r["payout_id"],
                r["issue_no"],
                number,
                kind,
                r["amount_fen"],
                payee.bank_name,
                payee.account_name,
                payee.account_number,
                now,
            )
            try:
                reference = await gateway.submit(
                    PaymentInstruction(
                        payout_id=r["payout_id"],
                        issue_no=r["issue_no"],
                        attempt=attempt,
                        voucher_no=number,
                        voucher_kind=kind,
                        amount_fen=r["amount_fen"],
                        bank_name=payee.bank_name,
                        account_number=payee.account_number,
                        account_name=payee.account_name,
                    )
                )
            except GatewayUnavailable as exc:
                delay = backoff_seconds(attempt, base_s=policy.base_s, max_s=policy.max_s)
                await conn.execute(
                    """UPDATE payouts SET status = 'retrying', attempts = $2,
                           next_attempt_at = $3 WHERE payout_id = $1""",
                    r["payout_id"],
                    attempt,
                    now + timedelta(seconds=delay),
                )
                await _hop(
                    conn, r["payout_id"], r["issue_no"], attempt, "failed_transient", now, str(exc)
                )
                FAILURES.labels(r["fund_id"], "transient").inc()
                continue
            await conn.execute(
                """UPDATE payouts SET status = 'issued', attempts = $2, issued_at = $3,
                       gateway_reference = $4, next_attempt_at = NULL
                   WHERE payout_id = $1""",
                r["payout_id"],
                attempt,
                now,
                reference,
            )
            await _hop(conn, r["payout_id"], r["issue_no"], attempt, "issued", now, number)
            events.append(
                _wrap(
                    PayoutIssuedV1(
                        payout_id=r["payout_id"],
                        voucher_no=number,
                        voucher_kind=kind,
                        issue_no=r["issue_no"],
                        attempt=attempt,
                        amount_fen=r["amount_fen"],
                    ),
                    r["claim_id"],
                    now,
                )
            )
            PAYOUTS.labels(r["claim_kind"], PayoutStatus.ISSUED.value).inc()
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    return len(rows)


async def record_notices(
    pool: asyncpg.Pool,
    gateway: PaymentGateway,
    policy: RetryPolicy | None = None,
    limit: int = 500,
) -> int:
    """Apply the bank's notices in order; stale or repeated ones change nothing."""
    policy = policy or RetryPolicy()
    notices = await gateway.due_notices(limit)
    if not notices:
        return 0
    after_commit: list[Callable[[], None]] = []
    async with pool.acquire() as conn, conn.transaction():
        events: list[EventEnvelope] = []
        for n in notices:
            events += await _apply_notice(conn, n, policy, after_commit)
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
    await gateway.acknowledge([n.notice_id for n in notices])
    for observe in after_commit:
        observe()
    return len(notices)


async def _apply_notice(
    conn: DbConnection,
    n: Notice,
    policy: RetryPolicy,
    after_commit: list[Callable[[], None]],
) -> list[EventEnvelope]:
    row = await conn.fetchrow("SELECT * FROM payouts WHERE payout_id = $1 FOR UPDATE", n.payout_id)
    if row is None or row["issue_no"] != n.issue_no or row["attempts"] != n.attempt:
        return []  # a notice about an earlier issue or attempt
    current = PayoutStatus(row["status"])
    target = target_of_notice(
        current, n.hop, permanent=n.permanent, attempts=n.attempt, max_attempts=policy.max_attempts
    )
    if target is None:
        return []
    pid, claim_id, kind, fund = row["payout_id"], row["claim_id"], row["claim_kind"], row["fund_id"]
    amount = row["amount_fen"]
    number = voucher_no(row["voucher_kind"] or voucher_kind(kind), pid, n.issue_no)
    at = n.at
    voucher = await conn.fetchrow(
        "SELECT * FROM vouchers WHERE payout_id = $1 AND issue_no = $2", pid, n.issue_no
    )
    hop_name = {PayoutStatus.PAID: "arrived", PayoutStatus.RETRYING: "failed_transient"}.get(
        target, target.value
    )
    await _hop(conn, pid, n.issue_no, n.attempt, hop_name, at, n.reason)
    after_commit.append(lambda: PAYOUTS.labels(kind, target.value).inc())
    payload: EventPayload
    extra: list[EventEnvelope] = []
    if target is PayoutStatus.ACCEPTED:
        await conn.execute(
            "UPDATE payouts SET status = 'accepted', accepted_at = $2 WHERE payout_id = $1", pid, at
        )
        await conn.execute(
            "UPDATE vouchers SET accepted_at = $3 WHERE payout_id = $1 AND issue_no = $2",
            pid,
            n.issue_no,
            at,
        )
        if voucher is not None:
            secs = (at - voucher["issued_at"]).total_seconds()
            after_commit.append(lambda: HOP_SECONDS.labels("issued_to_accepted").observe(secs))
        payload = PayoutAcceptedV1(payout_id=pid, voucher_no=number, accepted_at=at)
    elif target is PayoutStatus.SENT:
        await conn.execute(
            "UPDATE payouts SET status = 'sent', sent_at = $2 WHERE payout_id = $1", pid, at
        )
        await conn.execute(
            "UPDATE vouchers SET sent_at = $3 WHERE payout_id = $1 AND issue_no = $2",
            pid,
            n.issue_no,
            at,
        )
        if voucher is not None and voucher["accepted_at"] is not None:
            secs = (at - voucher["accepted_at"]).total_seconds()
            after_commit.append(lambda: HOP_SECONDS.labels("accepted_to_sent").observe(secs))
        payload = PayoutSentV1(payout_id=pid, amount_fen=amount, gateway_reference=n.bank_reference)
    elif target is PayoutStatus.PAID:
        await conn.execute(
            """UPDATE payouts SET status = 'paid', paid_at = $2,
                   paid_amount_fen = paid_amount_fen + amount_fen
               WHERE payout_id = $1""",
            pid,
            at,
        )
        await conn.execute(
            """UPDATE vouchers SET arrived_at = $3, outcome = 'arrived'
               WHERE payout_id = $1 AND issue_no = $2""",
            pid,
            n.issue_no,
            at,
        )
        await conn.execute(
            "UPDATE funds SET paid_fen = paid_fen + $2 WHERE fund_id = $1", fund, amount
        )
        ttp = max(0.0, (at - row["claim_received_at"]).total_seconds())
        sent_at = voucher["sent_at"] if voucher is not None else None
        hop_secs = (at - sent_at).total_seconds() if sent_at is not None else None

        def observe_paid() -> None:
            PAID_YUAN.labels(kind).inc(amount / 100)
            TIME_TO_PAYMENT.labels(kind).observe(ttp)
            if hop_secs is not None:
                HOP_SECONDS.labels("sent_to_arrived").observe(hop_secs)

        after_commit.append(observe_paid)
        payload = PayoutConfirmedV1(
            payout_id=pid, amount_fen=amount, arrived_at=at, time_to_payment_seconds=ttp
        )
    elif target is PayoutStatus.RETRYING:
        delay = backoff_seconds(n.attempt, base_s=policy.base_s, max_s=policy.max_s)
        next_at = datetime.now(UTC) + timedelta(seconds=delay)
        await conn.execute(
            "UPDATE payouts SET status = 'retrying', next_attempt_at = $2 WHERE payout_id = $1",
            pid,
            next_at,
        )
        after_commit.append(lambda: FAILURES.labels(fund, "transient").inc())
        payload = PayoutRetryScheduledV1(
            payout_id=pid,
            reason=n.reason or "transient failure",
            attempt=n.attempt,
            next_attempt_at=next_at,
        )
    elif target is PayoutStatus.FAILED:
        reason = n.reason or "failed at the bank"
        if not n.permanent:
            reason = f"retries exhausted after {n.attempt} attempts: {reason}"
        await conn.execute(
            """UPDATE payouts SET status = 'failed', failed_at = $2, failure_reason = $3
               WHERE payout_id = $1""",
            pid,
            at,
            reason,
        )
        await conn.execute(
            """UPDATE vouchers SET failed_at = $3, outcome = 'failed', reason = $4
               WHERE payout_id = $1 AND issue_no = $2""",
            pid,
            n.issue_no,
            at,
            reason,
        )
        # Final failure: the commitment goes back to the fund, and the queue may move.
        await conn.execute(
            "UPDATE funds SET committed_fen = committed_fen - $2 WHERE fund_id = $1", fund, amount
        )
        after_commit.append(lambda: FAILURES.labels(fund, "permanent").inc())
        payload = PayoutFailedV1(payout_id=pid, reason=reason, permanent=True)
        extra = await drain_queue(conn, fund, datetime.now(UTC))
    else:  # RETURNED
        reason = n.reason or "returned by the bank"
        await conn.execute(
            """UPDATE payouts SET status = 'returned', returned_at = $2, failure_reason = $3
               WHERE payout_id = $1""",
            pid,
            at,
            reason,
        )
        await conn.execute(
            """UPDATE vouchers SET returned_at = $3, outcome = 'returned', reason = $4
               WHERE payout_id = $1 AND issue_no = $2""",
            pid,
            n.issue_no,
            at,
            reason,
        )
        after_commit.append(lambda: FAILURES.labels(fund, "returned").inc())
        payload = PayoutReturnedV1(
            payout_id=pid, voucher_no=number, amount_fen=amount, reason=reason
        )
    return [_wrap(payload, claim_id, at), *extra]


# --- finance staff's actions ----------------------------------------------------------


async def with_retry(pool: asyncpg.Pool, work: Callable[[DbConnection], Awaitable[T]]) -> T:
    """Run work in a transaction, again after a deadlock or serialization failure."""
    for attempt in range(5):
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await work(conn)
        except (
            asyncpg.exceptions.DeadlockDetectedError,
            asyncpg.exceptions.SerializationError,
        ):
            if attempt == 4:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


async def top_up(
    pool: asyncpg.Pool, fund_id: str, amount_fen: int, actor: str, reason: str
) -> list[EventEnvelope]:
    """Add to a fund's budget (audited) and pay the queue from it, in one transaction."""

    async def work(conn: DbConnection) -> list[EventEnvelope]:
        fund = await conn.fetchrow(
            "SELECT * FROM funds WHERE fund_id = $1 FOR NO KEY UPDATE", fund_id
        )
        if fund is None:
            raise NotFound(f"no fund {fund_id!r}")
        if fund["budget_fen"] is None:
            raise Conflict(f"fund {fund_id!r} has no cap; there is nothing to top up")
        await conn.execute(
            "UPDATE funds SET budget_fen = budget_fen + $2 WHERE fund_id = $1", fund_id, amount_fen
        )
        await conn.execute(
            """INSERT INTO finance_audit (actor, action, fund_id, amount_fen, reason, detail)
               VALUES ($1, 'top_up', $2, $3, $4, $5::jsonb)""",
            actor,
            fund_id,
            amount_fen,
            reason,
            json.dumps({"budget_before_fen": fund["budget_fen"]}),
        )
        events = await drain_queue(conn, fund_id, datetime.now(UTC))
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, events)
        return events

    return await with_retry(pool, work)


async def correct_account(
    pool: asyncpg.Pool, payout_id: uuid.UUID, payee: BankAccount, actor: str, reason: str
) -> int:
    """A returned payout gets the corrected account and is re-issued (new issue number,
    same amount: the earlier issue's money came back). Returns the new issue number."""

    async def work(conn: DbConnection) -> int:
        row = await conn.fetchrow(
            "SELECT * FROM payouts WHERE payout_id = $1 FOR UPDATE", payout_id
        )
        if row is None:
            raise NotFound(f"no payout {payout_id}")
        if row["status"] != PayoutStatus.RETURNED:
            raise Conflict(f"payout is {row['status']}; only a returned payout is corrected")
        now = datetime.now(UTC)
        issue_no: int = row["issue_no"] + 1
        await conn.execute(
            """UPDATE payouts SET status = 'retrying', payee = $2::jsonb, issue_no = $3,
                   attempts = 0, next_attempt_at = $4, failure_reason = NULL
               WHERE payout_id = $1""",
            payout_id,
            payee.model_dump_json(),
            issue_no,
            now,
        )
        await conn.execute(
            """INSERT INTO finance_audit (actor, action, fund_id, payout_id, amount_fen, reason,
                   detail)
               VALUES ($1, 'account_correction', $2, $3, $4, $5, $6::jsonb)""",
            actor,
            row["fund_id"],
            payout_id,
            row["amount_fen"],
            reason,
            json.dumps({"before": json.loads(row["payee"]), "after": payee.model_dump()}),
        )
        await _hop(conn, payout_id, issue_no, 0, "account_corrected", now, reason)
        event = _wrap(
            PayoutAccountCorrectedV1(
                payout_id=payout_id, payee=payee, next_issue_no=issue_no, corrected_by=actor
            ),
            row["claim_id"],
            now,
        )
        await stage_events(conn, SERVICE, PAYOUT_EVENTS, [event])
        return issue_no

    return await with_retry(pool, work)


# --- views ----------------------------------------------------------------------------


async def fund_views(conn: DbConnection) -> list[dict[str, Any]]:
    funds = await conn.fetch("SELECT * FROM funds ORDER BY fund_id")
    stats = await conn.fetch(
        """SELECT fund_id, status, count(*) AS n, coalesce(sum(amount_fen), 0) AS fen
           FROM payouts WHERE fund_id IS NOT NULL GROUP BY fund_id, status"""
    )
    by_fund: dict[str, dict[str, tuple[int, int]]] = {}
    for s in stats:
        by_fund.setdefault(s["fund_id"], {})[s["status"]] = (int(s["n"]), int(s["fen"]))
    views = []
    for f in funds:
        counts = by_fund.get(f["fund_id"], {})
        budget = f["budget_fen"]
        waiting = {reason: counts.get(status.value, (0, 0)) for status, reason in WAITING.items()}
        views.append(
            {
                "fund_id": f["fund_id"],
                "claim_kind": f["claim_kind"],
                "name": f["name"],
                "budget_fen": budget,
                "reserved_fen": f["reserved_fen"],
                "committed_fen": f["committed_fen"],
                "paid_fen": f["paid_fen"],
                "remaining_fen": None
                if budget is None
                else budget - f["reserved_fen"] - f["committed_fen"],
                "waiting_claims": counts.get("queued", (0, 0))[0],
                "waiting_fen": counts.get("queued", (0, 0))[1],
                "waiting": {r: {"claims": n, "amount_fen": fen} for r, (n, fen) in waiting.items()},
                "payouts": {
                    st: {"claims": n, "amount_fen": fen} for st, (n, fen) in counts.items()
                },
            }
        )
    return views


async def refresh_gauges(conn: DbConnection) -> list[dict[str, Any]]:
    views = await fund_views(conn)
    for v in views:
        fund = v["fund_id"]
        if v["budget_fen"] is not None:
            FUND_BUDGET.labels(fund).set(v["budget_fen"] / 100)
            FUND_REMAINING.labels(fund).set(v["remaining_fen"] / 100)
        FUND_RESERVED.labels(fund).set(v["reserved_fen"] / 100)
        for reason, w in v["waiting"].items():
            WAITING_GAUGE.labels(fund, reason).set(w["claims"])
    return views
