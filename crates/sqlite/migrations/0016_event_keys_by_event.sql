-- Why: deleting an event (event or history retention) deletes its keys (ON DELETE
-- CASCADE), found by this index instead of a scan of every key. Same index as
-- PostgreSQL's.
CREATE INDEX IF NOT EXISTS event_keys_event ON event_keys (event_id);
