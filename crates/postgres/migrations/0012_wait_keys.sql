-- no-transaction
-- Why: an incoming event finds the waits it may satisfy by their correlation key (the
-- gate's `correlation.shape` and `correlation.hash`, written when the wait is entered)
-- with one index probe per key, instead of scanning every execution waiting for its
-- type (docs/execution-semantics.md, "Correlation keys"). Waits without a key — their
-- match has no equality on an event field, or an earlier release stored them — index
-- under the empty shape and hash, so one more probe finds them; no row is rewritten.
CREATE INDEX CONCURRENTLY IF NOT EXISTS executions_wait_key ON executions (gate_event, (COALESCE(gate #>> '{correlation,shape}', '')), (COALESCE(gate #>> '{correlation,hash}', '')), id) WHERE status = 'waiting';
