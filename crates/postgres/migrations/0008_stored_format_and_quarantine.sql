-- Each execution and definition snapshot records the layout it was written in (the
-- release's STORED_FORMAT), so that an older process can tell a row of a newer release
-- (left alone) from a damaged one (quarantined). Rows written before this migration, and
-- by releases that do not know the format, are format 1. Additive: the previous release
-- runs on this schema unchanged.
--
-- An execution's format is a row of its own, present only when above 1, not a column
-- of `executions`: the previous release reads `executions` with whole-row selects, and
-- PostgreSQL refuses a prepared statement whose result columns changed ("cached plan
-- must not change result type"), so a new column there would break every running
-- process of the previous release mid-upgrade. It reads `snapshots` by named columns.
CREATE TABLE execution_formats (
    execution_id  uuid PRIMARY KEY REFERENCES executions (id) ON DELETE CASCADE,
    format        bigint NOT NULL
);
ALTER TABLE snapshots ADD COLUMN format bigint NOT NULL DEFAULT 1;

-- Executions a worker could not decode, set aside with their stored row verbatim.
CREATE TABLE quarantined_executions (
    execution_id    uuid PRIMARY KEY,
    detail          text NOT NULL,
    original        jsonb NOT NULL,
    quarantined_at  timestamptz NOT NULL
);
