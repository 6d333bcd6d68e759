CREATE TABLE payouts (
    payout_id            uuid PRIMARY KEY,
    -- Invariant 1: never two payouts for one claim, whatever the code above does.
    claim_id             uuid        NOT NULL UNIQUE,
    claim_kind           text        NOT NULL,
    amount_fen           bigint      NOT NULL CHECK (amount_fen > 0),
    approved_amount_fen  bigint      NOT NULL CHECK (approved_amount_fen > 0),
    payee                jsonb       NOT NULL,
    status               text        NOT NULL
        CHECK (status IN ('requested', 'sent', 'paid', 'failed')),
    gateway_reference    text,
    failure_reason       text,
    claim_received_at    timestamptz NOT NULL,
    requested_at         timestamptz NOT NULL,
    sent_at              timestamptz,
    paid_at              timestamptz,
    failed_at            timestamptz,
    CHECK (amount_fen <= approved_amount_fen)
);
CREATE INDEX payouts_to_dispatch ON payouts (requested_at) WHERE status = 'requested';
