-- External principals (vendors). A request of one records their sponsor and
-- account end as they stood when they asked (`sponsor`, `account_expires`);
-- `sponsor_awaited` holds the sponsor while the request, or its extension,
-- waits for their approval (NULL otherwise), so the approval inbox's query
-- finds what waits for a sponsor the way `approver_group_list` finds what
-- waits for a group (the mirror of `AccessRequest::awaits_sponsor`).
ALTER TABLE requests ADD COLUMN sponsor TEXT;
ALTER TABLE requests ADD COLUMN account_expires BIGINT;
ALTER TABLE requests ADD COLUMN sponsor_awaited TEXT;
-- External principals' requests are few: found at start, when the config's
-- terms are checked against what they were made under.
CREATE INDEX requests_sponsored ON requests (created_at, id) WHERE sponsor IS NOT NULL;

-- What the identity provider says makes a provisioned user external: the
-- enterprise extension's `employeeType` (lower case; `vendor` is external),
-- the sponsor's user name (`sponsor_key` in lower case, to find the vendors
-- a leaving sponsor answers for) and the account's end.
ALTER TABLE directory_users ADD COLUMN employment TEXT;
ALTER TABLE directory_users ADD COLUMN sponsor TEXT;
ALTER TABLE directory_users ADD COLUMN sponsor_key TEXT;
ALTER TABLE directory_users ADD COLUMN account_expires BIGINT;
CREATE INDEX directory_users_by_sponsor ON directory_users (sponsor_key);
