-- PostgreSQL prefers the index of open requests to ranges of a state
-- index; this one holds exactly the list's rows, in its order. The states
-- are written as the list writes them (literals, in this order).
CREATE INDEX requests_sponsored_open ON requests (created_at, id)
    WHERE sponsor IS NOT NULL AND state IN ('pending', 'approved', 'active');
