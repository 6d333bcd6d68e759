-- Issue 3: both claim kinds, 容缺受理 documents with deadlines, idempotency keys, tracker.

ALTER TABLE claims
    ADD COLUMN program_id         text,
    ADD COLUMN pending_documents  text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN documents_due_by   date,
    ADD COLUMN documents_due_at   timestamptz,
    ADD COLUMN holders            text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN decided_departments text[]     NOT NULL DEFAULT '{}',
    ADD COLUMN review_due_at      timestamptz,
    ADD COLUMN closed_reason      text;

-- A subsidy claim names its program; a refund never does.
ALTER TABLE claims ADD CONSTRAINT claims_program_iff_subsidy
    CHECK ((kind = 'subsidy') = (program_id IS NOT NULL));
ALTER TABLE claims ADD CONSTRAINT claims_status_known
    CHECK (status IN ('submitted', 'accepted_documents_pending', 'in_review',
                      'returned_for_documents', 'approved', 'approved_documents_pending',
                      'rejected', 'payout_requested', 'payout_sent', 'payout_failed', 'paid',
                      'withdrawn', 'lapsed'));
-- Pending documents always carry a deadline.
ALTER TABLE claims ADD CONSTRAINT claims_pending_has_deadline
    CHECK (cardinality(pending_documents) = 0 OR documents_due_at IS NOT NULL);

-- One live claim per enterprise, kind and tax period (refunds) or program (subsidies).
DROP INDEX claims_one_live_per_period;
CREATE UNIQUE INDEX claims_one_live ON claims (uscc, kind, (coalesce(program_id, tax_period)))
    WHERE status NOT IN ('rejected', 'withdrawn', 'lapsed');

-- What the lapse loop scans: live claims with documents outstanding, by deadline.
CREATE INDEX claims_documents_due ON claims (documents_due_at)
    WHERE cardinality(pending_documents) > 0;
CREATE INDEX claims_by_status ON claims (status, received_at);

-- The checklist of each claim: supplied at the window, promised (容缺), supplied later.
CREATE TABLE claim_documents (
    claim_id     uuid        NOT NULL REFERENCES claims (claim_id),
    document_id  text        NOT NULL,
    critical     boolean     NOT NULL,
    state        text        NOT NULL CHECK (state IN ('supplied', 'promised')),
    requested_by text        NOT NULL DEFAULT 'checklist',
    recorded_at  timestamptz NOT NULL,
    recorded_by  text        NOT NULL,
    supplied_at  timestamptz,
    PRIMARY KEY (claim_id, document_id),
    CHECK ((state = 'supplied') = (supplied_at IS NOT NULL)),
    CHECK (NOT (critical AND state = 'promised'))
);

-- Idempotency-Key on POSTs: the first response is kept with the hash of its request.
CREATE TABLE idempotency_keys (
    idempotency_key text PRIMARY KEY,
    request_hash    text        NOT NULL,
    status_code     int,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
