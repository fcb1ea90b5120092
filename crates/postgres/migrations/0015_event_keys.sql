-- Why: entering a wait finds an event that arrived before it by one probe of its
-- correlation key, however many events of its type are kept (docs/execution-semantics.md,
-- "Correlation keys"). The worker loop keys stored events for the shapes the
-- definitions' wait steps have; `keyed_at`/`keyed_id` say how far, and events after that
-- are read without keys. A key goes with its event. New tables only: the previous
-- release runs on the result unchanged.
CREATE TABLE IF NOT EXISTS event_shapes (
    event_type  text NOT NULL,
    shape       text NOT NULL,
    fields      jsonb NOT NULL,
    keyed_at    timestamptz,
    keyed_id    uuid,
    PRIMARY KEY (event_type, shape)
);
CREATE TABLE IF NOT EXISTS event_keys (
    event_type   text NOT NULL,
    shape        text NOT NULL,
    hash         text NOT NULL,
    received_at  timestamptz NOT NULL,
    event_id     uuid NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    PRIMARY KEY (event_type, shape, hash, received_at, event_id)
);
