-- Issue 12 item 5: payout pays only what intake received and review decided.
--
-- What intake said when the claim was submitted (its signed claim.submitted), recorded in
-- the consumer's transaction, next to the inbox row: the facts an approval is checked
-- against (docs/payout.md, "What payout checks before it pays").
CREATE TABLE claim_submissions (
    claim_id             uuid PRIMARY KEY,
    event_id             uuid        NOT NULL,
    claim_kind           text        NOT NULL CHECK (claim_kind IN ('vat_refund', 'subsidy')),
    program_id           text,
    uscc                 text        NOT NULL CHECK (length(uscc) = 18),
    eligible_amount_fen  bigint      NOT NULL CHECK (eligible_amount_fen >= 0),
    payee                jsonb       NOT NULL,
    received_at          timestamptz NOT NULL,
    recorded_at          timestamptz NOT NULL,
    CHECK ((claim_kind = 'subsidy') = (program_id IS NOT NULL))
);

-- What each enterprise has been admitted for payment per program: two claims of one
-- enterprise can never together exceed the program's per-enterprise cap, whatever the
-- code above does (the cap is the catalogue's when the row last moved).
CREATE TABLE enterprise_cap_ledger (
    program_id  text   NOT NULL,
    uscc        text   NOT NULL,
    cap_fen     bigint NOT NULL CHECK (cap_fen > 0),
    used_fen    bigint NOT NULL DEFAULT 0 CHECK (used_fen >= 0),
    PRIMARY KEY (program_id, uscc),
    CONSTRAINT enterprise_cap_not_exceeded CHECK (used_fen <= cap_fen)
);

-- withheld: an approval payout refuses to pay until the facts agree or finance (two
-- people) releases or cancels it. Nothing is reserved for it and it is never issued.
ALTER TABLE payouts DROP CONSTRAINT payouts_status_check;
ALTER TABLE payouts ADD CONSTRAINT payouts_status_check CHECK (status IN (
    'queued', 'held', 'requested', 'issuing', 'issued', 'unknown', 'accepted', 'sent',
    'retrying', 'paid', 'failed', 'returned', 'released', 'withheld'));
ALTER TABLE payouts
    ADD COLUMN uscc             text,
    -- What this payout took of its enterprise's cap (given back when it is released).
    ADD COLUMN cap_charged_fen  bigint NOT NULL DEFAULT 0 CHECK (cap_charged_fen >= 0),
    ADD COLUMN withheld_reason  text CHECK (withheld_reason IN (
        'awaiting_intake', 'claim_mismatch', 'payee_mismatch', 'above_eligible',
        'above_cap')),
    ADD COLUMN withheld_detail  text,
    ADD COLUMN withheld_at      timestamptz;
ALTER TABLE payouts ADD CONSTRAINT payouts_withheld_has_reason CHECK (
    status <> 'withheld'
    OR (withheld_reason IS NOT NULL AND withheld_detail IS NOT NULL AND withheld_at IS NOT NULL));
-- A withheld payout has nothing reserved or committed and nothing at the bank.
ALTER TABLE payouts ADD CONSTRAINT payouts_withheld_unissued CHECK (
    status <> 'withheld' OR (attempts = 0 AND paid_amount_fen = 0 AND cap_charged_fen = 0));
CREATE INDEX payouts_withheld ON payouts (withheld_at) WHERE status = 'withheld';
CREATE INDEX payouts_awaiting_intake ON payouts (claim_id)
    WHERE status = 'withheld' AND withheld_reason = 'awaiting_intake';

ALTER TABLE payout_hops DROP CONSTRAINT payout_hops_hop_check;
ALTER TABLE payout_hops ADD CONSTRAINT payout_hops_hop_check CHECK (hop IN (
    'queued', 'held', 'reserved', 'issued', 'accepted', 'sent', 'arrived',
    'failed_transient', 'failed', 'returned', 'account_corrected', 'released',
    'late_cancellation', 'unknown', 'bank_status', 'withheld', 'admitted'));

-- Releasing (pay) or cancelling a withheld payout is dual control too: a request of one
-- finance person, applied when another approves it. A release may name the account to
-- pay (else intake's registered one).
ALTER TABLE finance_requests DROP CONSTRAINT finance_requests_kind_check;
ALTER TABLE finance_requests ADD CONSTRAINT finance_requests_kind_check
    CHECK (kind IN ('top_up', 'account_correction', 'hold_release', 'hold_cancel'));
ALTER TABLE finance_requests DROP CONSTRAINT finance_requests_shape;
ALTER TABLE finance_requests ADD CONSTRAINT finance_requests_shape CHECK (
    (kind = 'top_up' AND fund_id IS NOT NULL AND payout_id IS NULL AND payee IS NULL
        AND amount_fen > 0 AND amount_fen <= 1000000000000)
    OR (kind = 'account_correction' AND payout_id IS NOT NULL AND payee IS NOT NULL
        AND fund_id IS NULL AND amount_fen IS NULL)
    OR (kind = 'hold_release' AND payout_id IS NOT NULL AND fund_id IS NULL
        AND amount_fen IS NULL)
    OR (kind = 'hold_cancel' AND payout_id IS NOT NULL AND payee IS NULL AND fund_id IS NULL
        AND amount_fen IS NULL));

ALTER TABLE finance_audit DROP CONSTRAINT finance_audit_action_check;
ALTER TABLE finance_audit ADD CONSTRAINT finance_audit_action_check
    CHECK (action IN ('top_up', 'account_correction', 'close', 'top_up_requested',
                      'account_correction_requested', 'request_approved',
                      'request_rejected', 'hold_release_requested',
                      'hold_cancel_requested', 'hold_release', 'hold_cancel'));
