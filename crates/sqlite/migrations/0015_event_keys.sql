-- Why: entering a wait finds an event that arrived before it by one probe of its
-- correlation key, however many events of its type are kept (docs/execution-semantics.md,
-- "Correlation keys"). The worker loop keys stored events for the shapes the
-- definitions' wait steps have; `keyed_through` says how far, and events after it are
-- read without keys. A key goes with its event. Same tables as PostgreSQL's.
CREATE TABLE IF NOT EXISTS event_shapes (
    event_type       TEXT NOT NULL,
    shape            TEXT NOT NULL,
    fields           TEXT NOT NULL CHECK (json_valid(fields)),
    keyed_at         INTEGER,
    keyed_id         TEXT,
    PRIMARY KEY (event_type, shape)
) STRICT;
CREATE TABLE IF NOT EXISTS event_keys (
    event_type   TEXT NOT NULL,
    shape        TEXT NOT NULL,
    hash         TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    event_id     TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    PRIMARY KEY (event_type, shape, hash, received_at, event_id)
) STRICT, WITHOUT ROWID;
