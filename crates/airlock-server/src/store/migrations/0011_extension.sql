-- The latest extension of an active grant (`request::Extension`), as JSON;
-- NULL when none was asked for.
ALTER TABLE requests ADD COLUMN extension TEXT;
-- While an extension waits for approvers, the groups of its tiers and who
-- approved it, as `|a|b|` lists like version 5's (empty otherwise), so
-- `airlock pending` finds it in SQL.
ALTER TABLE requests ADD COLUMN extension_approver_list TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN extension_approved_by_list TEXT NOT NULL DEFAULT '';
