-- Why: a step record is found by its id (every upsert) and read by its execution in
-- creation order (`step_records_execution`); nothing looks a record up by `seq`, which
-- only orders them (its sequence keeps it unique). Its primary key index and the unique
-- constraint on `id` cost two index entries for every insert and every update that could
-- not stay on its page; 0026's index on `id` becomes the primary key instead (a rename of
-- that index, no rebuild), and both go. A fill factor of 80 leaves room on each page for
-- a record's later versions (`running` or `waiting`, then its result), so more of those
-- updates are HOT: no new index entries at all. It applies to pages written from now on.
-- Upserts name the column (`ON CONFLICT (id)`), not an index, so the previous release
-- runs unchanged on this schema.
ALTER TABLE step_records DROP CONSTRAINT step_records_id_key, DROP CONSTRAINT step_records_pkey,
    ADD CONSTRAINT step_records_pkey PRIMARY KEY USING INDEX step_records_id;
ALTER TABLE step_records SET (fillfactor = 80);
