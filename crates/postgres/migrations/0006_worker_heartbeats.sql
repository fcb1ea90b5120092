-- Worker loops' heartbeats: one row per worker id, written every few seconds by each
-- loop, so the API can say which loops run against this database and when one last
-- claimed work (docs/operations.md, "Workers you can see").
CREATE TABLE worker_heartbeats (
    worker_id      text PRIMARY KEY,
    started_at     timestamptz NOT NULL,
    beat_at        timestamptz NOT NULL,
    last_claim_at  timestamptz,
    claimed        bigint NOT NULL DEFAULT 0
);
