//! Conversions between Tollgate records and PostgreSQL rows.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::Row;
use tollgate_model::records::{
    ApiKey, ApprovalRequest, ApprovalRung, Event, Execution, Lease, Notification, Record,
    ResumeRequest, StepRecord, Timestamp, Workflow,
};
use tollgate_store::Error;

pub(crate) fn backend(err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => tollgate_store::duplicate_key(
            db.table().unwrap_or_default(),
            db.constraint().unwrap_or_default(),
        ),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            Error::Unavailable(err.to_string())
        }
        _ => Error::Backend(Box::new(err)),
    }
}

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Unreadable(format!("{what} in the database: {detail}"))
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> Result<T, Error> {
    row.try_get(column).map_err(|e| corrupt(column, e))
}

fn typed<T: DeserializeOwned>(row: &PgRow, column: &str) -> Result<T, Error> {
    let Json(value): Json<Value> = get(row, column)?;
    serde_json::from_value(value).map_err(|e| corrupt(column, e))
}

fn typed_opt<T: DeserializeOwned>(row: &PgRow, column: &str) -> Result<Option<T>, Error> {
    let value: Option<Json<Value>> = get(row, column)?;
    value
        .map(|Json(v)| serde_json::from_value(v).map_err(|e| corrupt(column, e)))
        .transpose()
}

fn enum_text<T: DeserializeOwned>(row: &PgRow, column: &str) -> Result<T, Error> {
    let text: String = get(row, column)?;
    serde_json::from_value(Value::String(text.clone()))
        .map_err(|e| corrupt(column, format!("{text}: {e}")))
}

pub(crate) fn enum_str<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// `value` bound as `jsonb`, serialised straight into the statement's parameter (no
/// intermediate `serde_json::Value` copy).
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> Json<&T> {
    Json(value)
}

fn count(row: &PgRow, column: &str) -> Result<u32, Error> {
    Ok(u32::try_from(get::<i32>(row, column)?).unwrap_or(0))
}

pub(crate) fn workflow(row: &PgRow) -> Result<Workflow, Error> {
    Ok(Workflow {
        id: get(row, "id")?,
        definition: std::sync::Arc::new(typed(row, "definition")?),
        snapshot_id: get(row, "snapshot_id")?,
        enabled: get(row, "enabled")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// A workflow row read with its snapshot's format (`snapshot_format`): one whose
/// definition a newer release wrote is [`Error::NewerFormat`], since this release would
/// run it without what it does not know.
pub(crate) fn current_workflow(row: &PgRow) -> Result<Workflow, Error> {
    let format: i64 = get(row, "snapshot_format")?;
    if format > tollgate_store::STORED_FORMAT {
        return Err(Error::NewerFormat {
            what: "workflow",
            id: get::<uuid::Uuid>(row, "id")?.to_string(),
            format,
        });
    }
    workflow(row)
}

/// An execution row. One that does not decode is [`Error::NewerFormat`] when a newer
/// release wrote it, [`Error::Unreadable`] otherwise.
pub(crate) fn execution(row: &PgRow) -> Result<Execution, Error> {
    decode_execution(row).map_err(|err| newer_format(row).unwrap_or(err))
}

/// An execution row this process is about to change: [`Error::NewerFormat`] for a newer
/// release's row even when it decodes, since writing it back would lose what this
/// release does not know.
pub(crate) fn execution_to_change(row: &PgRow) -> Result<Execution, Error> {
    match newer_format(row) {
        Some(err) => Err(err),
        None => decode_execution(row),
    }
}

fn newer_format(row: &PgRow) -> Option<Error> {
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
pub(crate) fn execution_id(row: &PgRow) -> Option<uuid::Uuid> {
    row.try_get("id").ok()
}

/// Rows a claim returned, split into the executions that decode and the ids of those
/// that do not, with why (to be quarantined).
pub(crate) fn decode_claimed(rows: &[PgRow]) -> (Vec<Execution>, Vec<(uuid::Uuid, String)>) {
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

fn decode_execution(row: &PgRow) -> Result<Execution, Error> {
    let result: Option<String> = get(row, "result")?;
    let lease_expires_at: Option<Timestamp> = get(row, "lease_expires_at")?;
    Ok(Execution {
        id: get(row, "id")?,
        workflow_id: get(row, "workflow_id")?,
        workflow_key: get(row, "workflow_key")?,
        workflow_version: get(row, "workflow_version")?,
        snapshot_id: get(row, "snapshot_id")?,
        status: enum_text(row, "status")?,
        result: result
            .map(|r| serde_json::from_value(Value::String(r)).map_err(|e| corrupt("result", e)))
            .transpose()?,
        trigger_event: get(row, "trigger_event")?,
        trigger_payload: get::<Json<Value>>(row, "trigger_payload")?.0,
        context: get::<Json<Value>>(row, "context")?.0,
        cursor: typed_opt(row, "cursor")?,
        visits: typed(row, "visits")?,
        steps_run: count(row, "steps_run")?,
        version: get(row, "version")?,
        lease: lease_expires_at
            .map(|expires_at| get(row, "lease_owner").map(|owner| Lease { owner, expires_at }))
            .transpose()?,
        gate: typed_opt(row, "gate")?,
        wake: typed_opt(row, "wake")?,
        pause_requested: get(row, "pause_requested")?,
        deadline: get(row, "deadline")?,
        resume_count: count(row, "resume_count")?,
        last_resumed_at: get(row, "last_resumed_at")?,
        started_at: get(row, "started_at")?,
        completed_at: get(row, "completed_at")?,
        updated_at: get(row, "updated_at")?,
        error: typed_opt(row, "error")?,
        requested_by: get(row, "requested_by")?,
        consumed_events: get(row, "consumed_events")?,
    })
}

pub(crate) fn quarantined(row: &PgRow) -> Result<tollgate_store::Quarantined, Error> {
    Ok(tollgate_store::Quarantined {
        execution_id: get(row, "execution_id")?,
        detail: get(row, "detail")?,
        original: get::<Json<Value>>(row, "original")?.0,
        quarantined_at: get(row, "quarantined_at")?,
    })
}

pub(crate) fn step_record(row: &PgRow) -> Result<StepRecord, Error> {
    Ok(StepRecord {
        id: get(row, "id")?,
        execution_id: get(row, "execution_id")?,
        step_id: get(row, "step_id")?,
        step_type: get(row, "step_type")?,
        parent_step_id: get(row, "parent_step_id")?,
        iteration: get::<Option<i32>>(row, "iteration")?.and_then(|i| u32::try_from(i).ok()),
        visit: count(row, "visit")?,
        attempt: count(row, "attempt")?,
        status: enum_text(row, "status")?,
        input: get::<Json<Value>>(row, "input")?.0,
        output: get::<Json<Value>>(row, "output")?.0,
        warnings: typed(row, "warnings")?,
        started_at: get(row, "started_at")?,
        completed_at: get(row, "completed_at")?,
        error: typed_opt(row, "error")?,
    })
}

pub(crate) fn approval(row: &PgRow) -> Result<ApprovalRequest, Error> {
    Ok(ApprovalRequest {
        id: get(row, "id")?,
        execution_id: get(row, "execution_id")?,
        step_id: get(row, "step_id")?,
        visit: count(row, "visit")?,
        entity_type: get(row, "entity_type")?,
        entity_id: get(row, "entity_id")?,
        approver_roles: get(row, "approver_roles")?,
        approver_users: get(row, "approver_users")?,
        required: count(row, "required")?,
        status: enum_text(row, "status")?,
        reason: get(row, "reason")?,
        data: get::<Json<Value>>(row, "data")?.0,
        decisions: typed(row, "decisions")?,
        requested_by: get(row, "requested_by")?,
        allow_self_approval: get(row, "allow_self_approval")?,
        requested_at: get(row, "requested_at")?,
        expires_at: get(row, "expires_at")?,
        decided_at: get(row, "decided_at")?,
    })
}

pub(crate) fn event(row: &PgRow) -> Result<Event, Error> {
    Ok(Event {
        id: get(row, "id")?,
        event_id: get(row, "event_id")?,
        event_type: get(row, "event_type")?,
        payload: get::<Json<Value>>(row, "payload")?.0,
        source: get(row, "source")?,
        correlation_id: get(row, "correlation_id")?,
        submitted_by: get(row, "submitted_by")?,
        received_at: get(row, "received_at")?,
        started: get(row, "started")?,
        resumed: get(row, "resumed")?,
    })
}

pub(crate) fn resume_request(row: &PgRow) -> Result<ResumeRequest, Error> {
    Ok(ResumeRequest {
        id: get(row, "id")?,
        execution_id: get(row, "execution_id")?,
        trigger: enum_text(row, "trigger")?,
        actor: get(row, "actor")?,
        data: get::<Json<Value>>(row, "data")?.0,
        requested_at: get(row, "requested_at")?,
        executed_at: get(row, "executed_at")?,
        outcome: enum_text(row, "outcome")?,
        error: get(row, "error")?,
    })
}

pub(crate) fn record(row: &PgRow) -> Result<Record, Error> {
    Ok(Record {
        entity: get(row, "entity")?,
        entity_id: get(row, "entity_id")?,
        data: get::<Json<Value>>(row, "data")?.0,
        version: get(row, "version")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) fn notification(row: &PgRow) -> Result<Notification, Error> {
    Ok(Notification {
        id: get(row, "id")?,
        execution_id: get(row, "execution_id")?,
        step_id: get(row, "step_id")?,
        recipients: get(row, "recipients")?,
        message: get(row, "message")?,
        channel: get(row, "channel")?,
        status: get(row, "status")?,
        created_at: get(row, "created_at")?,
        kind: get::<Option<String>>(row, "kind")?.unwrap_or_else(|| "notify".into()),
        approval_id: get(row, "approval_id")?,
        subject: get(row, "subject")?,
        link_user: get(row, "link_user")?,
        attempts: u32::try_from(get::<Option<i32>>(row, "attempts")?.unwrap_or(0)).unwrap_or(0),
        last_error: get(row, "last_error")?,
        next_attempt_at: get(row, "next_attempt_at")?,
        sent_at: get(row, "sent_at")?,
    })
}

pub(crate) fn rung(row: &PgRow) -> Result<ApprovalRung, Error> {
    Ok(ApprovalRung {
        approval_id: get(row, "approval_id")?,
        execution_id: get(row, "execution_id")?,
        position: u32::try_from(get::<i32>(row, "position")?).unwrap_or(0),
        kind: get(row, "kind")?,
        due_at: get(row, "due_at")?,
        add_roles: get(row, "add_roles")?,
        add_users: get(row, "add_users")?,
        notify: get::<Json<Vec<Notification>>>(row, "notify")?.0,
        fired_at: get(row, "fired_at")?,
        outcome: get(row, "outcome")?,
    })
}

pub(crate) fn api_key(row: &PgRow) -> Result<ApiKey, Error> {
    Ok(ApiKey {
        id: get(row, "id")?,
        name: get(row, "name")?,
        roles: get(row, "roles")?,
        key_hash: get(row, "key_hash")?,
        created_at: get(row, "created_at")?,
    })
}

pub(crate) fn schedule(row: &PgRow) -> Result<tollgate_model::schedule::Schedule, Error> {
    Ok(tollgate_model::schedule::Schedule {
        id: get(row, "id")?,
        workflow_id: get(row, "workflow_id")?,
        cron: get(row, "cron")?,
        timezone: get(row, "timezone")?,
        enabled: get(row, "enabled")?,
        catch_up: enum_text(row, "catch_up")?,
        from_trigger: get(row, "from_trigger")?,
        next_fire_at: get(row, "next_fire_at")?,
        last_fired_at: get(row, "last_fired_at")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(crate) fn tick(row: &PgRow) -> Result<tollgate_model::schedule::Tick, Error> {
    Ok(tollgate_model::schedule::Tick {
        id: get(row, "id")?,
        schedule_id: get(row, "schedule_id")?,
        tick_time: get(row, "tick_time")?,
        status: enum_text(row, "status")?,
        owner: get(row, "owner")?,
        lease_expires_at: get(row, "lease_expires_at")?,
        claimed_at: get(row, "claimed_at")?,
        started_at: get(row, "started_at")?,
        execution_id: get(row, "execution_id")?,
        error: get(row, "error")?,
    })
}

pub(crate) fn console_session(
    row: &PgRow,
) -> Result<tollgate_model::records::ConsoleSession, Error> {
    Ok(tollgate_model::records::ConsoleSession {
        id_hash: get(row, "id_hash")?,
        key_hash: get(row, "key_hash")?,
        csrf: get(row, "csrf")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

pub(crate) fn worker_beat(row: &PgRow) -> Result<tollgate_model::records::WorkerBeat, Error> {
    let claimed: i64 = get(row, "claimed")?;
    Ok(tollgate_model::records::WorkerBeat {
        worker_id: get(row, "worker_id")?,
        started_at: get(row, "started_at")?,
        beat_at: get(row, "beat_at")?,
        last_claim_at: get(row, "last_claim_at")?,
        claimed: u64::try_from(claimed).unwrap_or(0),
    })
}
