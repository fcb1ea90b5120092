-- Why: approvers ask questions and leave notes on a request without deciding it
-- (docs/approvals.md, "Comments"). A thread per request, kept after the decision and
-- deleted with the request. A new table only: the previous release's reads are unchanged.
CREATE TABLE IF NOT EXISTS approval_comments (
    approval_id  TEXT NOT NULL REFERENCES approvals(id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    author       TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (approval_id, id)
) STRICT, WITHOUT ROWID;
