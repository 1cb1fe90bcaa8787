-- Nothing to add: `ON CONFLICT DO UPDATE` and `MERGE` fire the row-level
-- UPDATE/DELETE trigger of version 1, which refuses them, and TRUNCATE has
-- its statement-level trigger. Recorded on the table for whoever looks.
COMMENT ON TABLE audit_events IS 'append-only: UPDATE, DELETE, upserts and TRUNCATE are refused by triggers';
