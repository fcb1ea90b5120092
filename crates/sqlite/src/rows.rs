//! Conversions between Tollgate records and SQLite rows.

use chrono::DateTime;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use tollgate_model::records::{
    ApiKey, ApprovalRequest, ApprovalRung, Event, Execution, Notification, Record, ResumeRequest,
    StepRecord, Timestamp, Workflow,
};
use tollgate_store::Error;
use uuid::Uuid;

pub(crate) fn backend(err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            // SQLite says `UNIQUE constraint failed: table.col, table.col`.
            let columns = db.message().rsplit(": ").next().unwrap_or_default();
            let table = columns.split('.').next().unwrap_or_default();
            tollgate_store::duplicate_key(table, columns)
        }
        _ => Error::Backend(Box::new(err)),
    }
}

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Unreadable(format!("{what} in the database: {detail}"))
}

pub(crate) fn ts(t: Timestamp) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_ts(micros: i64) -> Timestamp {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

pub(crate) fn opt_ts(t: Option<Timestamp>) -> Option<i64> {
    t.map(ts)
}

pub(crate) fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>>(
    row: &'r SqliteRow,
    column: &str,
) -> Result<T, Error> {
    row.try_get(column).map_err(|e| corrupt(column, e))
}

fn parse<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T, Error> {
    let text: String = get(row, column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(column, e))
}

fn parse_opt<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<Option<T>, Error> {
    let text: Option<String> = get(row, column)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| corrupt(column, e)))
        .transpose()
}

fn uuid(row: &SqliteRow, column: &str) -> Result<Uuid, Error> {
    let text: String = get(row, column)?;
    Uuid::parse_str(&text).map_err(|e| corrupt(column, e))
}

fn opt_uuid(row: &SqliteRow, column: &str) -> Result<Option<Uuid>, Error> {
    let text: Option<String> = get(row, column)?;
    text.map(|t| Uuid::parse_str(&t).map_err(|e| corrupt(column, e)))
        .transpose()
}

fn time(row: &SqliteRow, column: &str) -> Result<Timestamp, Error> {
    Ok(from_ts(get(row, column)?))
}

fn opt_time(row: &SqliteRow, column: &str) -> Result<Option<Timestamp>, Error> {
    Ok(get::<Option<i64>>(row, column)?.map(from_ts))
}

/// A value serialised as a JSON string (`"paused"`) read back as its enum.
fn enum_text<T: DeserializeOwned>(row: &SqliteRow, column: &str) -> Result<T, Error> {
    let text: String = get(row, column)?;
    serde_json::from_value(serde_json::Value::String(text.clone()))
        .map_err(|e| corrupt(column, format!("{text}: {e}")))
}

pub(crate) fn enum_str<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A workflow row read with its snapshot's format (`snapshot_format`): one whose
/// definition a newer release wrote is [`Error::NewerFormat`], since this release would
/// run it without what it does not know.
pub(crate) fn current_workflow(row: &SqliteRow) -> Result<Workflow, Error> {
    let format: i64 = get(row, "snapshot_format")?;
    if format > tollgate_store::STORED_FORMAT {
        return Err(Error::NewerFormat {
            what: "workflow",
            id: uuid(row, "id")?.to_string(),
            format,
        });
    }
    workflow(row)
}

pub(crate) fn workflow(row: &SqliteRow) -> Result<Workflow, Error> {
    Ok(Workflow {
        id: uuid(row, "id")?,
        definition: std::sync::Arc::new(parse(row, "definition")?),
        snapshot_id: get(row, "snapshot_id")?,
        enabled: get::<i64>(row, "enabled")? != 0,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

/// An execution row. One that does not decode is [`Error::NewerFormat`] when a newer
/// release wrote it, [`Error::Unreadable`] otherwise.
pub(crate) fn execution(row: &SqliteRow) -> Result<Execution, Error> {
    decode_execution(row).map_err(|err| newer_format(row).unwrap_or(err))
}

/// An execution row this process is about to change: [`Error::NewerFormat`] for a newer
/// release's row even when it decodes, since writing it back would lose what this
/// release does not know.
pub(crate) fn execution_to_change(row: &SqliteRow) -> Result<Execution, Error> {
    match newer_format(row) {
        Some(err) => Err(err),
        None => decode_execution(row),
    }
}

fn newer_format(row: &SqliteRow) -> Option<Error> {
    let format: i64 = row.try_get("format").ok()?;
    (format > tollgate_store::STORED_FORMAT).then(|| Error::NewerFormat {
        what: "execution",
        id: execution_id(row)
            .map(|id| id.to_string())
            .unwrap_or_default(),
        format,
    })
}

/// The id of an execution row, even one that does not decode otherwise.
pub(crate) fn execution_id(row: &SqliteRow) -> Option<Uuid> {
    let text: String = row.try_get("id").ok()?;
    Uuid::parse_str(&text).ok()
}

/// Rows a claim returned, split into the executions that decode and the ids of those
/// that do not, with why (to be quarantined).
pub(crate) fn decode_claimed(rows: &[SqliteRow]) -> (Vec<Execution>, Vec<(Uuid, String)>) {
    let mut good = Vec::with_capacity(rows.len());
    let mut bad = Vec::new();
    for row in rows {
        match execution_to_change(row) {
            Ok(execution) => good.push(execution),
            Err(err) => match execution_id(row) {
                Some(id) => bad.push((id, err.to_string())),
                None => tracing::error!("a claimed execution row has no readable id: {err}"),
            },
        }
    }
    (good, bad)
}

fn decode_execution(row: &SqliteRow) -> Result<Execution, Error> {
    let result: Option<String> = get(row, "result")?;
    Ok(Execution {
        id: uuid(row, "id")?,
        workflow_id: uuid(row, "workflow_id")?,
        workflow_key: get(row, "workflow_key")?,
        workflow_version: get(row, "workflow_version")?,
        snapshot_id: get(row, "snapshot_id")?,
        status: enum_text(row, "status")?,
        result: result
            .map(|r| {
                serde_json::from_value(serde_json::Value::String(r))
                    .map_err(|e| corrupt("result", e))
            })
            .transpose()?,
        trigger_event: get(row, "trigger_event")?,
        trigger_payload: parse(row, "trigger_payload")?,
        context: parse(row, "context")?,
        cursor: parse_opt(row, "cursor")?,
        visits: parse(row, "visits")?,
        steps_run: u32::try_from(get::<i64>(row, "steps_run")?).unwrap_or(0),
        version: get(row, "version")?,
        lease: match opt_time(row, "lease_expires_at")? {
            Some(expires_at) => Some(tollgate_model::records::Lease {
                owner: get(row, "lease_owner")?,
                expires_at,
            }),
            None => None,
        },
        gate: parse_opt(row, "gate")?,
        wake: parse_opt(row, "wake")?,
        pause_requested: get::<i64>(row, "pause_requested")? != 0,
        deadline: opt_time(row, "deadline")?,
        resume_count: u32::try_from(get::<i64>(row, "resume_count")?).unwrap_or(0),
        last_resumed_at: opt_time(row, "last_resumed_at")?,
        started_at: time(row, "started_at")?,
        completed_at: opt_time(row, "completed_at")?,
        updated_at: time(row, "updated_at")?,
        error: parse_opt(row, "error")?,
        requested_by: get(row, "requested_by")?,
        consumed_events: parse(row, "consumed_events")?,
    })
}

pub(crate) fn step_record(row: &SqliteRow) -> Result<StepRecord, Error> {
    Ok(StepRecord {
        id: uuid(row, "id")?,
        execution_id: uuid(row, "execution_id")?,
        step_id: get(row, "step_id")?,
        step_type: get(row, "step_type")?,
        parent_step_id: get(row, "parent_step_id")?,
        iteration: get::<Option<i64>>(row, "iteration")?.and_then(|i| u32::try_from(i).ok()),
        visit: u32::try_from(get::<i64>(row, "visit")?).unwrap_or(1),
        attempt: u32::try_from(get::<i64>(row, "attempt")?).unwrap_or(1),
        status: enum_text(row, "status")?,
        input: parse(row, "input")?,
        output: parse(row, "output")?,
        warnings: parse(row, "warnings")?,
        started_at: time(row, "started_at")?,
        completed_at: opt_time(row, "completed_at")?,
        error: parse_opt(row, "error")?,
    })
}

/// A row column by column as JSON, whatever its columns hold (text as strings, integers
/// and reals as numbers, blobs as hex, NULL as null): what quarantine keeps of a row
/// that does not decode.
pub(crate) fn verbatim(row: &SqliteRow) -> serde_json::Value {
    use sqlx::{Column, ValueRef};
    let mut object = serde_json::Map::new();
    for column in row.columns() {
        let i = column.ordinal();
        let value = match row.try_get_raw(i) {
            Ok(raw) if raw.is_null() => serde_json::Value::Null,
            _ => {
                if let Ok(n) = row.try_get::<i64, _>(i) {
                    serde_json::Value::from(n)
                } else if let Ok(x) = row.try_get::<f64, _>(i) {
                    serde_json::Value::from(x)
                } else if let Ok(text) = row.try_get::<String, _>(i) {
                    serde_json::Value::String(text)
                } else if let Ok(bytes) = row.try_get::<Vec<u8>, _>(i) {
                    serde_json::Value::String(bytes.iter().fold(String::new(), |mut hex, b| {
                        use std::fmt::Write;
                        let _ = write!(hex, "{b:02x}");
                        hex
                    }))
                } else {
                    serde_json::Value::Null
                }
            }
        };
        object.insert(column.name().to_owned(), value);
    }
    serde_json::Value::Object(object)
}

pub(crate) fn quarantined(row: &SqliteRow) -> Result<tollgate_store::Quarantined, Error> {
    Ok(tollgate_store::Quarantined {
        execution_id: uuid(row, "execution_id")?,
        detail: get(row, "detail")?,
        original: parse(row, "original")?,
        quarantined_at: time(row, "quarantined_at")?,
    })
}

pub(crate) fn approval(row: &SqliteRow) -> Result<ApprovalRequest, Error> {
    Ok(ApprovalRequest {
        id: uuid(row, "id")?,
        execution_id: uuid(row, "execution_id")?,
        step_id: get(row, "step_id")?,
        visit: u32::try_from(get::<i64>(row, "visit")?).unwrap_or(1),
        entity_type: get(row, "entity_type")?,
        entity_id: get(row, "entity_id")?,
        approver_roles: parse(row, "approver_roles")?,
        approver_users: parse(row, "approver_users")?,
        required: u32::try_from(get::<i64>(row, "required")?).unwrap_or(1),
        status: enum_text(row, "status")?,
        reason: get(row, "reason")?,
        data: parse(row, "data")?,
        decisions: parse(row, "decisions")?,
        requested_by: get(row, "requested_by")?,
        allow_self_approval: get::<i64>(row, "allow_self_approval")? != 0,
        requested_at: time(row, "requested_at")?,
        expires_at: opt_time(row, "expires_at")?,
        decided_at: opt_time(row, "decided_at")?,
    })
}

pub(crate) fn event(row: &SqliteRow) -> Result<Event, Error> {
    Ok(Event {
        id: uuid(row, "id")?,
        event_id: get(row, "event_id")?,
        event_type: get(row, "event_type")?,
        payload: parse(row, "payload")?,
        source: get(row, "source")?,
        correlation_id: opt_uuid(row, "correlation_id")?,
        submitted_by: get(row, "submitted_by")?,
        received_at: time(row, "received_at")?,
        started: parse(row, "started")?,
        resumed: parse(row, "resumed")?,
    })
}

pub(crate) fn resume_request(row: &SqliteRow) -> Result<ResumeRequest, Error> {
    Ok(ResumeRequest {
        id: uuid(row, "id")?,
        execution_id: uuid(row, "execution_id")?,
        trigger: enum_text(row, "trigger")?,
        actor: get(row, "actor")?,
        data: parse(row, "data")?,
        requested_at: time(row, "requested_at")?,
        executed_at: opt_time(row, "executed_at")?,
        outcome: enum_text(row, "outcome")?,
        error: get(row, "error")?,
    })
}

pub(crate) fn record(row: &SqliteRow) -> Result<Record, Error> {
    Ok(Record {
        entity: get(row, "entity")?,
        entity_id: get(row, "entity_id")?,
        data: parse(row, "data")?,
        version: get(row, "version")?,
        updated_at: time(row, "updated_at")?,
    })
}

pub(crate) fn notification(row: &SqliteRow) -> Result<Notification, Error> {
    Ok(Notification {
        id: uuid(row, "id")?,
        execution_id: uuid(row, "execution_id")?,
        step_id: get(row, "step_id")?,
        recipients: parse(row, "recipients")?,
        message: get(row, "message")?,
        channel: get(row, "channel")?,
        status: get(row, "status")?,
        created_at: time(row, "created_at")?,
        kind: get::<Option<String>>(row, "kind")?.unwrap_or_else(|| "notify".into()),
        approval_id: opt_uuid(row, "approval_id")?,
        subject: get(row, "subject")?,
        link_user: get(row, "link_user")?,
        attempts: u32::try_from(get::<Option<i64>>(row, "attempts")?.unwrap_or(0)).unwrap_or(0),
        last_error: get(row, "last_error")?,
        next_attempt_at: opt_time(row, "next_attempt_at")?,
        sent_at: opt_time(row, "sent_at")?,
    })
}

pub(crate) fn rung(row: &SqliteRow) -> Result<ApprovalRung, Error> {
    Ok(ApprovalRung {
        approval_id: uuid(row, "approval_id")?,
        execution_id: uuid(row, "execution_id")?,
        position: u32::try_from(get::<i64>(row, "position")?).unwrap_or(0),
        kind: get(row, "kind")?,
        due_at: time(row, "due_at")?,
        add_roles: parse(row, "add_roles")?,
        add_users: parse(row, "add_users")?,
        notify: parse(row, "notify")?,
        fired_at: opt_time(row, "fired_at")?,
        outcome: get(row, "outcome")?,
    })
}

pub(crate) fn api_key(row: &SqliteRow) -> Result<ApiKey, Error> {
    Ok(ApiKey {
        id: uuid(row, "id")?,
        name: get(row, "name")?,
        roles: parse(row, "roles")?,
        key_hash: get(row, "key_hash")?,
        created_at: time(row, "created_at")?,
    })
}

pub(crate) fn schedule(row: &SqliteRow) -> Result<tollgate_model::schedule::Schedule, Error> {
    Ok(tollgate_model::schedule::Schedule {
        id: uuid(row, "id")?,
        workflow_id: uuid(row, "workflow_id")?,
        cron: get(row, "cron")?,
        timezone: get(row, "timezone")?,
        enabled: get::<i64>(row, "enabled")? != 0,
        catch_up: enum_text(row, "catch_up")?,
        from_trigger: get::<i64>(row, "from_trigger")? != 0,
        next_fire_at: opt_time(row, "next_fire_at")?,
        last_fired_at: opt_time(row, "last_fired_at")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

pub(crate) fn tick(row: &SqliteRow) -> Result<tollgate_model::schedule::Tick, Error> {
    Ok(tollgate_model::schedule::Tick {
        id: uuid(row, "id")?,
        schedule_id: uuid(row, "schedule_id")?,
        tick_time: time(row, "tick_time")?,
        status: enum_text(row, "status")?,
        owner: get(row, "owner")?,
        lease_expires_at: opt_time(row, "lease_expires_at")?,
        claimed_at: time(row, "claimed_at")?,
        started_at: opt_time(row, "started_at")?,
        execution_id: opt_uuid(row, "execution_id")?,
        error: get(row, "error")?,
    })
}

pub(crate) fn console_session(
    row: &SqliteRow,
) -> Result<tollgate_model::records::ConsoleSession, Error> {
    Ok(tollgate_model::records::ConsoleSession {
        id_hash: get(row, "id_hash")?,
        key_hash: get(row, "key_hash")?,
        csrf: get(row, "csrf")?,
        created_at: time(row, "created_at")?,
        expires_at: time(row, "expires_at")?,
    })
}

pub(crate) fn worker_beat(row: &SqliteRow) -> Result<tollgate_model::records::WorkerBeat, Error> {
    let claimed: i64 = get(row, "claimed")?;
    Ok(tollgate_model::records::WorkerBeat {
        worker_id: get(row, "worker_id")?,
        started_at: time(row, "started_at")?,
        beat_at: time(row, "beat_at")?,
        last_claim_at: opt_time(row, "last_claim_at")?,
        claimed: u64::try_from(claimed).unwrap_or(0),
    })
}
