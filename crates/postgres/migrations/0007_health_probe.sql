-- One row that readiness checks write (SQLite's writer probe; kept in the PostgreSQL
-- schema too so both backends have the same migrations).
CREATE TABLE health_probe (
    id  integer PRIMARY KEY CHECK (id = 1),
    at  timestamptz NOT NULL
);
INSERT INTO health_probe (id, at) VALUES (1, now());
