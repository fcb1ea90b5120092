-- Why: event retention finds the oldest events nobody took — delivered, starting no
-- execution, in no execution's `resumed` list — without reading the taken ones, which
-- stay until history retention removes their executions. Same index as PostgreSQL's.
CREATE INDEX IF NOT EXISTS events_untaken ON events (received_at, id) WHERE started = '[]' AND resumed = '[]' AND delivered = 1;
