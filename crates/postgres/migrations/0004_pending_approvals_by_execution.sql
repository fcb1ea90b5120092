-- Closing an ending execution's open approvals looks them up by execution among the
-- pending ones. With only `approvals_execution` and `approvals_pending`, PostgreSQL's
-- planner may AND both bitmaps — reading every pending approval of the system for each
-- ending execution. One partial index answers the lookup exactly.
CREATE INDEX approvals_pending_execution ON approvals (execution_id) WHERE status = 'pending';
