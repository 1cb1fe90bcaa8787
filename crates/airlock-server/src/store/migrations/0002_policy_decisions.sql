-- Cedar policy decisions: a request needs every approval tier its policies
-- asked for (JSON list of {count, groups, policy}), and records which
-- version of the policy set decided it. `required_approvals` and
-- `approver_groups` stay as derived summaries (seats in all, union of groups).
ALTER TABLE requests ADD COLUMN approval_tiers TEXT NOT NULL DEFAULT '[]';
ALTER TABLE requests ADD COLUMN policy_version TEXT NOT NULL DEFAULT '';
-- Declared an emergency when requested (1) or not (0).
ALTER TABLE requests ADD COLUMN break_glass BIGINT NOT NULL DEFAULT 0;
-- The requester's SSH public key, for certificate-issuing connectors.
ALTER TABLE requests ADD COLUMN public_key TEXT;
-- A non-secret artifact the grant produced (an SSH certificate).
ALTER TABLE requests ADD COLUMN certificate TEXT;
