-- Why: a subject lets another decide their approval requests for a period
-- (docs/approvals.md, "Delegation"). A new table only: the previous release's reads are
-- unchanged.
CREATE TABLE IF NOT EXISTS delegations (
    id               uuid PRIMARY KEY,
    delegator        text NOT NULL,
    delegator_roles  text[] NOT NULL,
    delegate         text NOT NULL,
    workflow_key     text,
    role             text,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    reason           text,
    created_by       text NOT NULL,
    created_at       timestamptz NOT NULL,
    revoked_at       timestamptz,
    CHECK (ends_at > starts_at),
    CHECK (delegate <> delegator)
);
