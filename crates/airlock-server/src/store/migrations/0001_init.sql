-- Requests: one row per access request, the whole lifecycle in columns.
-- Timestamps are milliseconds since the Unix epoch (UTC).
CREATE TABLE requests (
    id TEXT PRIMARY KEY,
    requester TEXT NOT NULL,
    entitlement TEXT NOT NULL,
    state TEXT NOT NULL,
    duration_ms BIGINT NOT NULL,
    reason TEXT NOT NULL,
    ticket TEXT,
    start_at BIGINT,
    created_at BIGINT NOT NULL,
    required_approvals BIGINT NOT NULL,
    approver_groups TEXT NOT NULL,
    approvals TEXT NOT NULL,
    pending_deadline BIGINT NOT NULL,
    decided_at BIGINT,
    activates_at BIGINT,
    expires_at BIGINT,
    granted_at BIGINT,
    ended_at BIGINT,
    ended_by TEXT,
    end_note TEXT,
    job_action TEXT,
    job_attempts BIGINT,
    job_next_attempt_at BIGINT,
    job_claimed_until BIGINT,
    job_last_error TEXT,
    claim_token BIGINT NOT NULL,
    deprovisioned_at BIGINT,
    -- When the scheduler must next look at the row; NULL when nothing is due ever.
    due_at BIGINT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX requests_due ON requests (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX requests_by_requester ON requests (requester, created_at);
CREATE INDEX requests_by_state ON requests (state, created_at);
CREATE INDEX requests_by_created ON requests (created_at);
-- At most one unfinished request per user and entitlement: overlapping grants
-- of one role would let the first revocation cut the second short.
CREATE UNIQUE INDEX requests_one_open ON requests (requester, entitlement)
    WHERE state IN ('pending', 'approved', 'active');

-- Audit events: append-only and hash-chained (see airlock-core's audit module).
CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    request_id TEXT,
    entitlement TEXT,
    subject TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_by_request ON audit_events (request_id);
CREATE INDEX audit_by_at ON audit_events (at);
