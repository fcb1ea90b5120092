-- Tollgate schema, SQLite form. Mirrors migrations/postgres/0001_initial.sql in meaning:
-- timestamps are INTEGER microseconds since the Unix epoch (UTC), UUIDs are TEXT,
-- JSON is TEXT read with the json_* functions where queries need it.

CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY,              -- SHA-256 of the canonical definition
    definition  TEXT NOT NULL CHECK (json_valid(definition)),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE workflows (
    id             TEXT PRIMARY KEY,
    workflow_id    TEXT NOT NULL,
    version        TEXT NOT NULL,
    enabled        INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    definition     TEXT NOT NULL CHECK (json_valid(definition)),
    snapshot_id    TEXT NOT NULL REFERENCES snapshots(id),
    tags           TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags)),
    event_pattern  TEXT,                        -- trigger.event for event triggers
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (workflow_id, version)
) STRICT;
CREATE INDEX workflows_event ON workflows (event_pattern) WHERE enabled = 1 AND event_pattern IS NOT NULL;

CREATE TABLE executions (
    id                TEXT PRIMARY KEY,
    workflow_id       TEXT NOT NULL,            -- no FK: executions outlive deleted workflows
    workflow_key      TEXT NOT NULL,
    workflow_version  TEXT NOT NULL,
    snapshot_id       TEXT NOT NULL REFERENCES snapshots(id),
    status            TEXT NOT NULL CHECK (status IN ('running', 'paused', 'waiting', 'completed', 'failed', 'cancelled', 'timed_out')),
    result            TEXT CHECK (result IN ('allowed', 'blocked', 'executed')),
    trigger_event     TEXT NOT NULL,
    trigger_payload   TEXT NOT NULL CHECK (json_valid(trigger_payload)),
    context           TEXT NOT NULL CHECK (json_valid(context)),
    cursor            TEXT CHECK (cursor IS NULL OR json_valid(cursor)),
    visits            TEXT NOT NULL CHECK (json_valid(visits)),
    steps_run         INTEGER NOT NULL CHECK (steps_run >= 0),
    version           INTEGER NOT NULL CHECK (version >= 1),
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    gate              TEXT CHECK (gate IS NULL OR json_valid(gate)),
    gate_reason       TEXT CHECK (gate_reason IN ('approval', 'manual', 'event')),
    gate_deadline     INTEGER,
    gate_event        TEXT,
    gate_approval_id  TEXT,
    paused_at         INTEGER,
    wake              TEXT CHECK (wake IS NULL OR json_valid(wake)),
    pause_requested   INTEGER NOT NULL CHECK (pause_requested IN (0, 1)),
    deadline          INTEGER,
    resume_count      INTEGER NOT NULL CHECK (resume_count >= 0),
    last_resumed_at   INTEGER,
    started_at        INTEGER NOT NULL,
    completed_at      INTEGER,
    updated_at        INTEGER NOT NULL,
    error             TEXT CHECK (error IS NULL OR json_valid(error)),
    requested_by      TEXT,
    consumed_events   TEXT NOT NULL CHECK (json_valid(consumed_events)),
    commit_token      TEXT,                     -- random per commit: lets one-statement commits tie their step rows to their own update
    -- a gated execution has its gate (a claimed one keeps it until the engine acts on
    -- its wake signal); a running one has a lease; an ended one has neither
    CHECK (status NOT IN ('paused', 'waiting') OR (gate IS NOT NULL AND paused_at IS NOT NULL)),
    CHECK (status <> 'running' OR lease_expires_at IS NOT NULL),
    CHECK (status NOT IN ('completed', 'failed', 'cancelled', 'timed_out') OR (completed_at IS NOT NULL AND lease_owner IS NULL))
) STRICT;
-- The hot queries, as partial indexes.
CREATE INDEX executions_gate_due ON executions (gate_deadline) WHERE status IN ('paused', 'waiting') AND gate_deadline IS NOT NULL;
CREATE INDEX executions_lease_due ON executions (lease_expires_at) WHERE status = 'running';
CREATE INDEX executions_deadline ON executions (deadline) WHERE status IN ('running', 'paused', 'waiting') AND deadline IS NOT NULL;
CREATE INDEX executions_gated ON executions (paused_at, id) WHERE status IN ('paused', 'waiting');
CREATE INDEX executions_waiting_event ON executions (gate_event, id) WHERE status = 'waiting';
CREATE INDEX executions_status ON executions (status, id);
CREATE INDEX executions_workflow_key ON executions (workflow_key, id);
CREATE INDEX executions_workflow ON executions (workflow_id, id);

CREATE TABLE step_records (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,   -- creation order
    id              TEXT NOT NULL UNIQUE,
    execution_id    TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    step_id         TEXT NOT NULL,
    step_type       TEXT NOT NULL,
    parent_step_id  TEXT,
    iteration       INTEGER,
    visit           INTEGER NOT NULL CHECK (visit >= 1),
    attempt         INTEGER NOT NULL CHECK (attempt >= 1),
    status          TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'paused', 'waiting', 'skipped')),
    input           TEXT NOT NULL CHECK (json_valid(input)),
    output          TEXT NOT NULL CHECK (json_valid(output)),
    warnings        TEXT NOT NULL CHECK (json_valid(warnings)),
    started_at      INTEGER NOT NULL,
    completed_at    INTEGER,
    error           TEXT CHECK (error IS NULL OR json_valid(error))
) STRICT;
CREATE INDEX step_records_execution ON step_records (execution_id, seq);

CREATE TABLE approvals (
    id                   TEXT PRIMARY KEY,
    execution_id         TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    step_id              TEXT NOT NULL,
    visit                INTEGER NOT NULL,
    entity_type          TEXT,
    entity_id            TEXT,
    approver_roles       TEXT NOT NULL CHECK (json_valid(approver_roles)),
    approver_users       TEXT NOT NULL CHECK (json_valid(approver_users)),
    required             INTEGER NOT NULL CHECK (required >= 0),
    status               TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled')),
    reason               TEXT,
    data                 TEXT NOT NULL CHECK (json_valid(data)),
    decisions            TEXT NOT NULL CHECK (json_valid(decisions)),
    requested_by         TEXT,
    allow_self_approval  INTEGER NOT NULL CHECK (allow_self_approval IN (0, 1)),
    requested_at         INTEGER NOT NULL,
    expires_at           INTEGER,
    decided_at           INTEGER,
    CHECK ((status = 'pending') = (decided_at IS NULL))
) STRICT;
CREATE INDEX approvals_execution ON approvals (execution_id);
CREATE INDEX approvals_pending ON approvals (id) WHERE status = 'pending';

CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    event_id        TEXT UNIQUE,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL CHECK (json_valid(payload)),
    source          TEXT,
    correlation_id  TEXT,
    submitted_by    TEXT,
    received_at     INTEGER NOT NULL,
    started         TEXT NOT NULL CHECK (json_valid(started)),
    resumed         TEXT NOT NULL CHECK (json_valid(resumed))
) STRICT;
CREATE INDEX events_type_time ON events (event_type, received_at, id);

CREATE TABLE resume_requests (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    execution_id  TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    "trigger"     TEXT NOT NULL CHECK ("trigger" IN ('approval', 'event', 'manual', 'timer')),
    actor         TEXT,
    data          TEXT NOT NULL CHECK (json_valid(data)),
    requested_at  INTEGER NOT NULL,
    executed_at   INTEGER,
    outcome       TEXT NOT NULL CHECK (outcome IN ('resumed', 'refused', 'failed')),
    error         TEXT
) STRICT;
CREATE INDEX resume_requests_execution ON resume_requests (execution_id, seq);

CREATE TABLE records (
    entity      TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    data        TEXT NOT NULL CHECK (json_valid(data)),
    version     INTEGER NOT NULL CHECK (version >= 1),
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (entity, entity_id)
) STRICT;

CREATE TABLE notifications (
    id            TEXT PRIMARY KEY,
    execution_id  TEXT NOT NULL,
    step_id       TEXT NOT NULL,
    recipients    TEXT NOT NULL CHECK (json_valid(recipients)),
    message       TEXT NOT NULL,
    channel       TEXT NOT NULL,
    status        TEXT NOT NULL,
    created_at    INTEGER NOT NULL
) STRICT;
CREATE INDEX notifications_execution ON notifications (execution_id, id);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    roles       TEXT NOT NULL CHECK (json_valid(roles)),
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
) STRICT;
