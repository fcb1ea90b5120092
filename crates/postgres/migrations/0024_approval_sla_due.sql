-- no-transaction
-- Why: the overdue gauge counts pending requests past their due time; only requests
-- with a due time are in the index.
CREATE INDEX CONCURRENTLY IF NOT EXISTS approval_sla_due ON approval_sla (due_at) WHERE due_at IS NOT NULL;
