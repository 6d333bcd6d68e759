-- Dual control (maker-checker) on money: a top-up or an account correction is first a
-- request by one person and takes effect only when another person approves it. The
-- four-eyes rule and the shape of each kind live here too, so no code path (nor a
-- direct UPDATE) can let a requester decide their own request.
CREATE TABLE finance_requests (
    request_id    uuid PRIMARY KEY,
    kind          text        NOT NULL CHECK (kind IN ('top_up', 'account_correction')),
    fund_id       text REFERENCES funds (fund_id),
    payout_id     uuid REFERENCES payouts (payout_id),
    amount_fen    bigint,
    payee         jsonb,
    reason        text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    requested_by  text        NOT NULL CHECK (requested_by <> ''),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    status        text        NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_by    text,
    decided_at    timestamptz,
    comment       text CHECK (comment IS NULL OR length(comment) <= 500),
    -- A top-up names a fund and a positive amount (at most 10,000,000,000 yuan in fen:
    -- the hard ceiling; the configurable per-request maximum is checked by the API);
    -- a correction names a payout and the new payee.
    CONSTRAINT finance_requests_shape CHECK (
        (kind = 'top_up' AND fund_id IS NOT NULL AND payout_id IS NULL AND payee IS NULL
            AND amount_fen > 0 AND amount_fen <= 1000000000000)
        OR (kind = 'account_correction' AND payout_id IS NOT NULL AND payee IS NOT NULL
            AND fund_id IS NULL AND amount_fen IS NULL)),
    CONSTRAINT finance_requests_decided CHECK (
        (status = 'pending' AND decided_by IS NULL AND decided_at IS NULL)
        OR (status <> 'pending' AND decided_by IS NOT NULL AND decided_at IS NOT NULL)),
    CONSTRAINT finance_requests_four_eyes CHECK (decided_by IS NULL OR decided_by <> requested_by)
);
CREATE INDEX finance_requests_pending ON finance_requests (requested_at)
    WHERE status = 'pending';

ALTER TABLE finance_audit DROP CONSTRAINT finance_audit_action_check;
ALTER TABLE finance_audit ADD CONSTRAINT finance_audit_action_check
    CHECK (action IN ('top_up', 'account_correction', 'close', 'top_up_requested',
                      'account_correction_requested', 'request_approved',
                      'request_rejected'));
