-- no-transaction
-- Why: the index 0027 makes `step_records`' primary key (see there), built without
-- blocking writes. The existing unique constraint on `id` cannot become the key itself:
-- its index already belongs to that constraint.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS step_records_id ON step_records (id);
