-- Why: a `first_of` step waits for several event types at once (docs/execution-semantics.md,
-- "First-of gates"), but an execution row names one awaited type (`gate_event`). Each
-- event gate of a waiting first_of step gets a row here under its correlation key (shape
-- and hash; both '' for a gate without one), so an incoming event finds those executions
-- by one index probe per key, as it finds plain waits. The rows follow the gate column by a
-- trigger, so every path that writes a gate (commits, decisions, intake, retries,
-- migrations, previous releases during an upgrade) keeps them right without knowing of
-- them; a reader still checks that the execution is waiting at that gate. A new table
-- and triggers only: the previous release's reads are unchanged.
CREATE TABLE IF NOT EXISTS gate_events (
    event_type    text NOT NULL,
    shape         text NOT NULL,
    hash          text NOT NULL,
    execution_id  uuid NOT NULL,
    fields        jsonb NOT NULL,
    PRIMARY KEY (event_type, shape, hash, execution_id)
);

CREATE OR REPLACE FUNCTION tollgate_gate_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.gate ? 'branches' THEN
        DELETE FROM gate_events WHERE execution_id = OLD.id
            AND (event_type, shape, hash) IN (SELECT b->>'event', COALESCE(b #>> '{correlation,shape}', ''),
                COALESCE(b #>> '{correlation,hash}', '') FROM jsonb_array_elements(OLD.gate->'branches') b);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.gate ? 'branches' THEN
        INSERT INTO gate_events (event_type, shape, hash, execution_id, fields)
            SELECT DISTINCT ON (1, 2, 3) b->>'event', COALESCE(b #>> '{correlation,shape}', ''),
                COALESCE(b #>> '{correlation,hash}', ''), NEW.id, COALESCE(b #> '{correlation,fields}', '[]'::jsonb)
            FROM jsonb_array_elements(NEW.gate->'branches') b
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER gate_events_on_insert AFTER INSERT ON executions
    FOR EACH ROW WHEN (NEW.gate ? 'branches') EXECUTE FUNCTION tollgate_gate_events();
CREATE OR REPLACE TRIGGER gate_events_on_update AFTER UPDATE OF gate ON executions
    FOR EACH ROW WHEN (OLD.gate ? 'branches' OR NEW.gate ? 'branches') EXECUTE FUNCTION tollgate_gate_events();
CREATE OR REPLACE TRIGGER gate_events_on_delete AFTER DELETE ON executions
    FOR EACH ROW WHEN (OLD.gate ? 'branches') EXECUTE FUNCTION tollgate_gate_events();

-- A first_of step's approval that another gate beat is closed `superseded`. NOT VALID:
-- the rows already there hold the older statuses, so nothing needs checking.
ALTER TABLE approvals DROP CONSTRAINT IF EXISTS approvals_status_check;
ALTER TABLE approvals ADD CONSTRAINT approvals_status_check
    CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled', 'superseded')) NOT VALID;
