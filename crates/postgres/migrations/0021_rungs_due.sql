-- no-transaction
-- Why: the workers' rung claim reads the unfired rungs by due time.
CREATE INDEX CONCURRENTLY IF NOT EXISTS approval_rungs_due ON approval_rungs (due_at) WHERE fired_at IS NULL;
