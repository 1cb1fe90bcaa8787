-- Access-review campaigns and their items (`airlock_core::access_review`).
-- A campaign's settings are fixed when it starts; its reminder, escalation
-- and completion are set once each, by conditional updates, so replicas
-- never take a step twice. `open_items` counts undecided items and moves
-- with each decision in the decision's transaction.
CREATE TABLE access_reviews (
    id TEXT PRIMARY KEY,
    template TEXT NOT NULL,
    started_by TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    due_at BIGINT NOT NULL,
    -- Group names, comma-separated (validated names hold no comma).
    reviewers TEXT NOT NULL,
    escalate_to TEXT NOT NULL,
    remind_at BIGINT,
    escalate_at BIGINT,
    reminded_at BIGINT,
    escalated_at BIGINT,
    completed_at BIGINT,
    items BIGINT NOT NULL,
    open_items BIGINT NOT NULL
);
-- The newest campaign of a template (is a scheduled one due?), and lists.
CREATE INDEX access_reviews_started ON access_reviews (template, started_at);
CREATE INDEX access_reviews_open ON access_reviews (started_at) WHERE completed_at IS NULL;

-- One row per item. `subject` is the item's subject as JSON (what it asks
-- about, fixed at start); `principal` and `entitlement` repeat an
-- eligibility's user and entitlement for the lookup at request time.
CREATE TABLE access_review_items (
    campaign TEXT NOT NULL,
    item BIGINT NOT NULL,
    kind TEXT NOT NULL,
    principal TEXT,
    entitlement TEXT,
    subject TEXT NOT NULL,
    decision TEXT,
    decided_by TEXT,
    decided_at BIGINT,
    comment TEXT,
    -- The decision's audit event: its place in the chain.
    decision_seq BIGINT,
    -- A removed holder's removal from its target.
    removal_attempts BIGINT NOT NULL DEFAULT 0,
    removal_error TEXT,
    removed_at BIGINT,
    PRIMARY KEY (campaign, item)
);
-- The latest decision about an eligibility, which a new request obeys.
CREATE INDEX access_review_items_eligibility ON access_review_items
    (principal, entitlement, decided_at) WHERE kind = 'eligibility' AND decision IS NOT NULL;
-- Removed holders not yet taken out of their targets.
CREATE INDEX access_review_items_removals ON access_review_items (campaign, item)
    WHERE kind = 'holder' AND decision = 'remove' AND removed_at IS NULL;
