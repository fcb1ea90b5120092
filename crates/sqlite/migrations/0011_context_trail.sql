-- Each step commit's context undo entries, under the execution's new version; same shape
-- as the PostgreSQL migration (no foreign key there either: retention deletes the rows).
CREATE TABLE IF NOT EXISTS context_trail (
    execution_id  TEXT NOT NULL,
    version       INTEGER NOT NULL,
    undo          TEXT NOT NULL CHECK (json_valid(undo)),
    PRIMARY KEY (execution_id, version)
) STRICT;
