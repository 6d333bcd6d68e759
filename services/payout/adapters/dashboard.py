"""The finance dashboard's SQL (issue 13): paid per Beijing day with time-to-payment
percentiles, and each fund's cumulative paid against its budget, from payout's own
tables (no Prometheus: the embedded setup has no Grafana).

Days are calendar days in Asia/Shanghai, the zone of the bank's value dates
(``statements.BANK_TIMEZONE``) and of the console's date filters: a day ``d`` is
``[d 00:00+08:00, d+1 00:00+08:00)``.

Time to payment, per payout, is ``paid_at − requested_at``: from the moment payout
recorded the final approval (``review.decided``, approved; ``requested_at`` is when
payout handled it, within the consumer's lag of the decision) to the moment the money
arrived in the enterprise's account (到账, the bank's arrival notice). That is finance's
part of the journey and everything that happens in it: waiting for budget (queued),
for promised documents (held), the bank's hops, retries, returned payments and their
corrections. ``paid_at − claim_received_at`` (from the window, the end-to-end time that
Grafana's ``claimflow_time_to_payment_seconds`` histogram measures) is returned next to
it. Both are clamped at zero, as the histogram is (clocks of two machines).
"""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from services.payout.adapters.statements import BANK_TIMEZONE
from shared.db import DbConnection

BUSINESS_TIMEZONE = BANK_TIMEZONE
PERCENTILES = (0.5, 0.9, 0.99)

# $1 first day, $2 last day (inclusive), sent as ISO text: asyncpg sends date.min and
# date.max (0001-01-01, 9999-12-31, valid days to ask for) as -infinity and infinity,
# on which PostgreSQL's date arithmetic fails. Both ends become Beijing midnights.
_PAID_IN_RANGE = f"""
    SELECT (paid_at AT TIME ZONE '{BUSINESS_TIMEZONE}')::date AS day,
           paid_amount_fen,
           greatest(paid_at - requested_at, interval '0') AS after_approval,
           greatest(paid_at - claim_received_at, interval '0') AS after_received
    FROM payouts
    WHERE paid_at IS NOT NULL
      AND paid_at >= $1::text::date::timestamp AT TIME ZONE '{BUSINESS_TIMEZONE}'
      AND paid_at < ($2::text::date + 1)::timestamp AT TIME ZONE '{BUSINESS_TIMEZONE}'
      AND ($3::text IS NULL OR fund_id = $3)"""

_PERCENTILES = "ARRAY[{}]::float8[]".format(", ".join(str(p) for p in PERCENTILES))
_AGGREGATES = f"""count(paid.day) AS payouts_paid,
           coalesce(sum(paid.paid_amount_fen), 0)::bigint AS paid_fen,
           percentile_cont({_PERCENTILES}) WITHIN GROUP (ORDER BY paid.after_approval)
               AS after_approval,
           percentile_cont({_PERCENTILES}) WITHIN GROUP (ORDER BY paid.after_received)
               AS after_received"""


async def business_today(conn: DbConnection) -> date:
    """Today in Beijing, by the database's clock (the service names no wall clock)."""
    today: date = await conn.fetchval(f"SELECT (now() AT TIME ZONE '{BUSINESS_TIMEZONE}')::date")
    return today


async def snapshot_time(conn: DbConnection) -> datetime:
    """When the transaction's snapshot was taken (what the figures are "as of")."""
    at: datetime = await conn.fetchval("SELECT now()")
    return at


async def paid_per_day(
    conn: DbConnection, first: date, last: date, fund_id: str | None
) -> list[asyncpg.Record]:
    """One row per day from ``first`` to ``last`` (days without payments too): payouts
    paid, fen paid, and the p50/p90/p99 of both intervals (``interval[]``, NULL on a day
    without payments)."""
    return list(
        await conn.fetch(
            f"""WITH paid AS ({_PAID_IN_RANGE}),
                     days AS (SELECT $1::text::date + i AS day
                              FROM generate_series(0, $2::text::date - $1::text::date) AS i)
                SELECT days.day, {_AGGREGATES}
                FROM days LEFT JOIN paid ON paid.day = days.day
                GROUP BY days.day ORDER BY days.day""",
            first.isoformat(),
            last.isoformat(),
            fund_id,
        )
    )


async def paid_in_range(
    conn: DbConnection, first: date, last: date, fund_id: str | None
) -> asyncpg.Record:
    """The same figures over the whole range (percentiles of all its payouts, not an
    average of the days')."""
    row = await conn.fetchrow(
        f"SELECT {_AGGREGATES} FROM ({_PAID_IN_RANGE}) AS paid",
        first.isoformat(),
        last.isoformat(),
        fund_id,
    )
    assert row is not None  # an aggregate without GROUP BY always answers one row
    return row


async def funds(conn: DbConnection, fund_id: str | None) -> list[asyncpg.Record]:
    """The funds (one, or all) with their figures now."""
    return list(
        await conn.fetch(
            """SELECT fund_id, claim_kind, name, budget_fen, reserved_fen, committed_fen,
                      paid_fen
               FROM funds WHERE ($1::text IS NULL OR fund_id = $1) ORDER BY fund_id""",
            fund_id,
        )
    )


async def burn_per_day(
    conn: DbConnection, first: date, last: date, fund_id: str | None
) -> list[asyncpg.Record]:
    """Per fund and day: the budget at the end of the day, the fen paid that day and
    paid in all up to the end of it (every payout ever paid, not only the range's).

    The budget of a past day is today's minus the top-ups applied after it: a fund's
    budget changes only by audited top-ups (``finance_audit``, action ``top_up``; the
    catalogue's budget is only the starting value, docs/payout.md). NULL: uncapped.
    What was reserved or committed on a past day is not kept (only the fund's current
    figures are), so the history is what arrived; the current figures come with
    :func:`funds`."""
    return list(
        await conn.fetch(
            f"""WITH days AS (SELECT $1::text::date + i AS day
                              FROM generate_series(0, $2::text::date - $1::text::date) AS i),
                     daily AS (
                         SELECT fund_id,
                                (paid_at AT TIME ZONE '{BUSINESS_TIMEZONE}')::date AS day,
                                sum(paid_amount_fen) AS paid_fen
                         FROM payouts
                         WHERE paid_at IS NOT NULL
                           AND paid_at < ($2::text::date + 1)::timestamp
                                         AT TIME ZONE '{BUSINESS_TIMEZONE}'
                           AND fund_id IS NOT NULL
                           AND ($3::text IS NULL OR fund_id = $3)
                         GROUP BY 1, 2),
                     earlier AS (
                         SELECT fund_id, sum(paid_fen) AS paid_fen
                         FROM daily WHERE day < $1::text::date GROUP BY fund_id),
                     top_ups AS (
                         SELECT fund_id,
                                (at AT TIME ZONE '{BUSINESS_TIMEZONE}')::date AS day,
                                sum(amount_fen) AS amount_fen
                         FROM finance_audit
                         WHERE action = 'top_up' AND ($3::text IS NULL OR fund_id = $3)
                         GROUP BY 1, 2)
                SELECT f.fund_id, days.day,
                       (f.budget_fen - coalesce(
                           (SELECT sum(t.amount_fen) FROM top_ups t
                            WHERE t.fund_id = f.fund_id AND t.day > days.day), 0))::bigint
                           AS budget_fen,
                       coalesce(daily.paid_fen, 0)::bigint AS paid_fen,
                       (coalesce(earlier.paid_fen, 0)
                        + sum(coalesce(daily.paid_fen, 0))
                              OVER (PARTITION BY f.fund_id ORDER BY days.day))::bigint
                           AS paid_cumulative_fen
                FROM funds f
                CROSS JOIN days
                LEFT JOIN daily ON daily.fund_id = f.fund_id AND daily.day = days.day
                LEFT JOIN earlier ON earlier.fund_id = f.fund_id
                WHERE ($3::text IS NULL OR f.fund_id = $3)
                ORDER BY f.fund_id, days.day""",
            first.isoformat(),
            last.isoformat(),
            fund_id,
        )
    )
