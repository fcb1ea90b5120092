-- Why: notifications are delivered through an outbox (docs/notifications.md, "The
-- outbox"): committed with the gate, sent later by a worker that claims them, retried
-- with backoff. The delivery state lives in a table of its own keyed by the
-- notification's id, as on PostgreSQL. Approval ladders (reminders, escalations) are
-- rows fired once by whichever worker claims them.
CREATE TABLE IF NOT EXISTS notification_deliveries (
    notification_id  TEXT PRIMARY KEY,
    execution_id     TEXT NOT NULL,
    kind             TEXT NOT NULL,
    approval_id      TEXT,
    subject          TEXT,
    link_user        TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  INTEGER,
    claimed_by       TEXT,
    claim_until      INTEGER,
    sent_at          INTEGER
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS approval_rungs (
    approval_id   TEXT NOT NULL,
    position      INTEGER NOT NULL,
    execution_id  TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('reminder', 'escalation')),
    due_at        INTEGER NOT NULL,
    add_roles     TEXT NOT NULL,
    add_users     TEXT NOT NULL,
    notify        TEXT NOT NULL,
    fired_at      INTEGER,
    outcome       TEXT,
    PRIMARY KEY (approval_id, position)
) STRICT, WITHOUT ROWID;
