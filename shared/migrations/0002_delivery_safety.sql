-- Issue 9 (items 11-13): dead letters keep the raw bytes, outbox rows that cannot be sent
-- are quarantined instead of blocking the relay, and events of an unknown version are
-- held instead of dropped.

-- PostgreSQL text cannot hold a NUL byte; a producer's message can. bytea holds anything.
ALTER TABLE dead_letters ALTER COLUMN raw_value TYPE bytea USING convert_to(raw_value, 'UTF8');
ALTER TABLE dead_letters
    ADD COLUMN source_key  bytea,
    ADD COLUMN kind        text NOT NULL DEFAULT 'consumed',
    ADD COLUMN outbox_id   bigint,
    ADD COLUMN redriven_at timestamptz,
    -- consumed: a message this service read and could not apply (source_* say where);
    -- outbox: a row of this service's outbox the broker would not take (outbox_id).
    ADD CONSTRAINT dead_letters_kind CHECK (
        (kind = 'consumed' AND outbox_id IS NULL
            AND source_partition IS NOT NULL AND source_offset IS NOT NULL)
        OR (kind = 'outbox' AND outbox_id IS NOT NULL));
ALTER TABLE dead_letters
    ALTER COLUMN source_partition DROP NOT NULL,
    ALTER COLUMN source_offset DROP NOT NULL;
CREATE INDEX dead_letters_open ON dead_letters (failed_at) WHERE redriven_at IS NULL;

ALTER TABLE outbox
    ADD COLUMN attempts       integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN last_error     text,
    ADD COLUMN quarantined_at timestamptz,
    ADD CONSTRAINT outbox_published_or_quarantined
        CHECK (published_at IS NULL OR quarantined_at IS NULL);
DROP INDEX outbox_unpublished;
-- The relay only ever looks for what is neither published nor quarantined, in order.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL AND quarantined_at IS NULL;

-- Not the inbox (it must be applied later) and not a dead letter (nothing is wrong with it).
CREATE TABLE held_events (
    message_id       text        PRIMARY KEY,  -- the event id
    event_type       text        NOT NULL,
    version          integer     NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    source_key       bytea,
    raw_value        bytea       NOT NULL,
    reason           text        NOT NULL,
    held_at          timestamptz NOT NULL DEFAULT now()
);
