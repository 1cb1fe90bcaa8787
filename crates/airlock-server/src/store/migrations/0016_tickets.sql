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
-- their ticket (few requests share one). Not limited to the open requests:
-- an index with the condition of requests_one_open alone in its WHERE is one
-- the planner may take for the checks' lookups instead of that one.
CREATE INDEX requests_by_ticket ON requests (ticket) WHERE ticket IS NOT NULL;
