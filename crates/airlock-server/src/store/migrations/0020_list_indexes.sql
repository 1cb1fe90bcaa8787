-- Issue 17: the lists people page through stay on indexes with millions of
-- requests and audit events. Each index ends with the list's own order, so
-- a page is a range of it: no scan of the table, no sort of what matched.

-- A requester's history: newest first, ties broken by id.
DROP INDEX requests_by_requester;
CREATE INDEX requests_by_requester ON requests (requester, created_at, id);

-- An approver's inbox (`RequestFilter::awaiting_approval_of`), one part per
-- way a request can wait for someone: pending requests in the list order,
-- active grants whose extension waits for approvers, and requests waiting
-- for their sponsor.
DROP INDEX requests_by_state;
CREATE INDEX requests_by_state ON requests (state, created_at, id);
CREATE INDEX requests_awaiting_extension ON requests (created_at, id)
    WHERE extension_approver_list <> '';
CREATE INDEX requests_awaiting_sponsor ON requests (sponsor_awaited, created_at, id)
    WHERE sponsor_awaited IS NOT NULL;

-- The audit log by user: events they did, and events about them, newest first.
CREATE INDEX audit_by_actor ON audit_events (actor, seq);
CREATE INDEX audit_by_subject ON audit_events (subject, seq);
