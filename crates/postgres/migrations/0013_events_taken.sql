-- Why: event retention deletes the events nobody took (docs/operations.md, "Event
-- retention"), and an event is known to be taken by the executions in its `resumed`
-- list. Earlier releases listed there only the executions a delivery resumed, not those
-- that found the event when entering a wait; this adds them from the executions'
-- `consumed_events`, so no taken event looks untaken. No schema change: the previous
-- release runs on the result unchanged.
UPDATE events SET resumed = ARRAY[taken.execution]
FROM (SELECT c AS event, (min(e.id::text))::uuid AS execution
      FROM executions e, unnest(e.consumed_events) AS c
      WHERE cardinality(e.consumed_events) > 0
      GROUP BY c) AS taken
WHERE events.id = taken.event AND cardinality(events.resumed) = 0;
