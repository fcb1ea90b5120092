-- Worker loops' heartbeats; same shape as the PostgreSQL migration.
CREATE TABLE worker_heartbeats (
    worker_id      TEXT PRIMARY KEY,
    started_at     INTEGER NOT NULL,
    beat_at        INTEGER NOT NULL,
    last_claim_at  INTEGER,
    claimed        INTEGER NOT NULL DEFAULT 0
) STRICT;
