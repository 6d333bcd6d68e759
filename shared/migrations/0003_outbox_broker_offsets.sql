-- Issue 14, 1(a): the database is the source of truth and the broker a replaceable
-- transport. The relay records where the broker put every row it acknowledged, keeps
-- published rows for a retention period, and publishes again the rows a broker lost.

ALTER TABLE outbox
    ADD COLUMN published_partition integer,
    ADD COLUMN published_offset    bigint,
    -- How often this row was put back for publishing (broker lost it, or an operator's
    -- `claimflow outbox replay`).
    ADD COLUMN replays             integer NOT NULL DEFAULT 0 CHECK (replays >= 0),
    ADD CONSTRAINT outbox_landed_only_when_published CHECK (
        (published_partition IS NULL AND published_offset IS NULL)
        OR (published_at IS NOT NULL AND published_partition IS NOT NULL
            AND published_offset IS NOT NULL));
-- Finding the rows at or after an offset the broker no longer has.
CREATE INDEX outbox_landed ON outbox (topic, published_partition, published_offset)
    WHERE published_offset IS NOT NULL;
-- Retention (deleting old published rows) and `outbox replay --since`.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Per topic-partition, what the broker acknowledged to this outbox. max_offset: the
-- highest offset; a later acknowledgement at or below it means the log was lost and
-- begun again. cycle_offset: the lowest offset acknowledged in the latest relay cycle; a
-- log-end offset below it (or 0) means the broker lost acknowledged messages. (Not max_offset:
-- tansu 0.6 reports a partition's log-end offset as the base offset of its last record
-- batch plus one on memory storage, and as low as that base offset on S3.)
CREATE TABLE outbox_broker_marks (
    topic         text    NOT NULL,
    partition     integer NOT NULL CHECK (partition >= 0),
    max_offset    bigint  NOT NULL CHECK (max_offset >= 0),
    cycle_offset  bigint  NOT NULL CHECK (cycle_offset >= 0 AND cycle_offset <= max_offset),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- The cluster the relay last published to: a new cluster id is a new, empty broker.
CREATE TABLE outbox_broker_cluster (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    cluster_id  text    NOT NULL,
    seen_at     timestamptz NOT NULL DEFAULT now()
);

-- Every replay, by the relay (detected loss) or by an operator.
CREATE TABLE outbox_replays (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    reason       text    NOT NULL CHECK (reason IN (
        'log_end_below_mark', 'offset_regressed', 'cluster_changed', 'operator')),
    topic        text,
    partition    integer,
    from_offset  bigint,
    rows         integer NOT NULL CHECK (rows >= 0),
    detail       text    NOT NULL
);
