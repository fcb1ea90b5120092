-- Why: approvers claim a request ("I'm on it") and operators assign it
-- (docs/approvals.md, "Claims and assignment"). One row per held request, kept after the
-- decision (it says who was on it) and deleted with the request. A new table only: the
-- previous release's reads are unchanged.
CREATE TABLE IF NOT EXISTS approval_assignments (
    approval_id  uuid PRIMARY KEY REFERENCES approvals(id) ON DELETE CASCADE,
    assignee     text NOT NULL,
    assigned_by  text NOT NULL,
    assigned_at  timestamptz NOT NULL
);
