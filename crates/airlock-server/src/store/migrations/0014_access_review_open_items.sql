-- The open items about one person, per campaign: the web UI's menu counts
-- the items a reviewer may decide on every page, which are their campaigns'
-- open items less those about themselves (nobody reviews their own access).
CREATE INDEX access_review_items_open_about ON access_review_items (principal, campaign)
    WHERE decision IS NULL;
