-- How often each grant was checked (`GET /v1/check`) and when last. Each
-- replica counts checks in memory and adds them here in batches, about once
-- a second (`Store::add_checks`); a request's own changes never write these
-- columns, so neither overwrites the other. The check itself finds the one
-- open request of a principal and entitlement through `requests_one_open`.
ALTER TABLE requests ADD COLUMN check_count BIGINT NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN last_checked_at BIGINT;
