-- Payout withholds an approval that is not what intake received (issue 12 item 5): the
-- tracker shows it as its own status, held by finance with a deadline, instead of
-- "approved" for good.
ALTER TABLE claims DROP CONSTRAINT claims_status_known;
ALTER TABLE claims ADD CONSTRAINT claims_status_known
    CHECK (status IN ('submitted', 'accepted_documents_pending', 'in_review',
                      'returned_for_documents', 'approved', 'approved_documents_pending',
                      'rejected', 'payout_queued', 'payout_requested', 'payout_sent',
                      'payout_returned', 'payout_failed', 'payout_withheld', 'paid',
                      'withdrawn', 'lapsed', 'closed'));
ALTER TABLE claims DROP CONSTRAINT claims_action_due_only_for_finance;
ALTER TABLE claims ADD CONSTRAINT claims_action_due_only_for_finance
    CHECK (action_due_at IS NULL
           OR status IN ('payout_failed', 'payout_returned', 'payout_withheld'));
