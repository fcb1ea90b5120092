-- Cron schedules and their ticks (the scheduled-trigger issue).
-- A tick is unique per (schedule, tick time): however many workers see a due schedule,
-- each tick is recorded once, and the tick row is what starts (at most) one execution.

CREATE TABLE schedules (
    id             uuid PRIMARY KEY,
    workflow_id    uuid NOT NULL REFERENCES workflows(id) ON DELETE CASCADE,
    cron           text NOT NULL CHECK (cron <> ''),
    timezone       text NOT NULL CHECK (timezone <> ''),
    enabled        boolean NOT NULL,
    catch_up       text NOT NULL CHECK (catch_up IN ('skip', 'all')),
    from_trigger   boolean NOT NULL,
    next_fire_at   timestamptz,
    last_fired_at  timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
-- Due schedules, in fire order: the scheduler's claim.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled AND next_fire_at IS NOT NULL;
CREATE INDEX schedules_workflow ON schedules (workflow_id);

CREATE TABLE schedule_ticks (
    id                uuid PRIMARY KEY,
    schedule_id       uuid NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
    tick_time         timestamptz NOT NULL,
    status            text NOT NULL CHECK (status IN ('pending', 'started', 'failed')),
    owner             text,
    lease_expires_at  timestamptz,
    claimed_at        timestamptz NOT NULL,
    started_at        timestamptz,
    execution_id      uuid,
    error             text,
    UNIQUE (schedule_id, tick_time),
    CHECK (status <> 'pending' OR (owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CHECK (status <> 'started' OR execution_id IS NOT NULL)
);
-- Pending ticks whose claimer may have died.
CREATE INDEX schedule_ticks_pending ON schedule_ticks (lease_expires_at) WHERE status = 'pending';
-- History, newest first.
CREATE INDEX schedule_ticks_history ON schedule_ticks (schedule_id, tick_time DESC, id DESC);
