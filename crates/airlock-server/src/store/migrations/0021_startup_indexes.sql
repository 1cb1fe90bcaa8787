-- Issue 17: a restart reads only the requests it has to settle, not the
-- whole table. With five million requests each of these reads took
-- seconds (4 s and 0.8 s on SQLite), which a restart waited for.

-- Requests with connector work outstanding: at start, a single process
-- settles the attempts a previous process left in flight
-- (`Engine::recover_lost_attempts`).
CREATE INDEX requests_connector_work ON requests (created_at, id)
    WHERE job_action IS NOT NULL;

-- External principals' open requests, whose terms are settled against the
-- config at start (`Engine::settle_external_terms`): an index of theirs
-- alone, where the state index, or the index of open requests, would walk
-- every open request. Each planner takes a different one
-- (0021_startup_indexes.sqlite.sql, .postgres.sql).
