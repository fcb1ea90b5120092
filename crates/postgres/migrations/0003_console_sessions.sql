-- Web-console sessions (the console issue): shared by every API process of the database,
-- so a restart or a load balancer does not sign people out. The cookie holds an opaque id;
-- only its SHA-256 is stored, with the hash of the API key that signed in.
CREATE TABLE console_sessions (
    id_hash     text PRIMARY KEY,
    key_hash    text NOT NULL,
    csrf        text NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
