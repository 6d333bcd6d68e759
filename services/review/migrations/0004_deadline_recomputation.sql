-- Issue 9, item 5: review deadlines can be recomputed when the working-day calendar
-- changes (`claimflow calendar recompute`): each keeps its length in working days, and
-- every change is recorded.
ALTER TABLE review_deadlines ADD COLUMN working_days int CHECK (working_days >= 1);

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
