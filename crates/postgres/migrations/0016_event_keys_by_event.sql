-- no-transaction
-- Why: deleting an event (event or history retention) deletes its keys (ON DELETE
-- CASCADE), found by this index instead of a scan of every key.
CREATE INDEX CONCURRENTLY IF NOT EXISTS event_keys_event ON event_keys (event_id);
