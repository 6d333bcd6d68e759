-- Issue 5: an instruction is keyed by (payout id, issue number). Retries after a transient
-- failure resubmit the same key; a re-issue after a returned payment is a new issue
-- number, accepted only when no other issue of the payout is live or settled.
ALTER TABLE instructions DROP CONSTRAINT instructions_pkey;
ALTER TABLE instructions ADD COLUMN issue_no integer NOT NULL DEFAULT 1;
ALTER TABLE instructions ADD COLUMN attempt integer NOT NULL DEFAULT 1;
ALTER TABLE instructions ADD PRIMARY KEY (payout_id, issue_no);
ALTER TABLE instructions DROP CONSTRAINT instructions_status_check;
ALTER TABLE instructions ADD CONSTRAINT instructions_status_check
    CHECK (status IN ('accepted', 'settled', 'failed', 'rejected', 'returned'));
-- The bank never pays one payout twice.
CREATE UNIQUE INDEX instructions_one_live_per_payout ON instructions (payout_id)
    WHERE status IN ('accepted', 'settled');

-- Asynchronous notices the bank sends back to the client that submitted the instruction
-- (the payout deployment, named by its schema), delivered until acknowledged.
CREATE TABLE notices (
    id          bigserial PRIMARY KEY,
    client      text        NOT NULL DEFAULT 'payout',
    payout_id   uuid        NOT NULL,
    issue_no    integer     NOT NULL,
    attempt     integer     NOT NULL,
    hop         text        NOT NULL
        CHECK (hop IN ('accepted', 'sent', 'arrived', 'failed', 'returned')),
    due_at      timestamptz NOT NULL,
    reason      text,
    permanent   boolean     NOT NULL DEFAULT false,
    bank_reference text     NOT NULL,
    notified    boolean     NOT NULL DEFAULT false,
    FOREIGN KEY (payout_id, issue_no) REFERENCES instructions (payout_id, issue_no)
);
CREATE INDEX notices_due ON notices (client, due_at) WHERE NOT notified;
