-- Cron schedules and their ticks (the scheduled-trigger issue). Same shape as the
-- PostgreSQL migration of the same name; timestamps are INTEGER microseconds (UTC).

CREATE TABLE schedules (
    id             TEXT PRIMARY KEY,
    workflow_id    TEXT NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    cron           TEXT NOT NULL CHECK (cron <> ''),
    timezone       TEXT NOT NULL CHECK (timezone <> ''),
    enabled        INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    catch_up       TEXT NOT NULL CHECK (catch_up IN ('skip', 'all')),
    from_trigger   INTEGER NOT NULL CHECK (from_trigger IN (0, 1)),
    next_fire_at   INTEGER,
    last_fired_at  INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled = 1 AND next_fire_at IS NOT NULL;
CREATE INDEX schedules_workflow ON schedules (workflow_id);

CREATE TABLE schedule_ticks (
    id                TEXT PRIMARY KEY,
    schedule_id       TEXT NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    tick_time         INTEGER NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'started', 'failed')),
    owner             TEXT,
    lease_expires_at  INTEGER,
    claimed_at        INTEGER NOT NULL,
    started_at        INTEGER,
    execution_id      TEXT,
    error             TEXT,
    UNIQUE (schedule_id, tick_time),
    CHECK (status <> 'pending' OR (owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK (status <> 'started' OR execution_id IS NOT NULL)
) STRICT;
CREATE INDEX schedule_ticks_pending ON schedule_ticks (lease_expires_at) WHERE status = 'pending';
CREATE INDEX schedule_ticks_history ON schedule_ticks (schedule_id, tick_time DESC, id DESC);
