-- Issue 5: funds and budgets, vouchers and hops, waiting queue, audit, reconciliation.

-- Funds. Invariant 2 lives here: reserved + committed never exceeds the budget, and
-- every reservation is a conditional UPDATE under the fund's row lock. budget_fen NULL
-- means an uncapped fund (the treasury refund fund without a configured cap).
CREATE TABLE funds (
    fund_id        text PRIMARY KEY,
    claim_kind     text        NOT NULL CHECK (claim_kind IN ('vat_refund', 'subsidy')),
    name           text        NOT NULL,
    budget_fen     bigint      CHECK (budget_fen IS NULL OR budget_fen >= 0),
    reserved_fen   bigint      NOT NULL DEFAULT 0 CHECK (reserved_fen >= 0),
    committed_fen  bigint      NOT NULL DEFAULT 0 CHECK (committed_fen >= 0),
    paid_fen       bigint      NOT NULL DEFAULT 0 CHECK (paid_fen >= 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT funds_never_overspent
        CHECK (budget_fen IS NULL OR reserved_fen + committed_fen <= budget_fen),
    CONSTRAINT funds_paid_within_committed CHECK (paid_fen <= committed_fen)
);

-- Payouts: the statuses of the full state machine (docs/payout.md).
ALTER TABLE payouts DROP CONSTRAINT payouts_status_check;
ALTER TABLE payouts ADD CONSTRAINT payouts_status_check CHECK (status IN (
    'queued', 'held', 'requested', 'issued', 'accepted', 'sent', 'retrying',
    'paid', 'failed', 'returned', 'released'));
ALTER TABLE payouts
    ADD COLUMN fund_id           text REFERENCES funds (fund_id),
    ADD COLUMN program_id        text,
    ADD COLUMN voucher_kind      text
        CHECK (voucher_kind IN ('tax_refund_voucher', 'direct_payment_voucher')),
    ADD COLUMN documents_pending boolean     NOT NULL DEFAULT false,
    ADD COLUMN issue_no          integer     NOT NULL DEFAULT 1 CHECK (issue_no >= 1),
    ADD COLUMN attempts          integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN next_attempt_at   timestamptz,
    ADD COLUMN queue_seq         bigint UNIQUE,
    ADD COLUMN queued_at         timestamptz,
    ADD COLUMN held_at           timestamptz,
    ADD COLUMN reserved_at       timestamptz,
    ADD COLUMN issued_at         timestamptz,
    ADD COLUMN accepted_at       timestamptz,
    ADD COLUMN returned_at       timestamptz,
    ADD COLUMN released_at       timestamptz,
    ADD COLUMN release_reason    text,
    ADD COLUMN late_cancellation text,
    -- Invariant 1 across re-issues: arrived money never exceeds the approved amount.
    ADD COLUMN paid_amount_fen   bigint NOT NULL DEFAULT 0
        CHECK (paid_amount_fen >= 0 AND paid_amount_fen <= approved_amount_fen);
ALTER TABLE payouts ADD CONSTRAINT payouts_paid_means_arrived
    CHECK (status <> 'paid' OR paid_amount_fen = amount_fen);
DROP INDEX payouts_to_dispatch;
CREATE INDEX payouts_to_dispatch ON payouts (requested_at)
    WHERE status IN ('requested', 'retrying');
CREATE INDEX payouts_queue ON payouts (fund_id, queue_seq) WHERE status = 'queued';
CREATE INDEX payouts_fund_status ON payouts (fund_id, status);

CREATE SEQUENCE payout_queue_seq;

-- One voucher per issue of a payout: 税收收入退还书 (refunds) or 财政直接支付凭证 (subsidies).
CREATE TABLE vouchers (
    payout_id       uuid        NOT NULL REFERENCES payouts (payout_id),
    issue_no        integer     NOT NULL CHECK (issue_no >= 1),
    voucher_no      text        NOT NULL UNIQUE,
    voucher_kind    text        NOT NULL,
    amount_fen      bigint      NOT NULL CHECK (amount_fen > 0),
    bank_name       text        NOT NULL,
    account_name    text        NOT NULL,
    account_number  text        NOT NULL,
    issued_at       timestamptz NOT NULL,
    accepted_at     timestamptz,
    sent_at         timestamptz,
    arrived_at      timestamptz,
    failed_at       timestamptz,
    returned_at     timestamptz,
    outcome         text CHECK (outcome IN ('arrived', 'failed', 'returned')),
    reason          text,
    PRIMARY KEY (payout_id, issue_no)
);
-- At most one voucher of a payout is live or arrived: a re-issue needs the previous
-- one returned (or failed) first.
CREATE UNIQUE INDEX vouchers_one_live ON vouchers (payout_id)
    WHERE outcome IS NULL OR outcome = 'arrived';

-- Every step of every payout, with its time (hop by hop to 到账).
CREATE TABLE payout_hops (
    id          bigserial PRIMARY KEY,
    payout_id   uuid        NOT NULL REFERENCES payouts (payout_id),
    issue_no    integer     NOT NULL,
    attempt     integer     NOT NULL,
    hop         text        NOT NULL CHECK (hop IN (
        'queued', 'held', 'reserved', 'issued', 'accepted', 'sent', 'arrived',
        'failed_transient', 'failed', 'returned', 'account_corrected', 'released',
        'late_cancellation')),
    at          timestamptz NOT NULL,
    detail      text,
    UNIQUE (payout_id, issue_no, attempt, hop)
);

-- What intake said about a claim's documents, kept even before payout hears of the claim.
CREATE TABLE claim_documents (
    claim_id                uuid PRIMARY KEY,
    documents_completed_at  timestamptz,
    lapsed_at               timestamptz,
    withdrawn_at            timestamptz,
    reason                  text,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Finance staff's actions: top-ups and account corrections.
CREATE TABLE finance_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text        NOT NULL,
    action      text        NOT NULL CHECK (action IN ('top_up', 'account_correction')),
    fund_id     text REFERENCES funds (fund_id),
    payout_id   uuid REFERENCES payouts (payout_id),
    amount_fen  bigint,
    reason      text        NOT NULL,
    detail      jsonb       NOT NULL DEFAULT '{}'
);

-- Bank statements imported for reconciliation (format: docs/payout.md).
CREATE TABLE statements (
    statement_id  uuid PRIMARY KEY,
    imported_at   timestamptz NOT NULL DEFAULT now(),
    imported_by   text        NOT NULL,
    lines         integer     NOT NULL,
    duplicates    integer     NOT NULL
);
CREATE TABLE statement_lines (
    id              bigserial PRIMARY KEY,
    statement_id    uuid    NOT NULL REFERENCES statements (statement_id),
    value_date      date    NOT NULL,
    bank_reference  text    NOT NULL UNIQUE,
    end_to_end_id   text    NOT NULL,
    amount_fen      bigint  NOT NULL CHECK (amount_fen > 0),
    account_number  text    NOT NULL,
    direction       text    NOT NULL CHECK (direction IN ('debit', 'credit'))
);
CREATE INDEX statement_lines_date ON statement_lines (value_date);
