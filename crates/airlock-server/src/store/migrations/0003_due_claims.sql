-- A replica's claim on a request's due work (expiry, scheduled start, retry,
-- timeout): until this instant (Unix ms) other replicas' schedulers pass the
-- row over. Claims only spread the work: what is claimed is re-decided under
-- the write lock when it runs, and the request's next change ends the claim.
-- Deliberately not indexed, so that on PostgreSQL setting a claim can be a
-- heap-only update that touches no index.
ALTER TABLE requests ADD COLUMN due_claimed_until BIGINT;
