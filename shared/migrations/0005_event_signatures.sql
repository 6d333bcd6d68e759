-- Issue 12 item 4 (shared/messaging/signing.py): the signature made when an event is
-- staged travels with its outbox row to the relay, which sends it as Kafka headers; a
-- dead letter and a held event keep the signature they arrived with, so a re-drive
-- publishes the same bytes with the same signature (and a forgery stays refused).
ALTER TABLE outbox
    ADD COLUMN key_id    text,
    ADD COLUMN signature text,
    ADD CONSTRAINT outbox_signed_both CHECK ((key_id IS NULL) = (signature IS NULL));
ALTER TABLE dead_letters
    ADD COLUMN source_key_id    text,
    ADD COLUMN source_signature text;
ALTER TABLE held_events
    ADD COLUMN source_key_id    text,
    ADD COLUMN source_signature text;
