//! Event intake's batched work: events stored with the executions they start, and the
//! reads of which workflows an event triggers and which executions wait for it.

use sqlx::postgres::PgConnection;
use sqlx::types::Json;
use sqlx::Row;
use tollgate_model::records::{ApprovalRequest, Event, Execution, StepRecord, Timestamp, Workflow};
use tollgate_store::{rules, Error, EventInsert, Result, Starting};
use uuid::Uuid;

use crate::rows::{backend, to_json};
use crate::{rows, WAKEUP_CHANNEL};

use super::json_rows::{ExecutionRow, TrailRow};
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

/// A waiting execution's correlation shape and hash, exactly as the `executions_wait_key`
/// index spells them (the planner uses an expression index only for the same expression).
macro_rules! wait_shape {
    () => {
        "COALESCE(e.gate #>> '{correlation,shape}', '')"
    };
}
macro_rules! wait_hash {
    () => {
        "COALESCE(e.gate #>> '{correlation,hash}', '')"
    };
}

/// One page of the executions waiting for an event type: all of them
/// ([`ExecutionStore::waiting_for_event`], `keys: None`), or those with one of `keys`
/// and those without a key ([`ExecutionStore::waiting_for_keys`]).
#[derive(Debug, Clone)]
pub(crate) struct WaitingScan {
    pub(crate) event_type: String,
    pub(crate) keys: Option<Vec<tollgate_store::WaitKey>>,
    pub(crate) after: Option<Uuid>,
    pub(crate) limit: i64,
    /// When an unreadable row met by the scan is quarantined.
    pub(crate) now: Timestamp,
}

/// A read of the waiting executions, batched with the others queued at that moment.
#[derive(Debug, Clone)]
pub(crate) enum WaitingRead {
    /// A page of waits.
    Scan(WaitingScan),
    /// The correlation shapes waiting on an event type ([`ExecutionStore::wait_shapes`]).
    Shapes(String),
    /// A page of the executions at `first_of` steps with an event gate of the type
    /// keyed with one of `keys` or without a key ([`ExecutionStore::waiting_at_first_of`]).
    FirstOf(WaitingScan),
    /// The correlation shapes of `first_of` steps' event gates of an event type
    /// ([`ExecutionStore::first_of_shapes`]).
    FirstOfShapes(String),
}

/// What a [`WaitingRead`] found.
#[derive(Debug, Clone)]
pub(crate) enum WaitingAnswer {
    /// The page.
    Waits(Vec<Execution>),
    /// The shapes.
    Shapes(Vec<tollgate_store::WaitShape>),
}

/// A batch of waiting reads in at most five statements — full scans, key probes and
/// shape lists of plain waits, key probes and shape lists of `first_of` gates — each a
/// set of index ranges tagged with their read's position.
pub(crate) async fn waiting_batch(
    conn: &mut PgConnection,
    reads: &[WaitingRead],
) -> Result<Vec<Result<WaitingAnswer>>> {
    let mut answers: Vec<Option<WaitingAnswer>> = vec![None; reads.len()];
    let mut full = Vec::new();
    let mut keyed = Vec::new();
    let mut shapes = Vec::new();
    let mut first_of = Vec::new();
    let mut first_of_shapes = Vec::new();
    for (i, read) in reads.iter().enumerate() {
        match read {
            WaitingRead::Scan(scan) if scan.keys.is_none() => full.push((i, scan)),
            WaitingRead::Scan(scan) => keyed.push((i, scan)),
            WaitingRead::Shapes(event_type) => shapes.push((i, event_type.as_str())),
            WaitingRead::FirstOf(scan) => first_of.push((i, scan)),
            WaitingRead::FirstOfShapes(event_type) => {
                first_of_shapes.push((i, event_type.as_str()));
            }
        }
    }
    if !full.is_empty() {
        let pages = full_scans(conn, &full).await?;
        for ((i, _), page) in full.iter().zip(pages) {
            answers[*i] = Some(WaitingAnswer::Waits(page));
        }
    }
    for (probes, sql) in [
        (&keyed, &*KEY_PROBES_SQL),
        (&first_of, &*FIRST_OF_PROBES_SQL),
    ] {
        if !probes.is_empty() {
            let pages = key_probes(conn, probes, sql).await?;
            for ((i, _), page) in probes.iter().zip(pages) {
                answers[*i] = Some(WaitingAnswer::Waits(page));
            }
        }
    }
    for (reads, sql) in [
        (&shapes, WAIT_SHAPES_SQL),
        (&first_of_shapes, FIRST_OF_SHAPES_SQL),
    ] {
        if !reads.is_empty() {
            let lists = shape_lists(conn, reads, sql).await?;
            for ((i, _), list) in reads.iter().zip(lists) {
                answers[*i] = Some(WaitingAnswer::Shapes(list));
            }
        }
    }
    Ok(answers
        .into_iter()
        .map(|a| a.ok_or_else(|| Error::Backend("a waiting read was not answered".into())))
        .collect())
}

/// Full scans: each is its own index range on the partial index of waiting executions.
async fn full_scans(
    conn: &mut PgConnection,
    scans: &[(usize, &WaitingScan)],
) -> Result<Vec<Vec<Execution>>> {
    let event_types: Vec<&str> = scans.iter().map(|(_, s)| s.event_type.as_str()).collect();
    let afters: Vec<Option<Uuid>> = scans.iter().map(|(_, s)| s.after).collect();
    let limits: Vec<i64> = scans.iter().map(|(_, s)| s.limit).collect();
    let rows = sqlx::query(&FULL_SCANS_SQL)
        .bind(&event_types)
        .bind(&afters)
        .bind(&limits)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    pages_of(conn, &rows, scans).await
}

/// [`full_scans`]' statement: one row of (event type, after, limit) per scan.
static FULL_SCANS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        concat!("SELECT q.ord AS scan, x.* FROM unnest($1::text[], $2::uuid[], $3::bigint[]) WITH ORDINALITY AS q(event_type, after, lim, ord) \
         CROSS JOIN LATERAL (SELECT ", columns!(executions), " FROM executions e WHERE e.status = 'waiting' AND e.gate_event = q.event_type \
            AND {} AND e.id > COALESCE(q.after, '00000000-0000-0000-0000-000000000000'::uuid) ORDER BY e.id LIMIT q.lim) x \
         ORDER BY q.ord, x.id"),
        super::sql::readable("e")
    )
});

/// Key probes: one index range per key of each scan, and one for its waits without a
/// key, each cut at the scan's limit; a scan's ranges are merged by id and cut again
/// (an execution at a `first_of` step may be found under two of its gates).
async fn key_probes(
    conn: &mut PgConnection,
    scans: &[(usize, &WaitingScan)],
    sql: &str,
) -> Result<Vec<Vec<Execution>>> {
    let keyless = tollgate_store::WaitKey {
        shape: String::new(),
        hash: String::new(),
    };
    let (mut ords, mut event_types, mut shapes, mut hashes, mut afters, mut limits) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for (n, (_, scan)) in scans.iter().enumerate() {
        for key in std::iter::once(&keyless).chain(scan.keys.iter().flatten()) {
            ords.push(i64::try_from(n + 1).unwrap_or(i64::MAX));
            event_types.push(scan.event_type.as_str());
            shapes.push(key.shape.as_str());
            hashes.push(key.hash.as_str());
            afters.push(scan.after);
            limits.push(scan.limit);
        }
    }
    let rows = sqlx::query(sql)
        .bind(&ords)
        .bind(&event_types)
        .bind(&shapes)
        .bind(&hashes)
        .bind(&afters)
        .bind(&limits)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    let mut pages = pages_of(conn, &rows, scans).await?;
    for (page, (_, scan)) in pages.iter_mut().zip(scans) {
        page.sort_by_key(|e| e.id);
        page.dedup_by_key(|e| e.id);
        page.truncate(usize::try_from(scan.limit).unwrap_or(usize::MAX));
    }
    Ok(pages)
}

/// [`key_probes`]' statement for plain waits: one row of (read, event type, shape,
/// hash, after, limit) per probe.
static KEY_PROBES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    concat!(
        "SELECT q.ord AS scan, x.* FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::bigint[]) \
           AS q(ord, event_type, shape, hash, after, lim) \
         CROSS JOIN LATERAL (SELECT ", columns!(executions), " FROM executions e WHERE e.status = 'waiting' AND e.gate_event = q.event_type \
            AND ", wait_shape!(), " = q.shape AND ", wait_hash!(), " = q.hash \
            AND READABLE AND e.id > COALESCE(q.after, '00000000-0000-0000-0000-000000000000'::uuid) ORDER BY e.id LIMIT q.lim) x"
    )
    .replace("READABLE", &super::sql::readable("e"))
});

/// [`key_probes`]' statement for `first_of` gates: the same probes, as index ranges of
/// `gate_events` (its key is (event type, shape, hash, execution)), each row then read
/// from `executions` by id and kept only while the execution is still waiting.
static FIRST_OF_PROBES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    concat!(
        "SELECT q.ord AS scan, x.* FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::uuid[], $6::bigint[]) \
           AS q(ord, event_type, shape, hash, after, lim) \
         CROSS JOIN LATERAL (SELECT ", columns!(executions, "e."), " FROM gate_events g JOIN executions e ON e.id = g.execution_id \
            WHERE g.event_type = q.event_type AND g.shape = q.shape AND g.hash = q.hash \
            AND g.execution_id > COALESCE(q.after, '00000000-0000-0000-0000-000000000000'::uuid) \
            AND e.status = 'waiting' AND READABLE ORDER BY g.execution_id LIMIT q.lim) x"
    )
    .replace("READABLE", &super::sql::readable("e"))
});

/// Sorts rows tagged with their scan's position (1-based) into pages, quarantining the
/// rows that do not read: a waiting execution nobody can read would fail every event of
/// its type, so it is set aside and the scan answered with the others.
async fn pages_of(
    conn: &mut PgConnection,
    rows: &[sqlx::postgres::PgRow],
    scans: &[(usize, &WaitingScan)],
) -> Result<Vec<Vec<Execution>>> {
    let mut pages: Vec<Vec<Execution>> = vec![Vec::new(); scans.len()];
    for row in rows {
        let scan: i64 = row.try_get("scan").map_err(backend)?;
        let page_index = usize::try_from(scan - 1).unwrap_or(usize::MAX);
        let page = pages
            .get_mut(page_index)
            .ok_or_else(|| Error::Backend(format!("waiting scan {scan} out of range").into()))?;
        match rows::execution_to_change(row) {
            Ok(execution) => page.push(execution),
            Err(Error::Unreadable(detail)) => {
                if let (Some(id), Some((_, scan))) =
                    (rows::execution_id(row), scans.get(page_index))
                {
                    quarantine_now(conn, id, &detail, scan.now).await;
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(pages)
}

/// The correlation shapes of plain waits on each of a batch of event types: per type, a
/// skip scan over the key index (one probe per distinct shape) and the fields of one
/// wait of each shape.
const WAIT_SHAPES_SQL: &str = concat!(
    "SELECT q.ord AS read, s.shape, s.fields FROM unnest($1::text[]) WITH ORDINALITY AS q(event_type, ord) \
     CROSS JOIN LATERAL ( \
       WITH RECURSIVE r(shape) AS ( \
         (SELECT ", wait_shape!(), " FROM executions e WHERE e.status = 'waiting' AND e.gate_event = q.event_type \
            AND ", wait_shape!(), " > '' ORDER BY ", wait_shape!(), " LIMIT 1) \
         UNION ALL \
         SELECT (SELECT ", wait_shape!(), " FROM executions e WHERE e.status = 'waiting' AND e.gate_event = q.event_type \
            AND ", wait_shape!(), " > r.shape ORDER BY ", wait_shape!(), " LIMIT 1) \
         FROM r WHERE r.shape IS NOT NULL) \
       SELECT r.shape, (SELECT e.gate #> '{correlation,fields}' FROM executions e \
            WHERE e.status = 'waiting' AND e.gate_event = q.event_type AND ", wait_shape!(), " = r.shape LIMIT 1) AS fields \
       FROM r WHERE r.shape IS NOT NULL) s \
     ORDER BY q.ord, s.shape"
);

/// The correlation shapes of `first_of` steps' event gates of each of a batch of event
/// types, the keyless one ('') included: per type, a skip scan over `gate_events`' key,
/// one probe per distinct shape.
const FIRST_OF_SHAPES_SQL: &str =
    "SELECT q.ord AS read, s.shape, s.fields FROM unnest($1::text[]) WITH ORDINALITY AS q(event_type, ord) \
     CROSS JOIN LATERAL ( \
       WITH RECURSIVE r AS ( \
         (SELECT g.shape, g.fields FROM gate_events g WHERE g.event_type = q.event_type ORDER BY g.shape LIMIT 1) \
         UNION ALL \
         SELECT n.shape, n.fields FROM r CROSS JOIN LATERAL \
           (SELECT g.shape, g.fields FROM gate_events g WHERE g.event_type = q.event_type AND g.shape > r.shape \
            ORDER BY g.shape LIMIT 1) n) \
       SELECT r.shape, r.fields FROM r) s \
     ORDER BY q.ord, s.shape";

/// The shapes each of a batch of shape reads asks for, by `sql` (one of the two above).
async fn shape_lists(
    conn: &mut PgConnection,
    reads: &[(usize, &str)],
    sql: &str,
) -> Result<Vec<Vec<tollgate_store::WaitShape>>> {
    let event_types: Vec<&str> = reads.iter().map(|(_, t)| *t).collect();
    let rows = sqlx::query(sql)
        .bind(&event_types)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    let mut lists: Vec<Vec<tollgate_store::WaitShape>> = vec![Vec::new(); reads.len()];
    for row in &rows {
        let read: i64 = row.try_get("read").map_err(backend)?;
        let list = usize::try_from(read - 1)
            .ok()
            .and_then(|i| lists.get_mut(i))
            .ok_or_else(|| Error::Backend(format!("shape read {read} out of range").into()))?;
        let shape: String = row.try_get("shape").map_err(backend)?;
        match row.try_get::<Option<Json<Vec<String>>>, _>("fields") {
            Ok(Some(Json(fields))) => list.push(tollgate_store::WaitShape { shape, fields }),
            // Its last wait left between the two reads: nothing waits with it any more.
            Ok(None) => {}
            // Fields that do not read (a gate not written by Tollgate): events cannot
            // compute that shape's key, so its waits take only direct deliveries until
            // they are repaired or time out. Said loudly.
            Err(err) => {
                tracing::error!(shape, "a correlation shape's fields do not read; its waits are not found by key: {err}");
            }
        }
    }
    Ok(lists)
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

/// Events by id, for a batch's events stored by an earlier attempt.
const EVENTS_BY_ID_SQL: &str = concat!(
    "SELECT ",
    columns!(events),
    " FROM events WHERE id = ANY($1)"
);

/// Events by `event_id`, for a batch's repeated ones.
const EVENTS_BY_KEY_SQL: &str = concat!(
    "SELECT ",
    columns!(events),
    " FROM events WHERE event_id = ANY($1)"
);

/// The statements of the waiting reads and the event inserts, for the test that checks
/// how their connections plan them ([`crate::KEYED_BATCH_SETTINGS`]).
#[cfg(feature = "testing")]
pub(crate) fn keyed_statements() -> Vec<(&'static str, String)> {
    vec![
        ("waiting full scans", FULL_SCANS_SQL.clone()),
        ("waiting key probes", KEY_PROBES_SQL.clone()),
        ("first_of key probes", FIRST_OF_PROBES_SQL.clone()),
        ("wait shapes", WAIT_SHAPES_SQL.to_owned()),
        ("first_of shapes", FIRST_OF_SHAPES_SQL.to_owned()),
        ("event inserts", INSERT_EVENTS_SQL.clone()),
        ("events by id", EVENTS_BY_ID_SQL.to_owned()),
        ("events by event_id", EVENTS_BY_KEY_SQL.to_owned()),
    ]
}

/// One statement for a batch of events (see [`INSERT_EVENTS_SQL`]); per event, whether
/// it was inserted or repeats an `event_id` (then the first one).
pub(crate) async fn insert_events(
    conn: &mut PgConnection,
    items: &[(Event, Vec<Starting>)],
) -> Result<Vec<EventInsert>> {
    let events: Vec<&Event> = items.iter().map(|(e, _)| e).collect();
    let starts = items.iter().flat_map(|(_, s)| s);
    let executions: Vec<ExecutionRow> = starts
        .clone()
        .map(|s| ExecutionRow::of(&s.execution))
        .collect();
    let records: Vec<&StepRecord> = starts.clone().flat_map(|s| &s.records).collect();
    let approvals: Vec<&ApprovalRequest> =
        starts.clone().filter_map(|s| s.approval.as_ref()).collect();
    let wakes = starts.clone().any(Starting::wakes_workers);
    let trails: Vec<TrailRow> = starts
        .clone()
        .filter_map(|s| trail_row(&s.execution, &s.undo))
        .collect();
    let rows = sqlx::query(&INSERT_EVENTS_SQL)
        .bind(to_json(&events))
        .bind(to_json(&executions))
        .bind(to_json(&records))
        .bind(to_json(&approvals))
        .bind(WAKEUP_CHANNEL)
        .bind(wakes)
        .bind(to_json(&trails))
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
        for row in sqlx::query(EVENTS_BY_ID_SQL)
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
        for row in sqlx::query(EVENTS_BY_KEY_SQL)
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
