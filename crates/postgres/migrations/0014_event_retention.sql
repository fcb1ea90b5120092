-- no-transaction
-- Why: event retention finds the oldest events nobody took — delivered, starting no
-- execution, in no execution's `resumed` list — without reading the taken ones, which
-- stay until history retention removes their executions (docs/operations.md, "Event
-- retention"). Built without blocking event intake.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_untaken ON events (received_at, id) WHERE cardinality(started) = 0 AND cardinality(resumed) = 0 AND delivered;
