-- REPLACE conflict resolution (`INSERT OR REPLACE`, `REPLACE INTO`) removes
-- the row in the way without firing DELETE triggers (recursive_triggers is
-- off), which would let an insert overwrite a stored event. An insert may
-- only add an event whose seq and rowid are both new. (`ON CONFLICT DO
-- UPDATE` fires the UPDATE trigger and is refused there as well.)
CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events
WHEN EXISTS (SELECT 1 FROM audit_events WHERE seq = NEW.seq OR rowid = NEW.rowid)
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;
