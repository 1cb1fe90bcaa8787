-- SQLite matches the list's states as ranges of this index.
CREATE INDEX requests_sponsored_by_state ON requests (state, created_at, id)
    WHERE sponsor IS NOT NULL;
