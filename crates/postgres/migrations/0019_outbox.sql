-- Why: notifications are delivered through an outbox (docs/notifications.md, "The
-- outbox"): committed with the gate, sent later by a worker that claims them, retried
-- with backoff. The delivery state of a notification is new data about an existing
-- row, so it lives in a table of its own keyed by the notification's id. Approval
-- ladders (reminders, escalations) are rows fired once by whichever worker claims them.
-- New tables only: the previous release's reads are unchanged.
CREATE TABLE IF NOT EXISTS notification_deliveries (
    notification_id  uuid PRIMARY KEY,
    execution_id     uuid NOT NULL,
    kind             text NOT NULL,
    approval_id      uuid,
    subject          text,
    link_user        text,
    attempts         integer NOT NULL DEFAULT 0,
    last_error       text,
    next_attempt_at  timestamptz,
    claimed_by       text,
    claim_until      timestamptz,
    sent_at          timestamptz
);
CREATE TABLE IF NOT EXISTS approval_rungs (
    approval_id   uuid NOT NULL,
    position      integer NOT NULL,
    execution_id  uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('reminder', 'escalation')),
    due_at        timestamptz NOT NULL,
    add_roles     text[] NOT NULL,
    add_users     text[] NOT NULL,
    notify        jsonb NOT NULL,
    fired_at      timestamptz,
    outcome       text,
    PRIMARY KEY (approval_id, position)
);
