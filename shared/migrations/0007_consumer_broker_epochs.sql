-- Issue 14: the cluster id under which this service's consumer last read each partition
-- (shared/messaging/epochs.py). A partition assigned under another cluster id belongs to
-- a replaced log (a memory broker restarted): it is read again from its beginning.
CREATE TABLE consumer_broker_epochs (
    topic       text    NOT NULL,
    partition   integer NOT NULL CHECK (partition >= 0),
    cluster_id  text    NOT NULL CHECK (cluster_id <> ''),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);
