-- The notification outbox: one row per message to send on one channel,
-- written in the same transaction as the change that causes it, so a
-- notification is never lost to a crash or a channel that is down.
-- `notification_key` is `<audit seq>-<topic>:<channel>`: the audit event that
-- caused it, what it is about and where it goes. It is also the message's
-- idempotency key, so a resend after a crash between sending and marking it
-- sent carries the same key.
CREATE TABLE notification_outbox (
    notification_key TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    topic TEXT NOT NULL,
    channel TEXT NOT NULL,
    request_id TEXT,
    -- What the message says (JSON object of text facts), fixed when decided.
    facts TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Not sent before this (Unix ms); the retry horizon counts from here.
    first_due BIGINT NOT NULL,
    -- pending | sent | failed | dropped
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    -- Set exactly while pending: when the next attempt may start.
    next_attempt_at BIGINT,
    -- A dispatcher's claim (like `requests.due_claimed_until`): until then
    -- other dispatchers pass the row over. Settling a row requires the claim.
    claimed_until BIGINT,
    last_error TEXT,
    settled_at BIGINT,
    updated_at BIGINT NOT NULL
);
-- Due work, earliest first; settled rows leave the index.
CREATE INDEX notification_outbox_due ON notification_outbox (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
-- Failures and the newest errors, for `airlock notifications`.
CREATE INDEX notification_outbox_state ON notification_outbox (state, updated_at);
