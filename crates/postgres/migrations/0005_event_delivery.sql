-- Events are stored pending delivery to the executions already waiting for them; the
-- worker loop finishes the delivery of any whose ingesting process stopped half-way, and
-- marks them. Events stored before this migration count as delivered.
ALTER TABLE events ADD COLUMN delivered boolean NOT NULL DEFAULT true;
CREATE INDEX events_undelivered ON events (received_at, id) WHERE NOT delivered;
