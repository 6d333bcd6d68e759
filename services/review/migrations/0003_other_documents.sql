-- Issue 9, item 8: a return names checklist documents or "other-N" documents with a
-- title; the titles are kept with the task that asked for them.
ALTER TABLE review_tasks ADD COLUMN document_titles jsonb NOT NULL DEFAULT '{}';
ALTER TABLE review_tasks ADD CONSTRAINT review_tasks_titles_only_for_returns
    CHECK (document_titles = '{}' OR status = 'returned');
