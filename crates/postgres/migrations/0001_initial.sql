-- Tollgate schema, PostgreSQL form. Mirrors migrations/sqlite/0001_initial.sql in meaning.

CREATE TABLE snapshots (
    id          text PRIMARY KEY,                 -- SHA-256 of the canonical definition
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE workflows (
    id             uuid PRIMARY KEY,
    workflow_id    text NOT NULL,
    version        text NOT NULL,
    enabled        boolean NOT NULL,
    definition     jsonb NOT NULL,
    snapshot_id    text NOT NULL REFERENCES snapshots(id),
    tags           text[] NOT NULL DEFAULT '{}',
    event_pattern  text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    UNIQUE (workflow_id, version)
);
CREATE INDEX workflows_event ON workflows (event_pattern) WHERE enabled AND event_pattern IS NOT NULL;

CREATE TABLE executions (
    id                uuid PRIMARY KEY,
    workflow_id       uuid NOT NULL,              -- no FK: executions outlive deleted workflows
    workflow_key      text NOT NULL,
    workflow_version  text NOT NULL,
    snapshot_id       text NOT NULL REFERENCES snapshots(id),
    status            text NOT NULL CHECK (status IN ('running', 'paused', 'waiting', 'completed', 'failed', 'cancelled', 'timed_out')),
    result            text CHECK (result IN ('allowed', 'blocked', 'executed')),
    trigger_event     text NOT NULL,
    trigger_payload   jsonb NOT NULL,
    context           jsonb NOT NULL,
    cursor            jsonb,
    visits            jsonb NOT NULL,
    steps_run         integer NOT NULL CHECK (steps_run >= 0),
    version           bigint NOT NULL CHECK (version >= 1),
    lease_owner       text,
    lease_expires_at  timestamptz,
    gate              jsonb,
    gate_reason       text CHECK (gate_reason IN ('approval', 'manual', 'event')),
    gate_deadline     timestamptz,
    gate_event        text,
    gate_approval_id  uuid,
    paused_at         timestamptz,
    wake              jsonb,
    pause_requested   boolean NOT NULL,
    deadline          timestamptz,
    resume_count      integer NOT NULL CHECK (resume_count >= 0),
    last_resumed_at   timestamptz,
    started_at        timestamptz NOT NULL,
    completed_at      timestamptz,
    updated_at        timestamptz NOT NULL,
    error             jsonb,
    requested_by      text,
    consumed_events   uuid[] NOT NULL DEFAULT '{}',
    commit_token      uuid,                     -- random per commit: lets one-statement commits tie their step rows to their own update
    -- a gated execution has its gate (a claimed one keeps it until the engine acts on
    -- its wake signal); a running one has a lease; an ended one has neither
    CHECK (status NOT IN ('paused', 'waiting') OR (gate IS NOT NULL AND paused_at IS NOT NULL)),
    CHECK (status <> 'running' OR lease_expires_at IS NOT NULL),
    CHECK (status NOT IN ('completed', 'failed', 'cancelled', 'timed_out') OR (completed_at IS NOT NULL AND lease_owner IS NULL))
);
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
    seq             bigserial PRIMARY KEY,        -- creation order
    id              uuid NOT NULL UNIQUE,
    execution_id    uuid NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    step_id         text NOT NULL,
    step_type       text NOT NULL,
    parent_step_id  text,
    iteration       integer,
    visit           integer NOT NULL CHECK (visit >= 1),
    attempt         integer NOT NULL CHECK (attempt >= 1),
    status          text NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'paused', 'waiting', 'skipped')),
    input           jsonb NOT NULL,
    output          jsonb NOT NULL,
    warnings        jsonb NOT NULL,
    started_at      timestamptz NOT NULL,
    completed_at    timestamptz,
    error           jsonb
);
CREATE INDEX step_records_execution ON step_records (execution_id, seq);

CREATE TABLE approvals (
    id                   uuid PRIMARY KEY,
    execution_id         uuid NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    step_id              text NOT NULL,
    visit                integer NOT NULL,
    entity_type          text,
    entity_id            text,
    approver_roles       text[] NOT NULL,
    approver_users       text[] NOT NULL,
    required             integer NOT NULL CHECK (required >= 0),
    status               text NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled')),
    reason               text,
    data                 jsonb NOT NULL,
    decisions            jsonb NOT NULL,
    requested_by         text,
    allow_self_approval  boolean NOT NULL,
    requested_at         timestamptz NOT NULL,
    expires_at           timestamptz,
    decided_at           timestamptz,
    CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE INDEX approvals_execution ON approvals (execution_id);
CREATE INDEX approvals_pending_roles ON approvals USING gin (approver_roles) WHERE status = 'pending';
CREATE INDEX approvals_pending ON approvals (id) WHERE status = 'pending';

CREATE TABLE events (
    id              uuid PRIMARY KEY,
    event_id        text UNIQUE,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    source          text,
    correlation_id  uuid,
    submitted_by    text,
    received_at     timestamptz NOT NULL,
    started         uuid[] NOT NULL DEFAULT '{}',
    resumed         uuid[] NOT NULL DEFAULT '{}'
);
CREATE INDEX events_type_time ON events (event_type, received_at, id);

CREATE TABLE resume_requests (
    seq           bigserial PRIMARY KEY,
    id            uuid NOT NULL UNIQUE,
    execution_id  uuid NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    "trigger"     text NOT NULL CHECK ("trigger" IN ('approval', 'event', 'manual', 'timer')),
    actor         text,
    data          jsonb NOT NULL,
    requested_at  timestamptz NOT NULL,
    executed_at   timestamptz,
    outcome       text NOT NULL CHECK (outcome IN ('resumed', 'refused', 'failed')),
    error         text
);
CREATE INDEX resume_requests_execution ON resume_requests (execution_id, seq);

CREATE TABLE records (
    entity      text NOT NULL,
    entity_id   text NOT NULL,
    data        jsonb NOT NULL,
    version     bigint NOT NULL CHECK (version >= 1),
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (entity, entity_id)
);

CREATE TABLE notifications (
    id            uuid PRIMARY KEY,
    execution_id  uuid NOT NULL,
    step_id       text NOT NULL,
    recipients    text[] NOT NULL,
    message       text NOT NULL,
    channel       text NOT NULL,
    status        text NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX notifications_execution ON notifications (execution_id, id);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    roles       text[] NOT NULL,
    key_hash    text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL
);
