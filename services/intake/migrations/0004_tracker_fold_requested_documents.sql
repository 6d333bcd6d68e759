-- Issue 9: the tracker's status is a fold of the events it has seen, in arrival order
-- per producer (item 6); a department may ask again for any document, critical ones
-- included (item 4), or for an "other" document with a title (item 8); finance acts on
-- a failed payout by a deadline or closes the claim (item 7).

-- Arrival order on the timeline: one claim's events of one producer arrive in the
-- order that producer made them; occurred_at of different services is not an order.
ALTER TABLE claim_timeline ADD COLUMN seq bigint;
WITH ordered AS (
    SELECT event_id, row_number() OVER (ORDER BY recorded_at, occurred_at, event_id) AS n
    FROM claim_timeline)
UPDATE claim_timeline t SET seq = o.n FROM ordered o WHERE t.event_id = o.event_id;
CREATE SEQUENCE claim_timeline_seq OWNED BY claim_timeline.seq;
SELECT setval('claim_timeline_seq', coalesce((SELECT max(seq) FROM claim_timeline), 0) + 1,
              false);
ALTER TABLE claim_timeline ALTER COLUMN seq SET DEFAULT nextval('claim_timeline_seq'),
                           ALTER COLUMN seq SET NOT NULL;
CREATE INDEX claim_timeline_by_claim_seq ON claim_timeline (claim_id, seq);

-- A document asked for again by a department has its own state: 'requested' (critical
-- or not); 'promised' stays the window's 容缺 promise, never for a critical document.
ALTER TABLE claim_documents DROP CONSTRAINT claim_documents_state_check;
ALTER TABLE claim_documents ADD CONSTRAINT claim_documents_state_check
    CHECK (state IN ('supplied', 'promised', 'requested'));
ALTER TABLE claim_documents
    ADD COLUMN title text,
    ADD COLUMN requested_at timestamptz;
ALTER TABLE claim_documents ADD CONSTRAINT claim_documents_requested_by_department
    CHECK (state <> 'requested' OR requested_by <> 'checklist');

-- Finance closes a claim that cannot be paid: a final status that frees the slot.
ALTER TABLE claims DROP CONSTRAINT claims_status_known;
ALTER TABLE claims ADD CONSTRAINT claims_status_known
    CHECK (status IN ('submitted', 'accepted_documents_pending', 'in_review',
                      'returned_for_documents', 'approved', 'approved_documents_pending',
                      'rejected', 'payout_queued', 'payout_requested', 'payout_sent',
                      'payout_returned', 'payout_failed', 'paid', 'withdrawn', 'lapsed',
                      'closed'));
DROP INDEX claims_one_live;
CREATE UNIQUE INDEX claims_one_live ON claims (uscc, kind, (coalesce(program_id, tax_period)))
    WHERE status NOT IN ('rejected', 'withdrawn', 'lapsed', 'closed');

-- Who must act next outside review and the enterprise (finance, on a failed or returned
-- payment), and by when.
ALTER TABLE claims ADD COLUMN action_due_at timestamptz;
ALTER TABLE claims ADD CONSTRAINT claims_action_due_only_for_finance
    CHECK (action_due_at IS NULL OR status IN ('payout_failed', 'payout_returned'));
