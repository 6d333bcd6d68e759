-- The payment loop polls when idle (dispatch_interval_s). A payout that becomes issuable
-- wakes it at once instead (issue 15: the poll was the largest part of a claim's
-- submit → paid time). One trigger covers every path that makes a payout `requested` —
-- a decision consumed, a top-up releasing the waiting queue, an approved account
-- correction — so no use case can forget it. pg_notify is delivered at commit, and
-- only then; repeated notifications in one transaction are folded into one.
CREATE FUNCTION wake_payment_loop() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('claimflow_payout_work', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER payouts_wake_payment_loop
    AFTER INSERT OR UPDATE OF status ON payouts
    FOR EACH ROW WHEN (NEW.status = 'requested')
    EXECUTE FUNCTION wake_payment_loop();
