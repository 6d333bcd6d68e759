-- Issue 14: a replay reason of its own for rows the broker acknowledged but a reader did
-- not find at that offset (shared/messaging/outbox.py, OutboxRelay.verify_readable).
ALTER TABLE outbox_replays DROP CONSTRAINT outbox_replays_reason_check;
ALTER TABLE outbox_replays ADD CONSTRAINT outbox_replays_reason_check CHECK (reason IN (
    'log_end_below_mark', 'offset_regressed', 'cluster_changed', 'operator', 'unreadable'));
