-- Outbox, inbox and dead letters: the reliability tables every service owns a copy of,
-- in its own schema (search_path is the service's schema when this runs).

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE,
    topic         text        NOT NULL,
    message_key   text,
    event_type    text        NOT NULL,
    payload       text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
-- The relay only ever looks for what is not yet published, in order.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE inbox (
    message_id    text        PRIMARY KEY,  -- the event id, or topic/partition/offset for unparsable ones
    event_type    text,
    source_topic  text        NOT NULL,
    source_partition integer  NOT NULL,
    source_offset bigint      NOT NULL,
    outcome       text        NOT NULL CHECK (outcome IN ('handled', 'ignored', 'dead_lettered')),
    received_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    dead_letter_id uuid        PRIMARY KEY,
    source_topic   text        NOT NULL,
    source_partition integer   NOT NULL,
    source_offset  bigint      NOT NULL,
    event_id       uuid,
    event_type     text,
    reason         text        NOT NULL,
    raw_value      text        NOT NULL,
    failed_at      timestamptz NOT NULL DEFAULT now()
);
