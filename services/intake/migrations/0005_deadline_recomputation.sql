-- Issue 9, item 5: stored documents deadlines can be recomputed when the working-day
-- calendar changes (`claimflow calendar recompute`): each keeps what it was counted
-- from, and every change is recorded.
ALTER TABLE claims
    ADD COLUMN documents_due_from timestamptz,
    ADD COLUMN documents_due_days int CHECK (documents_due_days >= 1);
ALTER TABLE claims ADD CONSTRAINT claims_due_basis_together
    CHECK ((documents_due_from IS NULL) = (documents_due_days IS NULL));
-- Claims registered before this migration: their deadline was counted from the
-- registration, with the 5 working days every kind and program uses in programs.yaml.
UPDATE claims SET documents_due_from = received_at, documents_due_days = 5
    WHERE documents_due_at IS NOT NULL AND documents_due_from IS NULL;

CREATE TABLE deadline_recomputations (
    id              bigserial PRIMARY KEY,
    recomputed_at   timestamptz NOT NULL,
    recomputed_by   text        NOT NULL CHECK (recomputed_by <> ''),
    calendar_file   text        NOT NULL,
    calendar_digest text        NOT NULL,
    subject         text        NOT NULL,
    subject_id      text        NOT NULL,
    old_due_at      timestamptz,
    new_due_at      timestamptz NOT NULL,
    applied         boolean     NOT NULL,
    note            text
);
CREATE INDEX deadline_recomputations_by_subject ON deadline_recomputations (subject_id);
