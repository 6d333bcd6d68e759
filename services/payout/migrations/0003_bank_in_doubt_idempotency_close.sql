-- Issue 9: payouts claimed for issue before the bank is called (issuing), payouts whose
-- bank call ended without an answer (unknown), how long a payout has been in its status,
-- Idempotency-Key for finance POSTs, and finance closing a payout that cannot be paid.

ALTER TABLE payouts DROP CONSTRAINT payouts_status_check;
ALTER TABLE payouts ADD CONSTRAINT payouts_status_check CHECK (status IN (
    'queued', 'held', 'requested', 'issuing', 'issued', 'unknown', 'accepted', 'sent',
    'retrying', 'paid', 'failed', 'returned', 'released'));

-- When the payout entered its current status: the stuck-payout gauge and the resolver's
-- lease on a claimed (issuing) payout read it. Kept by the database, so no code path can
-- forget it.
ALTER TABLE payouts ADD COLUMN status_at timestamptz NOT NULL DEFAULT now();
CREATE FUNCTION payouts_touch_status_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        NEW.status_at := clock_timestamp();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER payouts_status_at BEFORE UPDATE OF status ON payouts
    FOR EACH ROW EXECUTE FUNCTION payouts_touch_status_at();
CREATE INDEX payouts_in_doubt ON payouts (status_at)
    WHERE status IN ('issuing', 'issued', 'unknown');

ALTER TABLE payout_hops DROP CONSTRAINT payout_hops_hop_check;
ALTER TABLE payout_hops ADD CONSTRAINT payout_hops_hop_check CHECK (hop IN (
    'queued', 'held', 'reserved', 'issued', 'accepted', 'sent', 'arrived',
    'failed_transient', 'failed', 'returned', 'account_corrected', 'released',
    'late_cancellation', 'unknown', 'bank_status'));

ALTER TABLE finance_audit DROP CONSTRAINT finance_audit_action_check;
ALTER TABLE finance_audit ADD CONSTRAINT finance_audit_action_check
    CHECK (action IN ('top_up', 'account_correction', 'close'));

-- Idempotency-Key on finance POSTs (shared/idempotency.py): the first response is kept
-- with the hash of its request, in the transaction of the change itself.
CREATE TABLE idempotency_keys (
    idempotency_key text PRIMARY KEY,
    request_hash    text        NOT NULL,
    status_code     int,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
