//! Event intake's batched work: events stored with the executions they start, and the
//! reads of which workflows an event triggers and which executions wait for it.

use serde_json::Value;
use sqlx::postgres::PgConnection;
use sqlx::types::Json;
use sqlx::Row;
use tollgate_model::records::{ApprovalRequest, Event, Execution, StepRecord, Timestamp, Workflow};
use tollgate_store::{rules, Error, EventInsert, Result, Starting};
use uuid::Uuid;

use crate::rows::{backend, to_json};
use crate::{rows, WAKEUP_CHANNEL};

use super::decisions::execution_row;
use super::sql::{
    approvals_from_recordset, steps_from_recordset, trail_from_recordset, trail_row,
    EXECUTION_COLUMNS, STEP_UPSERT_TAIL,
};

/// Batched reads. An event's lookups — the workflows it triggers, the executions waiting
/// for it — are the same query for every event; the lookups queued at one moment are
/// answered by one statement instead of one each. Each still reads after its caller
/// asked (the batch starts once the request is queued), so what a caller sees is as
/// fresh as a read of its own.
///
/// The workflows triggered by each of a batch of event types: one read of the enabled
/// event-triggered workflows, parsed once, matched per event type.
pub(crate) async fn triggered_batch(
    conn: &mut PgConnection,
    event_types: &[String],
) -> Result<Vec<Result<Vec<Workflow>>>> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        columns!(workflows, "w."),
        ", s.format AS snapshot_format FROM workflows w JOIN snapshots s ON s.id = w.snapshot_id \
         WHERE w.enabled AND w.event_pattern IS NOT NULL"
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let candidates = rules::readable_workflows(&rows, rows::current_workflow);
    Ok(event_types
        .iter()
        .map(|event_type| Ok(rules::triggered_workflows(candidates.clone(), event_type)))
        .collect())
}

/// One page of the scan for executions waiting for an event type
/// ([`ExecutionStore::waiting_for_event`]).
#[derive(Debug, Clone)]
pub(crate) struct WaitingScan {
    pub(crate) event_type: String,
    pub(crate) after: Option<Uuid>,
    pub(crate) limit: i64,
    /// When an unreadable row met by the scan is quarantined.
    pub(crate) now: Timestamp,
}

/// A batch of waiting scans in one statement: each scan is its own index range on the
/// partial index of waiting executions, tagged with its position in the batch.
pub(crate) async fn waiting_batch(
    conn: &mut PgConnection,
    scans: &[WaitingScan],
) -> Result<Vec<Result<Vec<Execution>>>> {
    let event_types: Vec<&str> = scans.iter().map(|s| s.event_type.as_str()).collect();
    let afters: Vec<Option<Uuid>> = scans.iter().map(|s| s.after).collect();
    let limits: Vec<i64> = scans.iter().map(|s| s.limit).collect();
    let rows = sqlx::query(&format!(
        concat!("SELECT q.ord AS scan, x.* FROM unnest($1::text[], $2::uuid[], $3::bigint[]) WITH ORDINALITY AS q(event_type, after, lim, ord) \
         CROSS JOIN LATERAL (SELECT ", columns!(executions), " FROM executions e WHERE e.status = 'waiting' AND e.gate_event = q.event_type \
            AND {} AND (q.after IS NULL OR e.id > q.after) ORDER BY e.id LIMIT q.lim) x \
         ORDER BY q.ord, x.id"),
        super::sql::readable("e")
    ))
    .bind(&event_types)
    .bind(&afters)
    .bind(&limits)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let mut pages: Vec<Vec<Execution>> = vec![Vec::new(); scans.len()];
    for row in &rows {
        let scan: i64 = row.try_get("scan").map_err(backend)?;
        let page_index = usize::try_from(scan - 1).unwrap_or(usize::MAX);
        let page = pages
            .get_mut(page_index)
            .ok_or_else(|| Error::Backend(format!("waiting scan {scan} out of range").into()))?;
        match rows::execution_to_change(row) {
            Ok(execution) => page.push(execution),
            // A waiting execution nobody can read would fail every event of its type:
            // set it aside, and answer the scan with the others.
            Err(Error::Unreadable(detail)) => {
                if let (Some(id), Some(scan)) = (rows::execution_id(row), scans.get(page_index)) {
                    quarantine_now(conn, id, &detail, scan.now).await;
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(pages.into_iter().map(Ok).collect())
}

/// Quarantines one execution in a transaction of its own, logging a failure (the row is
/// then met again by the next scan).
async fn quarantine_now(conn: &mut PgConnection, id: Uuid, detail: &str, now: Timestamp) {
    let done = async {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(backend)?;
        super::sql::quarantine(&mut tx, id, detail, now).await?;
        tx.commit().await.map_err(backend)
    };
    match done.await {
        Ok(()) => rules::report_quarantine(id, detail),
        Err(err) => {
            tracing::error!(execution_id = %id, "could not quarantine an unreadable execution: {err}");
        }
    }
}

/// Group commit for events ([`tollgate_store::group_commit::Batcher`] with
/// [`insert_events`]): the events queued at that moment are stored, each with the
/// executions it starts (and their step records and approval requests), in one statement
/// — one round trip and one WAL flush for the batch instead of one per event. Each event
/// stays all-or-nothing: its executions are joined to its own insert, so a repeated
/// `event_id` stores nothing of its batch entry.
/// Stores a batch of events with what they start, in one statement: the events whose
/// `event_id` is new ($1), the executions listed in an inserted event's `started` ($2),
/// the step records and approval requests of inserted executions ($3, $4), a wake-up
/// ($5 the channel, $6 whether any start needs one), and the starts' context undo trail
/// rows ($7).
pub(super) static INSERT_EVENTS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let select: Vec<String> = EXECUTION_COLUMNS
        .split(',')
        .map(str::trim)
        .map(|c| match c {
            "trigger_payload" | "context" | "visits" => format!("COALESCE(v.{c}, 'null'::jsonb)"),
            _ => format!("v.{c}"),
        })
        .collect();
    format!(
        "WITH ev AS (INSERT INTO events (id, event_id, event_type, payload, source, correlation_id, submitted_by, received_at, started, resumed, delivered) \
            SELECT e.id, e.event_id, e.event_type, COALESCE(e.payload, 'null'::jsonb), e.source, e.correlation_id, e.submitted_by, e.received_at, \
                COALESCE(e.started, '{{}}'), COALESCE(e.resumed, '{{}}'), false \
            FROM jsonb_populate_recordset(NULL::events, $1) e ON CONFLICT DO NOTHING RETURNING id, started), \
         ex AS (INSERT INTO executions ({EXECUTION_COLUMNS}) SELECT {} FROM jsonb_populate_recordset(NULL::executions, $2) v \
            WHERE EXISTS (SELECT 1 FROM ev WHERE v.id = ANY(ev.started)) RETURNING id), \
         st AS ({} WHERE r.execution_id IN (SELECT id FROM ex) ORDER BY r.ord {STEP_UPSERT_TAIL} RETURNING 1), \
         ap AS ({} JOIN ex ON ex.id = a.execution_id RETURNING 1), \
         tr AS ({} WHERE t.execution_id IN (SELECT id FROM ex) RETURNING 1), \
         nt AS (SELECT pg_notify($5, 'gate') WHERE $6 AND EXISTS (SELECT 1 FROM ex)) \
         SELECT id, (SELECT count(*) FROM ex) AS executions, (SELECT count(*) FROM st) AS steps, \
            (SELECT count(*) FROM ap) AS approvals, (SELECT count(*) FROM nt) AS notified FROM ev",
        select.join(", "),
        steps_from_recordset(3),
        approvals_from_recordset(4),
        trail_from_recordset(7),
    )
});

/// One statement for a batch of events (see [`INSERT_EVENTS_SQL`]); per event, whether
/// it was inserted or repeats an `event_id` (then the first one).
pub(crate) async fn insert_events(
    conn: &mut PgConnection,
    items: &[(Event, Vec<Starting>)],
) -> Result<Vec<EventInsert>> {
    let events: Vec<Value> = items
        .iter()
        .map(|(e, _)| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    let starts = items.iter().flat_map(|(_, s)| s);
    let executions: Vec<Value> = starts
        .clone()
        .map(|s| execution_row(&s.execution))
        .collect();
    let records: Vec<&StepRecord> = starts.clone().flat_map(|s| &s.records).collect();
    let approvals: Vec<&ApprovalRequest> =
        starts.clone().filter_map(|s| s.approval.as_ref()).collect();
    let wakes = starts.clone().any(Starting::wakes_workers);
    let trails: Vec<Value> = starts
        .clone()
        .filter_map(|s| trail_row(&s.execution, &s.undo))
        .collect();
    let rows = sqlx::query(&INSERT_EVENTS_SQL)
        .bind(Json(Value::Array(events)))
        .bind(Json(Value::Array(executions)))
        .bind(to_json(&records))
        .bind(to_json(&approvals))
        .bind(WAKEUP_CHANNEL)
        .bind(wakes)
        .bind(Json(Value::Array(trails)))
        .fetch_all(&mut *conn)
        .await
        .map_err(|err| match (&err, items) {
            (sqlx::Error::Database(db), _) if db.is_foreign_key_violation() => {
                Error::not_found("snapshot", "of a started workflow")
            }
            (sqlx::Error::Database(db), [(event, _)]) if db.is_unique_violation() => {
                Error::Conflict(format!("an execution of event {} already exists", event.id))
            }
            _ => backend(err),
        })?;
    let inserted: std::collections::HashSet<Uuid> = rows
        .iter()
        .map(|r| r.try_get("id").map_err(backend))
        .collect::<Result<_>>()?;
    // Repeated `event_id`s: answer with the first event of each.
    let repeated: Vec<String> = items
        .iter()
        .filter(|(e, _)| !inserted.contains(&e.id))
        .filter_map(|(e, _)| e.event_id.clone())
        .collect();
    // Events not inserted whose id is stored are this very event, written before by a
    // batch whose outcome was unknown to its caller (and so retried): inserted.
    let retried: Vec<Uuid> = items
        .iter()
        .filter(|(e, _)| !inserted.contains(&e.id))
        .map(|(e, _)| e.id)
        .collect();
    let mut ours = std::collections::HashMap::new();
    if !retried.is_empty() {
        for row in sqlx::query(concat!(
            "SELECT ",
            columns!(events),
            " FROM events WHERE id = ANY($1)"
        ))
        .bind(&retried)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
        {
            let stored = rows::event(&row)?;
            ours.insert(stored.id, stored);
        }
    }
    let mut firsts = std::collections::HashMap::new();
    if !repeated.is_empty() {
        for row in sqlx::query(concat!(
            "SELECT ",
            columns!(events),
            " FROM events WHERE event_id = ANY($1)"
        ))
        .bind(&repeated)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
        {
            let first = rows::event(&row)?;
            if let Some(key) = first.event_id.clone() {
                firsts.insert(key, first);
            }
        }
    }
    items
        .iter()
        .map(|(event, _)| {
            if inserted.contains(&event.id) {
                return Ok(EventInsert::Inserted(event.clone()));
            }
            if let Some(stored) = ours.get(&event.id) {
                return Ok(EventInsert::Inserted(stored.clone()));
            }
            event
                .event_id
                .as_ref()
                .and_then(|key| firsts.get(key))
                .map(|first| EventInsert::Duplicate(first.clone()))
                .ok_or_else(|| {
                    Error::Backend(
                        format!("event {} was neither stored nor found", event.id).into(),
                    )
                })
        })
        .collect()
}
