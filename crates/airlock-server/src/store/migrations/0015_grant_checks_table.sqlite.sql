-- Checks of a grant move out of the wide `requests` row into a narrow
-- table of their own. Every second a replica adds the checks it counted to
-- thousands of grants at once; rewriting each grant's whole request row
-- for that cost about five times the work of a row that holds only the
-- counts (`airlock-bench check`), and the checks' latency paid for it.
-- Written only by `Store::add_checks`; a request without a row here was
-- never checked. WITHOUT ROWID: the rows are found by request id only.
CREATE TABLE grant_checks (
    request_id TEXT PRIMARY KEY,
    check_count BIGINT NOT NULL,
    last_checked_at BIGINT
) WITHOUT ROWID;
INSERT INTO grant_checks (request_id, check_count, last_checked_at)
    SELECT id, check_count, last_checked_at FROM requests
    WHERE check_count > 0 OR last_checked_at IS NOT NULL;
ALTER TABLE requests DROP COLUMN check_count;
ALTER TABLE requests DROP COLUMN last_checked_at;
