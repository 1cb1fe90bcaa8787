-- Reminders and escalation of a request waiting for approvers
-- (`request::WaitingPlan`), as JSON; NULL when it has none.
ALTER TABLE requests ADD COLUMN waiting TEXT;
