-- Joint review in full: cross-checks (联核), department review (联审), sign-off (联批),
-- deadlines (限时办结) and segregation of duties enforced here, not only in Python.

-- The case's status is its stage.
ALTER TABLE review_cases DROP CONSTRAINT review_cases_status_check;
UPDATE review_cases SET status = 'department_review' WHERE status = 'in_review';
ALTER TABLE review_cases ADD CONSTRAINT review_cases_status_check CHECK (status IN (
    'cross_check', 'department_review', 'returned', 'sign_off',
    'approved', 'rejected', 'withdrawn', 'lapsed'));
ALTER TABLE review_cases
    ADD COLUMN program_id text,
    ADD COLUMN fund text,
    ADD COLUMN tax_period text,
    ADD COLUMN pending_documents text[] NOT NULL DEFAULT '{}',
    ADD COLUMN documents_due_by date,
    ADD COLUMN returned_documents text[] NOT NULL DEFAULT '{}',
    ADD COLUMN cross_check_result text CHECK (cross_check_result IN ('pass', 'warn', 'fail')),
    ADD COLUMN findings jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN recommended_amount_fen bigint CHECK (recommended_amount_fen >= 0),
    ADD COLUMN stage_started_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE review_cases ADD CONSTRAINT review_cases_final_has_decision CHECK (
    (status IN ('approved', 'rejected')) = (decided_at IS NOT NULL));
ALTER TABLE review_cases ADD CONSTRAINT review_cases_approved_has_amount CHECK (
    status <> 'approved' OR approved_amount_fen > 0);
CREATE INDEX review_cases_duplicates ON review_cases (uscc, tax_period);

-- Tasks: department tasks (stage 2) and sign-off tasks (stage 3, department 'sign_off').
ALTER TABLE review_tasks DROP CONSTRAINT review_tasks_status_check;
ALTER TABLE review_tasks ADD CONSTRAINT review_tasks_status_check CHECK (
    status IN ('pending', 'approved', 'rejected', 'returned', 'cancelled'));
ALTER TABLE review_tasks DROP CONSTRAINT review_tasks_check;
ALTER TABLE review_tasks ADD CONSTRAINT review_tasks_decided_by_decision CHECK (
    (status IN ('approved', 'rejected', 'returned')) = (decided_by IS NOT NULL));
ALTER TABLE review_tasks
    ADD COLUMN stage text NOT NULL DEFAULT 'department_review'
        CHECK (stage IN ('department_review', 'sign_off')),
    ADD COLUMN decided_role text,
    ADD COLUMN documents text[] NOT NULL DEFAULT '{}';
ALTER TABLE review_tasks ADD CONSTRAINT review_tasks_sign_off_department CHECK (
    (stage = 'sign_off') = (department = 'sign_off'));
-- Only a person with the approver role signs off.
ALTER TABLE review_tasks ADD CONSTRAINT review_tasks_sign_off_by_approver CHECK (
    stage <> 'sign_off' OR decided_by IS NULL OR decided_role = 'approver');
ALTER TABLE review_tasks ADD CONSTRAINT review_tasks_only_departments_return CHECK (
    status <> 'returned' OR stage = 'department_review');
-- A department returned for documents gets a new task when they arrive; the returned
-- one stays as history. At most one live or decided task per department and claim.
ALTER TABLE review_tasks DROP CONSTRAINT review_tasks_claim_id_department_key;
CREATE UNIQUE INDEX review_tasks_one_per_department ON review_tasks (claim_id, department)
    WHERE status <> 'returned';
-- The same reviewer may decide the re-opened task of their own department, so the
-- (claim_id, decided_by) unique index of 0001 gives way to the trigger below.
DROP INDEX review_tasks_one_department_per_person;
DROP TRIGGER review_tasks_not_registrant ON review_tasks;
DROP FUNCTION review_tasks_not_registrant();

-- Segregation of duties, for every write to a task, however it is made:
--  * whoever registered the claim cannot decide any of its tasks;
--  * one person decides for at most one department of a claim;
--  * the approver who signs off (department 'sign_off') was none of its reviewers.
-- The case row is locked first, so two concurrent decisions on one claim are checked
-- one after the other (READ COMMITTED: the second sees the first once it commits).
CREATE FUNCTION review_tasks_segregation() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    registrant text;
    other_department text;
BEGIN
    IF NEW.decided_by IS NULL THEN
        RETURN NEW;
    END IF;
    SELECT registered_by INTO registrant FROM review_cases
        WHERE claim_id = NEW.claim_id FOR UPDATE;
    IF NEW.decided_by = registrant THEN
        RAISE EXCEPTION 'the registrant of claim % cannot review it', NEW.claim_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'review_segregation_registrant';
    END IF;
    SELECT department INTO other_department FROM review_tasks
        WHERE claim_id = NEW.claim_id AND decided_by = NEW.decided_by
          AND department <> NEW.department AND task_id <> NEW.task_id
        LIMIT 1;
    IF other_department IS NOT NULL THEN
        IF NEW.department = 'sign_off' OR other_department = 'sign_off' THEN
            RAISE EXCEPTION 'the approver of claim % cannot be one of its reviewers', NEW.claim_id
                USING ERRCODE = 'check_violation', CONSTRAINT = 'review_segregation_approver';
        END IF;
        RAISE EXCEPTION '% already decided for % on claim %',
            NEW.decided_by, other_department, NEW.claim_id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'review_segregation_one_department';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER review_tasks_segregation BEFORE INSERT OR UPDATE ON review_tasks
    FOR EACH ROW EXECUTE FUNCTION review_tasks_segregation();

-- Deadlines (限时办结) live here, not in memory timers: the scheduler marks each
-- warning and escalation with a conditional UPDATE in the transaction of its event.
CREATE TABLE review_deadlines (
    deadline_id   bigserial PRIMARY KEY,
    claim_id      uuid        NOT NULL REFERENCES review_cases (claim_id),
    task_id       uuid        REFERENCES review_tasks (task_id),
    scope         text        NOT NULL CHECK (scope IN ('task', 'stage')),
    stage         text        NOT NULL CHECK (stage IN ('department_review', 'sign_off')),
    department    text,
    started_at    timestamptz NOT NULL,
    warn_at       timestamptz NOT NULL,
    due_at        timestamptz NOT NULL,
    warned_at     timestamptz,
    escalated_at  timestamptz,
    closed_at     timestamptz,
    CHECK (started_at <= warn_at AND warn_at <= due_at),
    CHECK ((scope = 'task') = (task_id IS NOT NULL))
);
CREATE INDEX review_deadlines_to_warn ON review_deadlines (warn_at)
    WHERE warned_at IS NULL AND escalated_at IS NULL AND closed_at IS NULL;
CREATE INDEX review_deadlines_to_escalate ON review_deadlines (due_at)
    WHERE escalated_at IS NULL AND closed_at IS NULL;
CREATE INDEX review_deadlines_claim ON review_deadlines (claim_id) WHERE closed_at IS NULL;
