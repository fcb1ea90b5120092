-- Web-console sessions (the console issue); same shape as the PostgreSQL migration.
CREATE TABLE console_sessions (
    id_hash     TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL,
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
