-- Why: a subject lets another decide their approval requests for a period
-- (docs/approvals.md, "Delegation"). A new table only: the previous release's reads are
-- unchanged.
CREATE TABLE IF NOT EXISTS delegations (
    id               TEXT PRIMARY KEY,
    delegator        TEXT NOT NULL,
    delegator_roles  TEXT NOT NULL,
    delegate         TEXT NOT NULL,
    workflow_key     TEXT,
    role             TEXT,
    starts_at        INTEGER NOT NULL,
    ends_at          INTEGER NOT NULL,
    reason           TEXT,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    revoked_at       INTEGER,
    CHECK (ends_at > starts_at),
    CHECK (delegate <> delegator)
) STRICT, WITHOUT ROWID;
