-- Issue 15, item 4: two lookups on the claim path scanned whole tables, so their cost
-- grew with every claim ever reviewed (found with EXPLAIN on a database of 100,000
-- reviewed claims; docs/performance.md):
--
-- * review_tasks by claim_id (a decision's segregation check, its document titles, the
--   claim's review page, the segregation trigger): the only index leading with claim_id
--   is review_tasks_one_per_department, partial (WHERE status <> 'returned'), which a
--   query that does not say status <> 'returned' cannot use;
-- * review_deadlines by task_id (closing a decided task's deadline, the worklist's
--   "escalated" flag for every task it lists): no index at all.
CREATE INDEX IF NOT EXISTS review_tasks_by_claim ON review_tasks (claim_id);
CREATE INDEX IF NOT EXISTS review_deadlines_by_task ON review_deadlines (task_id) WHERE task_id IS NOT NULL;
-- IF NOT EXISTS: on a large live database build them first by hand with CREATE INDEX
-- CONCURRENTLY (same names); this migration then only records itself.
