-- History retention deletes ended executions oldest end first; same index as PostgreSQL's.
CREATE INDEX IF NOT EXISTS executions_ended ON executions (completed_at, id) WHERE completed_at IS NOT NULL;
