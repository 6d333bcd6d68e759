-- Issue 13: the finance dashboard (GET /finance/dashboard) reads paid payouts by the
-- time they arrived: a range of Beijing days, and every payout paid before its last day
-- for the funds' cumulative paid. Only paid payouts have paid_at (a payout never un-pays),
-- so the index holds just them; the columns the dashboard sums and subtracts ride along
-- (an index-only scan instead of a visit to every payout row).
CREATE INDEX payouts_paid_at ON payouts (paid_at)
    INCLUDE (fund_id, paid_amount_fen, requested_at, claim_received_at)
    WHERE paid_at IS NOT NULL;
