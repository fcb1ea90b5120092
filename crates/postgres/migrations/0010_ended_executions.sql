-- no-transaction
-- Why: history retention deletes ended executions oldest end first; without this index
-- each purge batch would scan every execution ever run.
CREATE INDEX CONCURRENTLY IF NOT EXISTS executions_ended ON executions (completed_at, id) WHERE completed_at IS NOT NULL;
