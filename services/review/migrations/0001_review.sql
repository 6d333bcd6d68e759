CREATE TABLE review_cases (
    claim_id             uuid PRIMARY KEY,
    kind                 text        NOT NULL,
    uscc                 text        NOT NULL,
    enterprise_name      text        NOT NULL,
    requested_amount_fen bigint      NOT NULL CHECK (requested_amount_fen > 0),
    eligible_amount_fen  bigint      NOT NULL CHECK (eligible_amount_fen >= 0),
    payee                jsonb       NOT NULL,
    claim_received_at    timestamptz NOT NULL,
    registered_by        text        NOT NULL,
    status               text        NOT NULL CHECK (status IN ('in_review', 'approved', 'rejected')),
    approved_amount_fen  bigint      CHECK (approved_amount_fen >= 0),
    decision_reason      text,
    decided_at           timestamptz,
    CHECK (approved_amount_fen IS NULL OR approved_amount_fen <= requested_amount_fen)
);

CREATE TABLE review_tasks (
    task_id      uuid PRIMARY KEY,
    claim_id     uuid        NOT NULL REFERENCES review_cases (claim_id),
    department   text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    due_at       timestamptz NOT NULL,
    decided_by   text,
    decided_at   timestamptz,
    comment      text,
    UNIQUE (claim_id, department),
    CHECK ((status IN ('approved', 'rejected')) = (decided_by IS NOT NULL))
);
-- Segregation of duties: one person decides for at most one department of a claim.
CREATE UNIQUE INDEX review_tasks_one_department_per_person ON review_tasks (claim_id, decided_by)
    WHERE decided_by IS NOT NULL;
CREATE INDEX review_tasks_worklist ON review_tasks (department, due_at) WHERE status = 'pending';

-- Segregation of duties: whoever registered a claim at the window cannot review it.
CREATE FUNCTION review_tasks_not_registrant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.decided_by IS NOT NULL AND NEW.decided_by = (
        SELECT registered_by FROM review_cases WHERE claim_id = NEW.claim_id) THEN
        RAISE EXCEPTION 'the registrant of claim % cannot review it', NEW.claim_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'review_tasks_not_registrant';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER review_tasks_not_registrant BEFORE INSERT OR UPDATE ON review_tasks
    FOR EACH ROW EXECUTE FUNCTION review_tasks_not_registrant();
