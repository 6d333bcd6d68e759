-- The tracker shows two more payout states to the window: waiting for the program's
-- budget (payout_queued) and a payment the bank returned (payout_returned).
ALTER TABLE claims DROP CONSTRAINT claims_status_known;
ALTER TABLE claims ADD CONSTRAINT claims_status_known
    CHECK (status IN ('submitted', 'accepted_documents_pending', 'in_review',
                      'returned_for_documents', 'approved', 'approved_documents_pending',
                      'rejected', 'payout_queued', 'payout_requested', 'payout_sent',
                      'payout_returned', 'payout_failed', 'paid', 'withdrawn', 'lapsed'));
