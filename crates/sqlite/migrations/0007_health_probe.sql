-- One row that `/health/ready` writes through the writer connection, so that readiness
-- fails when writes fail (a full disk, a lock held by another process) — not only when
-- reads do.
CREATE TABLE health_probe (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  INTEGER NOT NULL
) STRICT;
INSERT INTO health_probe (id, at) VALUES (1, 0);
