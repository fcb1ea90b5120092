-- Why: approval steps give requests a priority and a due time (docs/approvals.md,
-- "Service levels"): inboxes list by due time and overdue requests are counted. One row
-- per request that has one, written in the gate's commit and deleted with the request.
-- The key is checked at commit: the gate's commit writes this row before the request.
-- A new table only: the previous release's reads are unchanged.
CREATE TABLE IF NOT EXISTS approval_sla (
    approval_id  uuid PRIMARY KEY REFERENCES approvals(id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    priority     text NOT NULL CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    due_at       timestamptz
);
