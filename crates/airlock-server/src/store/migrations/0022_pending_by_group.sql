-- Issue 17: an approver's inbox finds the pending requests that wait for
-- one of their groups without walking the others. Which groups a request
-- waits for sits in a text column (`approver_group_list`), where no index
-- can find one group; with thousands of requests pending for other
-- groups, the inbox read every one of them (42 ms on average, 888 ms at
-- worst, under load with five million requests).
--
-- One row per pending request and group of its current tier, kept by the
-- writer in the transaction that writes the request (`write_requests`):
-- a request has rows exactly while it is pending.
CREATE TABLE pending_approver_groups (
    request_id TEXT NOT NULL,
    approver_group TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (request_id, approver_group)
);
CREATE INDEX pending_by_group ON pending_approver_groups (approver_group, created_at, request_id);
