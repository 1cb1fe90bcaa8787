-- Signed webhook deliveries taken (the ticket system's), each remembered
-- until its timestamp alone would refuse it, so that a replay is refused on
-- every replica: taking one is a conditional insert on the primary key, and
-- each take first forgets those whose time has passed.
CREATE TABLE inbound_deliveries (
    delivery TEXT PRIMARY KEY,
    taken_at BIGINT NOT NULL,
    forget_after BIGINT NOT NULL
);
CREATE INDEX inbound_deliveries_forget ON inbound_deliveries (forget_after);
-- A closed ticket ends the unfinished requests asked for under it: found by
-- their ticket among the open requests (the condition of requests_one_open).
CREATE INDEX requests_open_by_ticket ON requests (ticket)
    WHERE state IN ('pending', 'approved', 'active');
