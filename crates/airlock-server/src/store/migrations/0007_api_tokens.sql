-- API tokens: only the SHA-256 of the secret is kept. The owner's rights
-- are read at each use (a token copies none of them); scopes only narrow
-- them. `last_used_at` is written at most once a minute per token (see
-- airlock-core's `token::record_use`), not on every call.
CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    -- Comma-separated: read, request, approve, admin, tokens.
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT,
    revoked_by TEXT
);
CREATE UNIQUE INDEX api_tokens_by_secret ON api_tokens (secret_sha256);
-- A name is unique among an owner's tokens that are not revoked.
CREATE UNIQUE INDEX api_tokens_owner_name ON api_tokens (owner, name) WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_by_creator ON api_tokens (created_by);

-- Which API token acted, and whether the actor is a service principal.
-- NULL on every event stored before (and on events of people signed in
-- otherwise); the hash covers each only when set, so old events verify.
ALTER TABLE audit_events ADD COLUMN token_id TEXT;
ALTER TABLE audit_events ADD COLUMN actor_kind TEXT;
