CREATE TABLE claims (
    claim_id             uuid PRIMARY KEY,
    kind                 text        NOT NULL CHECK (kind IN ('vat_refund', 'subsidy')),
    uscc                 text        NOT NULL CHECK (length(uscc) = 18),
    enterprise_name      text        NOT NULL,
    tax_period           text        NOT NULL,
    requested_amount_fen bigint      NOT NULL CHECK (requested_amount_fen > 0),
    eligible_amount_fen  bigint      NOT NULL CHECK (eligible_amount_fen >= 0),
    amount_note          text,
    details              jsonb       NOT NULL,
    payee                jsonb       NOT NULL,
    registered_by        text        NOT NULL,
    received_at          timestamptz NOT NULL,
    status               text        NOT NULL,
    status_changed_at    timestamptz NOT NULL
);
CREATE INDEX claims_by_uscc ON claims (uscc);
-- One enterprise, one live claim of a kind per period: enforced here, not only in Python.
CREATE UNIQUE INDEX claims_one_live_per_period ON claims (uscc, kind, tax_period)
    WHERE status NOT IN ('rejected', 'withdrawn', 'lapsed');

-- Every event about a claim, from every service: the tracker's timeline.
CREATE TABLE claim_timeline (
    event_id     uuid PRIMARY KEY,
    claim_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    producer     text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    payload      jsonb       NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX claim_timeline_by_claim ON claim_timeline (claim_id, occurred_at);
