-- Stored layout versions and the quarantine list; same shape as the PostgreSQL migration.
CREATE TABLE execution_formats (
    execution_id  TEXT PRIMARY KEY REFERENCES executions (id) ON DELETE CASCADE,
    format        INTEGER NOT NULL
) STRICT;
ALTER TABLE snapshots ADD COLUMN format INTEGER NOT NULL DEFAULT 1;

CREATE TABLE quarantined_executions (
    execution_id    TEXT PRIMARY KEY,
    detail          TEXT NOT NULL,
    original        TEXT NOT NULL CHECK (json_valid(original)),
    quarantined_at  INTEGER NOT NULL
) STRICT;
