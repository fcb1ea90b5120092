-- Why: PostgreSQL's migration of this number moves `step_records`' primary key from
-- `seq` to `id` and sets a fill factor. SQLite has neither an index on `seq` to drop
-- (`seq` is the rowid, the table's own key) nor fill factors; the file keeps the two
-- backends' migrations in step and changes nothing.
SELECT 1;
