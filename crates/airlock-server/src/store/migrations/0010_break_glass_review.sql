-- The review of a break-glass use (`request::Review`), as JSON; NULL for
-- any other request. `review_group_list` (`|a|b|`, like
-- `approver_group_list`) names the groups that may judge it now, for the
-- visibility filter; `review_open` is 1 while it awaits a verdict, for
-- `airlock reviews` and the metrics, which count those past `review_due_at`
-- as overdue.
ALTER TABLE requests ADD COLUMN review TEXT;
ALTER TABLE requests ADD COLUMN review_group_list TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN review_open INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN review_due_at BIGINT;
CREATE INDEX requests_review_open ON requests (review_open, created_at);
