//! [`EventStore`] on SQLite.

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::sqlite::Sqlite;
use sqlx::{QueryBuilder, Row};
use tollgate_model::records::{Event, ResumeTrigger, Timestamp};
use tollgate_store::{
    rules, Delivery, Error, EventInsert, EventKey, EventPurge, EventShape, EventStore, LeaseClaim,
    Result, Starting,
};
use uuid::Uuid;

use crate::rows::{backend, from_ts, json, ts};
use crate::{rows, SqliteStore};

use super::sql::{
    approval_cells, audit, commit, execution_cells, json_array, json_insert, json_row,
    load_execution, step_cells, write_execution, Cell, Held, APPROVAL_COLUMNS, EXECUTION_COLUMNS,
    STEP_COLUMNS,
};

#[async_trait]
impl EventStore for SqliteStore {
    async fn insert_event(&self, event: Event) -> Result<EventInsert> {
        self.insert_event_starting(event, Vec::new()).await
    }

    async fn insert_event_starting(
        &self,
        event: Event,
        starts: Vec<Starting>,
    ) -> Result<EventInsert> {
        self.intake.submit((event, starts)).await
    }

    async fn set_event_outcome(
        &self,
        id: Uuid,
        started: Vec<Uuid>,
        resumed: Vec<Uuid>,
    ) -> Result<Event> {
        let row =
            sqlx::query("UPDATE events SET started = ?, resumed = (SELECT json_group_array(value) FROM \
                (SELECT value FROM json_each(events.resumed) UNION SELECT value FROM json_each(?))) WHERE id = ? RETURNING *")
                .bind(json(&started))
                .bind(json(&resumed))
                .bind(id.to_string())
                .fetch_optional(&self.writer)
                .await
                .map_err(backend)?;
        row.as_ref()
            .map(rows::event)
            .transpose()?
            .ok_or_else(|| Error::not_found("event", id))
    }

    async fn get_event(&self, id: Uuid) -> Result<Event> {
        let row = sqlx::query("SELECT * FROM events WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref()
            .map(rows::event)
            .transpose()?
            .ok_or_else(|| Error::not_found("event", id))
    }

    async fn deliver_event(
        &self,
        mut event: Event,
        expected_version: Option<i64>,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Delivery> {
        let target = rules::delivery_target(&event)?;
        let mut tx = self.write_tx().await?;
        if let Some(key) = &event.event_id {
            let first = sqlx::query("SELECT * FROM events WHERE event_id = ?")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(backend)?;
            if let Some(first) = first {
                let first = rows::event(&first)?;
                commit(tx).await?;
                return Ok(Delivery::Duplicate(first));
            }
        }
        let mut execution = load_execution(&mut tx, target).await?;
        rules::check_wait_claim(&execution, expected_version, &event)?;
        rules::claim_wait(&mut execution, &event, claim, now);
        write_execution(&mut tx, &execution).await?;
        if execution
            .gate
            .as_ref()
            .and_then(tollgate_model::records::Gate::superseded_approval)
            .is_some()
        {
            super::sql::close_approvals(
                &mut tx,
                target,
                tollgate_model::records::ApprovalStatus::Superseded,
                now,
            )
            .await?;
        }
        event.resumed = vec![target];
        sqlx::query(
            "INSERT INTO events (id, event_id, event_type, payload, source, correlation_id, submitted_by, received_at, started, resumed, delivered) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
        )
        .bind(event.id.to_string())
        .bind(event.event_id.clone())
        .bind(event.event_type.clone())
        .bind(json(&event.payload))
        .bind(event.source.clone())
        .bind(target.to_string())
        .bind(event.submitted_by.clone())
        .bind(ts(event.received_at))
        .bind(json(&event.started))
        .bind(json(&event.resumed))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        audit(
            &mut tx,
            target,
            ResumeTrigger::Event,
            event.submitted_by.as_deref(),
            json!({"event_id": event.id, "event_type": event.event_type}),
            now,
        )
        .await?;
        commit(tx).await?;
        Ok(Delivery::Claimed {
            event,
            execution: Box::new(execution),
        })
    }

    async fn events_for_wait(
        &self,
        event_type: &str,
        since: Timestamp,
        execution_id: Uuid,
        after: Option<(Timestamp, Uuid)>,
        limit: u32,
    ) -> Result<Vec<Event>> {
        // Keyset paging on (received_at, id): a page costs the same however many events
        // of the type came before it.
        let (after_at, after_id) = match after {
            Some((at, id)) => (Some(ts(at)), Some(id.to_string())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT * FROM events WHERE event_type = ? AND received_at >= ? AND (correlation_id IS NULL OR correlation_id = ?) \
             AND (? IS NULL OR (received_at, id) > (?, ?)) ORDER BY received_at, id LIMIT ?",
        )
        .bind(event_type)
        .bind(ts(since))
        .bind(execution_id.to_string())
        .bind(after_at)
        .bind(after_at)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::event).collect()
    }

    async fn undelivered_events(
        &self,
        received_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT * FROM events WHERE delivered = 0 AND received_at <= ? ORDER BY received_at, id LIMIT ?",
        )
        .bind(ts(received_before))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::event).collect()
    }

    async fn mark_events_delivered(&self, ids: &[Uuid]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
        sqlx::query(
            "UPDATE events SET delivered = 1 WHERE delivered = 0 AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(json(&ids))
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn event_shapes(&self, event_type: Option<&str>) -> Result<Vec<EventShape>> {
        let rows = sqlx::query(
            "SELECT event_type, shape, fields, keyed_at, keyed_id FROM event_shapes \
             WHERE ? IS NULL OR event_type = ? ORDER BY event_type, shape",
        )
        .bind(event_type)
        .bind(event_type)
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let fields: String = row.try_get("fields").map_err(backend)?;
                let keyed_at: Option<i64> = row.try_get("keyed_at").map_err(backend)?;
                let keyed_id: Option<String> = row.try_get("keyed_id").map_err(backend)?;
                let keyed_through = match (keyed_at, keyed_id) {
                    (Some(at), Some(id)) => Some((
                        from_ts(at),
                        Uuid::parse_str(&id).map_err(|e| rows::corrupt("event shape cursor", e))?,
                    )),
                    _ => None,
                };
                Ok(EventShape {
                    event_type: row.try_get("event_type").map_err(backend)?,
                    shape: row.try_get("shape").map_err(backend)?,
                    fields: serde_json::from_str(&fields)
                        .map_err(|e| rows::corrupt("event shape fields", e))?,
                    keyed_through,
                })
            })
            .collect()
    }

    async fn add_event_shape(
        &self,
        event_type: &str,
        shape: &str,
        fields: &[String],
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO event_shapes (event_type, shape, fields) VALUES (?, ?, ?) \
             ON CONFLICT (event_type, shape) DO NOTHING",
        )
        .bind(event_type)
        .bind(shape)
        .bind(json(&fields))
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn events_to_key(
        &self,
        event_type: &str,
        after: Option<(Timestamp, Uuid)>,
        up_to: Timestamp,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let (after_at, after_id) = match after {
            Some((at, id)) => (Some(ts(at)), Some(id.to_string())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT * FROM events WHERE event_type = ? AND received_at <= ? \
             AND (? IS NULL OR (received_at, id) > (?, ?)) ORDER BY received_at, id LIMIT ?",
        )
        .bind(event_type)
        .bind(ts(up_to))
        .bind(after_at)
        .bind(after_at)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::event).collect()
    }

    async fn add_event_keys(
        &self,
        event_type: &str,
        shape: &str,
        keys: &[EventKey],
        from: Option<(Timestamp, Uuid)>,
        through: (Timestamp, Uuid),
    ) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let moved = sqlx::query(
            "UPDATE event_shapes SET keyed_at = ?, keyed_id = ? WHERE event_type = ? AND shape = ? \
             AND keyed_at IS ? AND keyed_id IS ?",
        )
        .bind(ts(through.0))
        .bind(through.1.to_string())
        .bind(event_type)
        .bind(shape)
        .bind(from.map(|f| ts(f.0)))
        .bind(from.map(|f| f.1.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if moved.rows_affected() == 0 {
            let known =
                sqlx::query("SELECT 1 FROM event_shapes WHERE event_type = ? AND shape = ?")
                    .bind(event_type)
                    .bind(shape)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(backend)?;
            return Err(match known {
                None => Error::not_found("event shape", format!("{event_type}/{shape}")),
                Some(_) => Error::Conflict(format!(
                    "the events of `{event_type}` were keyed for shape {shape} meanwhile"
                )),
            });
        }
        for chunk in keys.chunks(1000) {
            // An event deleted meanwhile (retention) has nothing to key.
            let sql = format!(
                "WITH k(hash, received_at, event_id) AS (VALUES {}) \
                 INSERT INTO event_keys (event_type, shape, hash, received_at, event_id) \
                 SELECT ?, ?, k.hash, k.received_at, k.event_id FROM k \
                 WHERE EXISTS (SELECT 1 FROM events e WHERE e.id = k.event_id) ON CONFLICT DO NOTHING",
                vec!["(?, ?, ?)"; chunk.len()].join(", ")
            );
            let mut query = sqlx::query(&sql);
            for key in chunk {
                query = query
                    .bind(key.hash.clone())
                    .bind(ts(key.received_at))
                    .bind(key.event_id.to_string());
            }
            query
                .bind(event_type)
                .bind(shape)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        commit(tx).await
    }

    async fn keyed_events_for_wait(
        &self,
        event_type: &str,
        shape: &str,
        hash: &str,
        since: Timestamp,
        execution_id: Uuid,
        after: Option<(Timestamp, Uuid)>,
        through: (Timestamp, Uuid),
        limit: u32,
    ) -> Result<Vec<Event>> {
        let (after_at, after_id) = match after {
            Some((at, id)) => (Some(ts(at)), Some(id.to_string())),
            None => (None, None),
        };
        let rows = sqlx::query(
            "SELECT e.* FROM event_keys k JOIN events e ON e.id = k.event_id \
             WHERE k.event_type = ? AND k.shape = ? AND k.hash = ? AND k.received_at >= ? \
               AND (? IS NULL OR (k.received_at, k.event_id) > (?, ?)) \
               AND (k.received_at, k.event_id) <= (?, ?) \
               AND (e.correlation_id IS NULL OR e.correlation_id = ?) \
             ORDER BY k.received_at, k.event_id LIMIT ?",
        )
        .bind(event_type)
        .bind(shape)
        .bind(hash)
        .bind(ts(since))
        .bind(after_at)
        .bind(after_at)
        .bind(after_id)
        .bind(ts(through.0))
        .bind(through.1.to_string())
        .bind(execution_id.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::event).collect()
    }

    async fn purge_events(&self, purge: &EventPurge, limit: u32) -> Result<u64> {
        if limit == 0 {
            return Ok(0);
        }
        // One range of the partial index of untaken events, up to the latest cutoff;
        // each type's own cutoff filters within it.
        let latest = purge
            .per_type
            .iter()
            .map(|(_, at)| *at)
            .fold(purge.before, Timestamp::max);
        let mut q = QueryBuilder::<Sqlite>::new(
            "DELETE FROM events WHERE id IN (SELECT id FROM events INDEXED BY events_untaken \
             WHERE started = '[]' AND resumed = '[]' AND delivered = 1 AND received_at < ",
        );
        q.push_bind(ts(latest));
        q.push(" AND received_at < ");
        if purge.per_type.is_empty() {
            q.push_bind(ts(purge.before));
        } else {
            q.push("CASE event_type");
            for (event_type, before) in &purge.per_type {
                q.push(" WHEN ")
                    .push_bind(event_type.clone())
                    .push(" THEN ")
                    .push_bind(ts(*before));
            }
            q.push(" ELSE ").push_bind(ts(purge.before)).push(" END");
        }
        q.push(" ORDER BY received_at, id LIMIT ")
            .push_bind(i64::from(limit))
            .push(")");
        let done = q.build().execute(&self.writer).await.map_err(backend)?;
        Ok(done.rows_affected())
    }
}

/// Adds `execution` to the `resumed` list of the event it consumed, once (three binds:
/// execution, event, execution): how retention knows the event was taken.
pub(super) const NOTE_CONSUMED: &str =
    "UPDATE events SET resumed = json_insert(resumed, '$[#]', ?) \
    WHERE id = ? AND NOT EXISTS (SELECT 1 FROM json_each(events.resumed) WHERE value = ?);";

/// The undo entries a start stores with its execution: none for one that already
/// completed (a completed execution keeps no trail).
fn trail_of(start: &Starting) -> Option<&[tollgate_model::undo::ContextUndo]> {
    (!start.undo.is_empty() && start.execution.status != tollgate_model::ExecutionStatus::Completed)
        .then_some(start.undo.as_slice())
}

/// An event with the executions it starts: what the events' group committer takes.
pub(crate) type EventItem = (Event, Vec<Starting>);

/// The events' group committer.
pub(crate) type Intake = tollgate_store::group_commit::Batcher<EventItem, EventInsert>;

/// Starts the events' group committer on `writer` (`reader` answers a retried write's
/// look-up); `wake` is signalled after a batch that started executions the worker loops
/// must look at.
pub(crate) fn intake(
    writer: sqlx::SqlitePool,
    reader: sqlx::SqlitePool,
    wake: std::sync::Arc<tokio::sync::Notify>,
) -> Intake {
    tollgate_store::group_commit::Batcher::spawn(move |items: std::sync::Arc<Vec<EventItem>>| {
        let (writer, reader, wake) = (writer.clone(), reader.clone(), wake.clone());
        async move {
            let (answers, wakes) = insert_events(&writer, &reader, &items).await?;
            if wakes {
                wake.notify_one();
            }
            Ok(answers)
        }
    })
}

/// Stores a batch of events in one transaction and one hop: each event is inserted
/// unless its `event_id` exists; each execution it starts, with its step records,
/// approval request and undo trail, only if that event was (so a duplicate stores
/// nothing); after the commit, the stored event with each `event_id` (ours, or the
/// first) is read back. `Err` only for a database error (nothing written); the batcher
/// then writes each event alone, so the error reaches only the event that caused it.
async fn insert_events(
    writer: &sqlx::SqlitePool,
    reader: &sqlx::SqlitePool,
    items: &[EventItem],
) -> Result<(Vec<Result<EventInsert>>, bool)> {
    let rows = event_rows(items);
    let query = sqlx::query(&INTAKE_SQL)
        .bind(rows.events)
        .bind(rows.executions)
        .bind(rows.steps)
        .bind(rows.approvals)
        .bind(rows.trails)
        .bind(rows.lookups.clone())
        .bind(rows.lookups);
    let mut held = Held::acquire(writer).await?;
    let rows = match held.fetch_all(query).await {
        Ok(rows) => rows,
        Err(err) => {
            drop(held);
            let alone = match items {
                [(event, _)] => Some(event),
                _ => None,
            };
            if let (Some(event), sqlx::Error::Database(db)) = (alone, &err) {
                if db.is_unique_violation() {
                    // This very event (same id) is stored: a retried write of it.
                    let ours = sqlx::query("SELECT * FROM events WHERE id = ?")
                        .bind(event.id.to_string())
                        .fetch_optional(reader)
                        .await
                        .map_err(backend)?;
                    if ours.is_some() {
                        return Ok((vec![Ok(EventInsert::Inserted(event.clone()))], false));
                    }
                    return Err(Error::Conflict(format!(
                        "an execution of event {} already exists",
                        event.id
                    )));
                }
            }
            return Err(backend(err));
        }
    };
    let mut stored: Vec<Option<Event>> = vec![None; items.len()];
    for row in &rows {
        let slot: i64 = row.try_get("slot").map_err(backend)?;
        if let Some(entry) = usize::try_from(slot).ok().and_then(|s| stored.get_mut(s)) {
            *entry = Some(rows::event(row)?);
        }
    }
    let mut wakes = false;
    let answers = items
        .iter()
        .zip(stored)
        .map(|((event, starts), stored)| match stored {
            None => Err(Error::Backend(
                format!("event {} was neither stored nor found", event.id).into(),
            )),
            Some(stored) if stored.id == event.id => {
                wakes |= starts.iter().any(Starting::wakes_workers);
                Ok(EventInsert::Inserted(event.clone()))
            }
            Some(stored) => Ok(EventInsert::Duplicate(stored)),
        })
        .collect();
    Ok((answers, wakes))
}

/// A batch of events in one transaction, one constant statement per table, whatever
/// the batch holds (so the writer keeps one prepared program for every batch instead of
/// one per batch shape, each a multi-statement program of its own): the events unless
/// their `event_id` exists, then the starts' executions, step records, approval
/// requests and undo trails, each only if its event's own insert happened; after the
/// commit, the stored event of each slot (ours by id, or the first with its
/// `event_id`), told apart by `slot`. Rows are bound as JSON arrays ([`event_rows`]).
static INTAKE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    const IF_INSERTED: &str = "EXISTS (SELECT 1 FROM events WHERE id = j.value ->> 'event')";
    format!(
        "BEGIN IMMEDIATE; {} ON CONFLICT(event_id) DO NOTHING; {}; {}; {}; {}; COMMIT; \
         SELECT events.*, s.key AS slot FROM json_each(?) AS s JOIN events ON events.id = s.value ->> 'id' \
         UNION ALL SELECT events.*, s.key AS slot FROM json_each(?) AS s \
         JOIN events ON events.event_id = s.value ->> 'event_id' AND events.id <> s.value ->> 'id';",
        json_insert("events", EVENT_COLUMNS, "true"),
        json_insert("executions", EXECUTION_COLUMNS, IF_INSERTED),
        json_insert("step_records", STEP_COLUMNS, IF_INSERTED),
        json_insert("approvals", APPROVAL_COLUMNS, IF_INSERTED),
        json_insert("context_trail", "execution_id, version, undo", IF_INSERTED),
    )
});

/// The columns of an event's row that an insert writes (`delivered` starts at 0).
const EVENT_COLUMNS: &str = "id, event_id, event_type, payload, source, correlation_id, submitted_by, received_at, started, resumed, delivered";

/// The JSON arrays [`INTAKE_SQL`] is bound with, in its order.
struct EventRows {
    events: String,
    executions: String,
    steps: String,
    approvals: String,
    trails: String,
    lookups: String,
}

/// The rows of a batch of events and their starts as JSON arrays; every start's row
/// carries its event's id (`event`) for the insert's condition.
fn event_rows(items: &[EventItem]) -> EventRows {
    let (mut events, mut executions, mut steps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut approvals, mut trails, mut lookups) = (Vec::new(), Vec::new(), Vec::new());
    for (event, starts) in items {
        let id = event.id.to_string();
        let tagged = |columns: &str, cells: Vec<Cell>| {
            let mut row = json_row(columns, cells);
            row.insert("event".to_owned(), Value::String(id.clone()));
            Value::Object(row)
        };
        events.push(Value::Object(json_row(
            EVENT_COLUMNS,
            vec![
                id.clone().into(),
                event.event_id.clone().into(),
                event.event_type.clone().into(),
                json(&event.payload).into(),
                event.source.clone().into(),
                event.correlation_id.map(|c| c.to_string()).into(),
                event.submitted_by.clone().into(),
                ts(event.received_at).into(),
                json(&event.started).into(),
                json(&event.resumed).into(),
                0.into(),
            ],
        )));
        lookups.push(serde_json::json!({ "id": id, "event_id": event.event_id }));
        for start in starts {
            executions.push(tagged(EXECUTION_COLUMNS, execution_cells(&start.execution)));
            steps.extend(
                start
                    .records
                    .iter()
                    .map(|r| tagged(STEP_COLUMNS, step_cells(r))),
            );
            if let Some(approval) = &start.approval {
                approvals.push(tagged(APPROVAL_COLUMNS, approval_cells(approval)));
            }
            if let Some(undo) = trail_of(start) {
                trails.push(tagged(
                    "execution_id, version, undo",
                    vec![
                        start.execution.id.to_string().into(),
                        start.execution.version.into(),
                        json(undo).into(),
                    ],
                ));
            }
        }
    }
    EventRows {
        events: json_array(events),
        executions: json_array(executions),
        steps: json_array(steps),
        approvals: json_array(approvals),
        trails: json_array(trails),
        lookups: json_array(lookups),
    }
}
