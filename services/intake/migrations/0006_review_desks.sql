-- Issue 11: a department reviewer reads only the claims on their department's desk.
-- review_desks: every department review has put the claim before (the union of
-- the departments its review.stage_changed events into department_review named: at
-- arrival, and again when a returned claim resumes). A department stays here after it
-- decided: it had a task on the claim. Kept by the tracker in the transaction that
-- records review's event; the read queries filter on it (review_desks && $desks).
ALTER TABLE claims ADD COLUMN review_desks text[] NOT NULL DEFAULT '{}';

-- Claims tracked before this migration: the same union, from their timelines.
UPDATE claims c SET review_desks = d.departments
FROM (
    SELECT t.claim_id, array_agg(DISTINCT dep ORDER BY dep) AS departments
    FROM claim_timeline t
    CROSS JOIN LATERAL jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(t.payload -> 'departments') = 'array'
             THEN t.payload -> 'departments' ELSE '[]'::jsonb END) AS dep
    WHERE t.producer = 'review' AND t.event_type = 'review.stage_changed'
      AND t.payload ->> 'to_stage' = 'department_review'
    GROUP BY t.claim_id
) d
WHERE d.claim_id = c.claim_id;

-- A reviewer's claim list: "review_desks && ARRAY[...]" uses this index.
CREATE INDEX claims_by_review_desk ON claims USING gin (review_desks);
