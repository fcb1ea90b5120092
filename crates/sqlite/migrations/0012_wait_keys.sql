-- An incoming event finds the waits it may satisfy by their correlation key, one index
-- probe per key; waits without one index under the empty shape and hash. Same index as
-- PostgreSQL's.
CREATE INDEX IF NOT EXISTS executions_wait_key ON executions (gate_event, coalesce(json_extract(gate, '$.correlation.shape'), ''), coalesce(json_extract(gate, '$.correlation.hash'), ''), id) WHERE status = 'waiting';
