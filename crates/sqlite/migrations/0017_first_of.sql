-- Why: a `first_of` step waits for several event types at once (docs/execution-semantics.md,
-- "First-of gates"), but an execution row names one awaited type (`gate_event`). Each
-- event gate of a waiting first_of step gets a row here under its correlation key (shape
-- and hash; both '' for a gate without one), so an incoming event finds those executions
-- by one index probe per key, as it finds plain waits. The rows follow the gate column by
-- triggers, so every path that writes a gate (commits, decisions, intake, retries,
-- migrations, previous releases during an upgrade) keeps them right without knowing of
-- them; a reader still checks that the execution is waiting at that gate. (No `OR
-- IGNORE` in the triggers: the statement that fires them may impose its own conflict
-- policy, so duplicates are left out by the SELECT instead.)
CREATE TABLE IF NOT EXISTS gate_events (
    event_type    TEXT NOT NULL,
    shape         TEXT NOT NULL,
    hash          TEXT NOT NULL,
    execution_id  TEXT NOT NULL,
    fields        TEXT NOT NULL,
    PRIMARY KEY (event_type, shape, hash, execution_id)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER IF NOT EXISTS gate_events_on_insert AFTER INSERT ON executions
WHEN instr(NEW.gate, '"branches"') > 0
BEGIN
    INSERT INTO gate_events (event_type, shape, hash, execution_id, fields)
        SELECT event_type, shape, hash, NEW.id, min(fields) FROM (
            SELECT json_extract(b.value, '$.event') AS event_type,
                coalesce(json_extract(b.value, '$.correlation.shape'), '') AS shape,
                coalesce(json_extract(b.value, '$.correlation.hash'), '') AS hash,
                coalesce(json_extract(b.value, '$.correlation.fields'), '[]') AS fields
            FROM json_each(NEW.gate, '$.branches') b) k
        WHERE NOT EXISTS (SELECT 1 FROM gate_events g WHERE g.event_type = k.event_type
            AND g.shape = k.shape AND g.hash = k.hash AND g.execution_id = NEW.id)
        GROUP BY event_type, shape, hash;
END;

CREATE TRIGGER IF NOT EXISTS gate_events_on_update AFTER UPDATE OF gate ON executions
WHEN instr(OLD.gate, '"branches"') > 0 OR instr(NEW.gate, '"branches"') > 0
BEGIN
    DELETE FROM gate_events WHERE execution_id = OLD.id
        AND (event_type, shape, hash) IN (SELECT json_extract(value, '$.event'),
            coalesce(json_extract(value, '$.correlation.shape'), ''),
            coalesce(json_extract(value, '$.correlation.hash'), '')
            FROM json_each(coalesce(OLD.gate, '{}'), '$.branches'));
    INSERT INTO gate_events (event_type, shape, hash, execution_id, fields)
        SELECT event_type, shape, hash, NEW.id, min(fields) FROM (
            SELECT json_extract(b.value, '$.event') AS event_type,
                coalesce(json_extract(b.value, '$.correlation.shape'), '') AS shape,
                coalesce(json_extract(b.value, '$.correlation.hash'), '') AS hash,
                coalesce(json_extract(b.value, '$.correlation.fields'), '[]') AS fields
            FROM json_each(coalesce(NEW.gate, '{}'), '$.branches') b) k
        WHERE NOT EXISTS (SELECT 1 FROM gate_events g WHERE g.event_type = k.event_type
            AND g.shape = k.shape AND g.hash = k.hash AND g.execution_id = NEW.id)
        GROUP BY event_type, shape, hash;
END;

CREATE TRIGGER IF NOT EXISTS gate_events_on_delete AFTER DELETE ON executions
WHEN instr(OLD.gate, '"branches"') > 0
BEGIN
    DELETE FROM gate_events WHERE execution_id = OLD.id
        AND (event_type, shape, hash) IN (SELECT json_extract(value, '$.event'),
            coalesce(json_extract(value, '$.correlation.shape'), ''),
            coalesce(json_extract(value, '$.correlation.hash'), '')
            FROM json_each(OLD.gate, '$.branches'));
END;

-- A first_of step's approval that another gate beat is closed `superseded`. SQLite cannot
-- change a CHECK constraint in place, so the table is rebuilt (nothing references it).
CREATE TABLE approvals_next (
    id                   TEXT PRIMARY KEY,
    execution_id         TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    step_id              TEXT NOT NULL,
    visit                INTEGER NOT NULL,
    entity_type          TEXT,
    entity_id            TEXT,
    approver_roles       TEXT NOT NULL CHECK (json_valid(approver_roles)),
    approver_users       TEXT NOT NULL CHECK (json_valid(approver_users)),
    required             INTEGER NOT NULL CHECK (required >= 0),
    status               TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled', 'superseded')),
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
INSERT INTO approvals_next (id, execution_id, step_id, visit, entity_type, entity_id, approver_roles,
    approver_users, required, status, reason, data, decisions, requested_by, allow_self_approval,
    requested_at, expires_at, decided_at)
SELECT id, execution_id, step_id, visit, entity_type, entity_id, approver_roles,
    approver_users, required, status, reason, data, decisions, requested_by, allow_self_approval,
    requested_at, expires_at, decided_at
FROM approvals;
DROP TABLE approvals;
ALTER TABLE approvals_next RENAME TO approvals;
CREATE INDEX approvals_execution ON approvals (execution_id);
CREATE INDEX approvals_pending ON approvals (id) WHERE status = 'pending';
CREATE INDEX approvals_pending_execution ON approvals (execution_id) WHERE status = 'pending';
