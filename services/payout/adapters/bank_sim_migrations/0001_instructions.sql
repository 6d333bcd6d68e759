-- The simulated treasury/bank keeps its own books: a payout id is paid at most once.
CREATE TABLE instructions (
    payout_id       uuid PRIMARY KEY,
    amount_fen      bigint      NOT NULL CHECK (amount_fen > 0),
    account_number  text        NOT NULL,
    account_name    text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('accepted', 'settled', 'failed')),
    received_at     timestamptz NOT NULL DEFAULT now(),
    settle_after    timestamptz NOT NULL,
    settled_at      timestamptz,
    failure_reason  text,
    notified        boolean     NOT NULL DEFAULT false
);
CREATE INDEX instructions_due ON instructions (settle_after) WHERE NOT notified;
