-- Open approvals of one execution (closed when it ends); same index as the PostgreSQL
-- migration.
CREATE INDEX approvals_pending_execution ON approvals (execution_id) WHERE status = 'pending';
