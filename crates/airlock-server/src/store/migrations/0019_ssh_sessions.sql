-- SSH sessions recorded by the companion program on an SSH host
-- (`airlock-session`): one row per session, named by the id the companion
-- chose, so a record sent again (from its spool, after a lost answer) is
-- taken once. The recording (asciicast v2) is bounded by the core
-- (`ssh_session::MAX_RECORDING_BYTES`); `cut` says what was not kept.
CREATE TABLE ssh_sessions (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    host TEXT NOT NULL,
    unix_user TEXT NOT NULL,
    client TEXT NOT NULL,
    command TEXT,
    started_at BIGINT NOT NULL,
    ended_at BIGINT NOT NULL,
    ending TEXT NOT NULL,
    recording TEXT NOT NULL,
    recording_bytes BIGINT NOT NULL,
    recording_sent_bytes BIGINT NOT NULL,
    cut TEXT,
    received_at BIGINT NOT NULL,
    received_by TEXT NOT NULL
);
CREATE INDEX ssh_sessions_by_request ON ssh_sessions (request_id, started_at);
