-- People and groups the identity provider provisions over SCIM 2.0.
-- `user_name_key` is the user name in lower case: SCIM user names are
-- unique regardless of case (RFC 7643 `caseExact: false`). Booleans are
-- 0/1 on both databases. `emails` is a JSON array.
CREATE TABLE directory_users (
    id TEXT PRIMARY KEY,
    user_name TEXT NOT NULL,
    user_name_key TEXT NOT NULL,
    external_id TEXT,
    display_name TEXT,
    emails TEXT NOT NULL,
    active BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE UNIQUE INDEX directory_users_by_name ON directory_users (user_name_key);
CREATE INDEX directory_users_by_external_id ON directory_users (external_id);

CREATE TABLE directory_groups (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    external_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL
);
CREATE INDEX directory_groups_by_name ON directory_groups (display_name);

CREATE TABLE directory_members (
    group_id TEXT NOT NULL REFERENCES directory_groups (id),
    user_id TEXT NOT NULL REFERENCES directory_users (id),
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX directory_members_by_user ON directory_members (user_id);

-- User names the identity provider deleted: refused at sign-in (a deleted
-- user's provider token may still be valid for a while) until a user of
-- that name is provisioned again.
CREATE TABLE directory_removed (
    user_name_key TEXT PRIMARY KEY,
    removed_at BIGINT NOT NULL
);
