-- Checks of a grant move out of the wide `requests` row into a narrow
-- table of their own (see the SQLite variant for why).
CREATE TABLE grant_checks (
    request_id TEXT PRIMARY KEY,
    check_count BIGINT NOT NULL,
    last_checked_at BIGINT
);
INSERT INTO grant_checks (request_id, check_count, last_checked_at)
    SELECT id, check_count, last_checked_at FROM requests
    WHERE check_count > 0 OR last_checked_at IS NOT NULL;
ALTER TABLE requests DROP COLUMN check_count;
ALTER TABLE requests DROP COLUMN last_checked_at;
