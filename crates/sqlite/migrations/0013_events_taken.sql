-- Why: event retention deletes the events nobody took (docs/operations.md, "Event
-- retention"), and an event is known to be taken by the executions in its `resumed`
-- list. Earlier releases listed there only the executions a delivery resumed, not those
-- that found the event when entering a wait; this adds them from the executions'
-- `consumed_events`, so no taken event looks untaken.
UPDATE events SET resumed = json_array(taken.execution)
FROM (SELECT c.value AS event, min(e.id) AS execution
      FROM executions e, json_each(e.consumed_events) c
      WHERE e.consumed_events <> '[]'
      GROUP BY c.value) AS taken
WHERE events.id = taken.event AND events.resumed = '[]';
