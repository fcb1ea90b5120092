-- Why: the senders' claim reads the queued notifications by due time; only queued ones
-- have one, so the index holds the outbox, not the history.
CREATE INDEX IF NOT EXISTS notification_deliveries_due ON notification_deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
