-- Each execution and definition snapshot records the layout it was written in (the
-- release's STORED_FORMAT), so that an older process can tell a row of a newer release
-- (left alone) from a damaged one (quarantined). Rows written before this migration, and
-- by releases that do not know the column, are format 1. Additive: the previous release
-- runs on this schema unchanged.
ALTER TABLE executions ADD COLUMN format bigint NOT NULL DEFAULT 1;
ALTER TABLE snapshots ADD COLUMN format bigint NOT NULL DEFAULT 1;

-- Executions a worker could not decode, set aside with their stored row verbatim.
CREATE TABLE quarantined_executions (
    execution_id    uuid PRIMARY KEY,
    detail          text NOT NULL,
    original        jsonb NOT NULL,
    quarantined_at  timestamptz NOT NULL
);
