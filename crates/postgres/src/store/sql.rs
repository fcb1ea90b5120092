//! What every write shares: transactions, execution, step, approval and audit rows, and
//! the effects a commit applies.

use std::sync::LazyLock;

use serde_json::Value;
use sqlx::postgres::{PgArguments, PgConnection, Postgres};
use sqlx::query::Query;
use sqlx::types::Json;
use tollgate_model::records::{
    ApprovalRequest, ApprovalStatus, Execution, Notification, ResumeOutcome, ResumeRequest,
    ResumeTrigger, StepRecord, Timestamp,
};
use tollgate_model::undo::ContextUndo;
use tollgate_model::ExecutionStatus;
use tollgate_store::{decode_id_cursor, rules, Effect, Error, PageRequest, Result};
use uuid::Uuid;

use crate::rows::{backend, enum_str, to_json};
use crate::{rows, PgStore, WAKEUP_CHANNEL};

use super::json_rows::TrailRow;

pub(super) type Tx = sqlx::Transaction<'static, Postgres>;

impl PgStore {
    pub(super) async fn tx(&self) -> Result<Tx> {
        self.pool.begin().await.map_err(backend)
    }
}

pub(super) async fn commit(tx: Tx) -> Result<()> {
    tx.commit().await.map_err(backend)
}

/// Ends a transaction that a rule refused: rolled back now, so that its row locks are
/// gone when the caller sees the refusal (a dropped transaction rolls back only when its
/// connection is next used, and meanwhile `SKIP LOCKED` claims pass its rows over).
pub(super) async fn refuse<T>(tx: Tx, err: Error) -> Result<T> {
    if let Err(rollback) = tx.rollback().await {
        tracing::warn!("rolling back a refused change failed: {rollback}");
    }
    Err(err)
}

pub(super) fn id_after(page: &PageRequest) -> Result<Option<Uuid>> {
    decode_id_cursor(page.cursor.as_deref())
}

pub(super) fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(super) fn limit(n: u32) -> i64 {
    i64::from(n)
}

pub(super) const EXECUTION_COLUMNS: &str = columns!(executions);

/// The stored format of the execution row `alias` (NULL: format 1), selected `AS format`
/// where a read must tell a newer release's row from a damaged one.
///
/// It lives in `execution_formats`, which holds a row only for executions a release with
/// a format above 1 wrote (this release writes none), rather than in a column of
/// `executions`: the previous release reads that table with whole-row selects, and
/// PostgreSQL refuses a prepared statement whose result columns changed, so a new
/// column would break every running process of the previous release in a rolling
/// upgrade.
pub(super) fn format_of(alias: &str) -> String {
    format!(
        "(SELECT f.format FROM execution_formats f WHERE f.execution_id = {alias}.id) AS format"
    )
}

/// A condition true for execution rows `alias` this release can read: claims and scans
/// leave a newer release's rows to that release.
pub(super) fn readable(alias: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM execution_formats f WHERE f.execution_id = {alias}.id AND f.format > {})",
        tollgate_store::STORED_FORMAT
    )
}

/// `$1, …, $n`, one per column of [`EXECUTION_COLUMNS`] (what [`bind_execution`] binds).
fn execution_params() -> String {
    (1..=EXECUTION_COLUMNS.split(',').count())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn upsert_execution_sql() -> String {
    let sets: Vec<String> = EXECUTION_COLUMNS
        .split(',')
        .map(str::trim)
        .skip(1)
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let params = execution_params();
    format!("INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES ({params}) ON CONFLICT (id) DO UPDATE SET {}", sets.join(", "))
}

pub(super) fn bind_execution<'q>(
    query: Query<'q, Postgres, PgArguments>,
    e: &'q Execution,
) -> Query<'q, Postgres, PgArguments> {
    let gate = e.gate.as_ref();
    query
        .bind(e.id)
        .bind(e.workflow_id)
        .bind(e.workflow_key.clone())
        .bind(e.workflow_version.clone())
        .bind(e.snapshot_id.clone())
        .bind(e.status.as_str())
        .bind(e.result.map(tollgate_model::ExecutionResult::as_str))
        .bind(e.trigger_event.clone())
        .bind(Json(e.trigger_payload.clone()))
        .bind(Json(e.context.clone()))
        .bind(e.cursor.as_ref().map(to_json))
        .bind(to_json(&e.visits))
        .bind(int(e.steps_run))
        .bind(e.version)
        .bind(e.lease.as_ref().and_then(|l| l.owner.clone()))
        .bind(e.lease.as_ref().map(|l| l.expires_at))
        .bind(gate.map(to_json))
        .bind(gate.map(|g| g.reason.as_str()))
        .bind(gate.and_then(|g| g.deadline))
        .bind(gate.and_then(|g| g.event.clone()))
        .bind(gate.and_then(|g| g.approval_id))
        .bind(gate.map(|g| g.paused_at))
        .bind(e.wake.as_ref().map(to_json))
        .bind(e.pause_requested)
        .bind(e.deadline)
        .bind(int(e.resume_count))
        .bind(e.last_resumed_at)
        .bind(e.started_at)
        .bind(e.completed_at)
        .bind(e.updated_at)
        .bind(e.error.as_ref().map(to_json))
        .bind(e.requested_by.clone())
        .bind(e.consumed_events.clone())
}

pub(super) async fn write_execution(conn: &mut PgConnection, e: &Execution) -> Result<()> {
    bind_execution(sqlx::query(&upsert_execution_sql()), e)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn load_execution(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Execution> {
    static LOCKED: LazyLock<String> = LazyLock::new(|| {
        format!(
            concat!(
                "SELECT ",
                columns!(executions),
                ", {} FROM executions WHERE id = $1 FOR UPDATE"
            ),
            format_of("executions")
        )
    });
    static PLAIN: LazyLock<String> = LazyLock::new(|| {
        format!(
            concat!(
                "SELECT ",
                columns!(executions),
                ", {} FROM executions WHERE id = $1"
            ),
            format_of("executions")
        )
    });
    let sql = if lock { &LOCKED } else { &PLAIN };
    let row = sqlx::query(sql.as_str())
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    let decode = if lock {
        rows::execution_to_change
    } else {
        rows::execution
    };
    row.as_ref()
        .map(decode)
        .transpose()?
        .ok_or_else(|| Error::not_found("execution", id))
}

pub(super) const STEP_RECORDSET: &str = "jsonb_to_recordset($1) AS r(id uuid, execution_id uuid, step_id text, step_type text, parent_step_id text, \
    iteration int, visit int, attempt int, status text, input jsonb, output jsonb, warnings jsonb, started_at timestamptz, \
    completed_at timestamptz, error jsonb)";

/// The recordset's columns for an insert. `jsonb_to_recordset` reads a JSON `null` as SQL
/// NULL, so JSON-null inputs and outputs (a step that had none) are put back as JSON.
pub(super) const STEP_SELECT: &str = "r.id, r.execution_id, r.step_id, r.step_type, r.parent_step_id, r.iteration, r.visit, r.attempt, r.status, \
    COALESCE(r.input, 'null'::jsonb), COALESCE(r.output, 'null'::jsonb), COALESCE(r.warnings, '[]'::jsonb), r.started_at, r.completed_at, r.error";

pub(super) const STEP_UPSERT_TAIL: &str = "ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, input = EXCLUDED.input, output = EXCLUDED.output, \
    warnings = EXCLUDED.warnings, started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, error = EXCLUDED.error";

/// Inserts or replaces step records in one statement.
pub(super) async fn upsert_steps(conn: &mut PgConnection, records: &[StepRecord]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
         SELECT {STEP_SELECT} FROM {STEP_RECORDSET} {STEP_UPSERT_TAIL}"
    );
    sqlx::query(&sql)
        .bind(to_json(records))
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn insert_resume_request(
    conn: &mut PgConnection,
    r: &ResumeRequest,
) -> Result<()> {
    sqlx::query("INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(r.id)
        .bind(r.execution_id)
        .bind(enum_str(&r.trigger))
        .bind(r.actor.clone())
        .bind(Json(r.data.clone()))
        .bind(r.requested_at)
        .bind(r.executed_at)
        .bind(enum_str(&r.outcome))
        .bind(r.error.clone())
        .execute(conn)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => Error::not_found("execution", r.execution_id),
            _ => backend(err),
        })?;
    Ok(())
}

pub(super) async fn audit(
    conn: &mut PgConnection,
    execution_id: Uuid,
    trigger: ResumeTrigger,
    actor: Option<&str>,
    data: Value,
    now: Timestamp,
) -> Result<()> {
    let row = ResumeRequest {
        id: Uuid::now_v7(),
        execution_id,
        trigger,
        actor: actor.map(str::to_owned),
        data,
        requested_at: now,
        executed_at: Some(now),
        outcome: ResumeOutcome::Resumed,
        error: None,
    };
    insert_resume_request(conn, &row).await
}

/// Quarantines one execution in the caller's transaction (the contract is
/// `ExecutionStore::quarantine_execution`): the row is kept verbatim, then ended `failed`
/// with every column that holds structured state reset to a value that decodes. The
/// caller reports it (`rules::report_quarantine`) once committed.
pub(super) async fn quarantine(
    conn: &mut PgConnection,
    id: Uuid,
    detail: &str,
    now: Timestamp,
) -> Result<()> {
    let format: Option<Option<i64>> = sqlx::query_scalar(&format!(
        "SELECT {} FROM executions WHERE id = $1 FOR UPDATE",
        format_of("executions")
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    match format {
        None => return Err(Error::not_found("execution", id)),
        Some(Some(format)) if format > tollgate_store::STORED_FORMAT => {
            return Err(Error::NewerFormat {
                what: "execution",
                id: id.to_string(),
                format,
            })
        }
        Some(_) => {}
    }
    sqlx::query(
        "INSERT INTO quarantined_executions (execution_id, detail, original, quarantined_at) \
         SELECT id, $2, to_jsonb(e), $3 FROM executions e WHERE id = $1 ON CONFLICT (execution_id) DO NOTHING",
    )
    .bind(id)
    .bind(detail)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    sqlx::query(
        "UPDATE executions SET status = 'failed', result = NULL, cursor = NULL, visits = '{}'::jsonb, \
         lease_owner = NULL, lease_expires_at = NULL, gate = NULL, gate_reason = NULL, gate_deadline = NULL, \
         gate_event = NULL, gate_approval_id = NULL, paused_at = NULL, wake = NULL, pause_requested = false, \
         completed_at = $2, updated_at = $2, error = $3, version = version + 1 WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .bind(to_json(&rules::quarantine_error(detail)))
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    close_approvals(conn, id, ApprovalStatus::Cancelled, now).await
}

pub(super) async fn close_approvals(
    conn: &mut PgConnection,
    execution_id: Uuid,
    status: ApprovalStatus,
    now: Timestamp,
) -> Result<()> {
    sqlx::query("UPDATE approvals SET status = $1, decided_at = $2 WHERE execution_id = $3 AND status = 'pending'")
        .bind(status.as_str())
        .bind(now)
        .bind(execution_id)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn load_approval(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<ApprovalRequest> {
    let sql = if lock {
        concat!(
            "SELECT ",
            columns!(approvals),
            " FROM approvals WHERE id = $1 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            columns!(approvals),
            " FROM approvals WHERE id = $1"
        )
    };
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    row.as_ref()
        .map(rows::approval)
        .transpose()?
        .ok_or_else(|| Error::not_found("approval", id))
}

pub(super) async fn insert_approval(conn: &mut PgConnection, a: &ApprovalRequest) -> Result<()> {
    sqlx::query(
        "INSERT INTO approvals (id, execution_id, step_id, visit, entity_type, entity_id, approver_roles, approver_users, required, status, reason, data, decisions, requested_by, allow_self_approval, requested_at, expires_at, decided_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(a.id)
    .bind(a.execution_id)
    .bind(a.step_id.clone())
    .bind(int(a.visit))
    .bind(a.entity_type.clone())
    .bind(a.entity_id.clone())
    .bind(a.approver_roles.clone())
    .bind(a.approver_users.clone())
    .bind(int(a.required))
    .bind(a.status.as_str())
    .bind(a.reason.clone())
    .bind(Json(a.data.clone()))
    .bind(to_json(&a.decisions))
    .bind(a.requested_by.clone())
    .bind(a.allow_self_approval)
    .bind(a.requested_at)
    .bind(a.expires_at)
    .bind(a.decided_at)
    .execute(conn)
    .await
    .map_err(|err| match backend(err) {
        Error::Conflict(_) => Error::Conflict(format!("approval {} already exists", a.id)),
        other => other,
    })?;
    Ok(())
}

pub(super) async fn apply_effect(
    conn: &mut PgConnection,
    effect: &Effect,
    now: Timestamp,
) -> Result<()> {
    match effect {
        Effect::UpsertRecord {
            entity,
            entity_id,
            data,
            merge,
        } => {
            // `||` on jsonb objects merges top-level keys, exactly rules::merge_record_data.
            let merged = if *merge {
                "CASE WHEN jsonb_typeof(records.data) = 'object' AND jsonb_typeof(EXCLUDED.data) = 'object' THEN records.data || EXCLUDED.data ELSE EXCLUDED.data END"
            } else {
                "EXCLUDED.data"
            };
            let sql = format!(
                "INSERT INTO records (entity, entity_id, data, version, updated_at) VALUES ($1, $2, $3, 1, $4) \
                 ON CONFLICT (entity, entity_id) DO UPDATE SET data = {merged}, version = records.version + 1, updated_at = EXCLUDED.updated_at"
            );
            sqlx::query(&sql)
                .bind(entity)
                .bind(entity_id)
                .bind(Json(data.clone()))
                .bind(now)
                .execute(conn)
                .await
                .map_err(backend)?;
        }
        Effect::Notify(n) => insert_notification(conn, n, false).await?,
        Effect::Rung(r) => {
            sqlx::query("INSERT INTO approval_rungs (approval_id, position, execution_id, kind, due_at, add_roles, add_users, notify, fired_at, outcome) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (approval_id, position) DO NOTHING")
                .bind(r.approval_id)
                .bind(i32::try_from(r.position).unwrap_or(i32::MAX))
                .bind(r.execution_id)
                .bind(r.kind.clone())
                .bind(r.due_at)
                .bind(r.add_roles.clone())
                .bind(r.add_users.clone())
                .bind(Json(&r.notify))
                .bind(r.fired_at)
                .bind(r.outcome.clone())
                .execute(conn)
                .await
                .map_err(backend)?;
        }
        Effect::Sla(sla) => {
            sqlx::query(
                "INSERT INTO approval_sla (approval_id, priority, due_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (approval_id) DO NOTHING",
            )
            .bind(sla.approval_id)
            .bind(sla.priority.clone())
            .bind(sla.due_at)
            .execute(conn)
            .await
            .map_err(backend)?;
        }
    }
    Ok(())
}

pub(super) async fn notify_workers(conn: &mut PgConnection, what: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(WAKEUP_CHANNEL)
        .bind(what)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Inserts approval requests from the JSON recordset parameter `$param` (alias `a`, with
/// a `slot` column to join on); the statement appends its join and `RETURNING`.
pub(super) fn approvals_from_recordset(param: usize) -> String {
    format!("INSERT INTO approvals (id, execution_id, step_id, visit, entity_type, entity_id, approver_roles, approver_users, required, status, reason, \
        data, decisions, requested_by, allow_self_approval, requested_at, expires_at, decided_at) \
    SELECT a.id, a.execution_id, a.step_id, a.visit, a.entity_type, a.entity_id, a.approver_roles, a.approver_users, a.required, a.status, a.reason, \
        COALESCE(a.data, 'null'::jsonb), COALESCE(a.decisions, '[]'::jsonb), a.requested_by, a.allow_self_approval, a.requested_at, a.expires_at, a.decided_at \
    FROM jsonb_to_recordset(${param}) AS a(slot int, id uuid, execution_id uuid, step_id text, visit int, entity_type text, entity_id text, \
        approver_roles text[], approver_users text[], required int, status text, reason text, data jsonb, decisions jsonb, requested_by text, \
        allow_self_approval boolean, requested_at timestamptz, expires_at timestamptz, decided_at timestamptz)")
}

/// Inserts context undo trail rows (see [`tollgate_store::StepCommit::undo`]) from the
/// JSON recordset parameter `$param` of [`trail_row`]s (alias `t`); the statement appends
/// its filter and `RETURNING`.
pub(super) fn trail_from_recordset(param: usize) -> String {
    format!(
        "INSERT INTO context_trail (execution_id, version, undo) SELECT t.execution_id, t.version, t.undo \
        FROM jsonb_to_recordset(${param}) AS t(execution_id uuid, version bigint, undo jsonb)"
    )
}

/// One row for [`trail_from_recordset`]: `execution`'s trail entries under its version,
/// `None` when there are none or it completed (a completed execution keeps no trail).
pub(super) fn trail_row<'a>(
    execution: &Execution,
    undo: &'a [ContextUndo],
) -> Option<TrailRow<'a>> {
    (!undo.is_empty() && execution.status != ExecutionStatus::Completed).then_some(TrailRow {
        execution_id: execution.id,
        version: execution.version,
        undo,
    })
}

/// Writes one commit's part of the context undo trail: its entries under the
/// execution's version, or, when it completed (`drop`), the deletion of its trail.
pub(super) async fn write_trail(
    conn: &mut PgConnection,
    execution: &Execution,
    undo: &[ContextUndo],
    drop: bool,
) -> Result<()> {
    if drop {
        sqlx::query("DELETE FROM context_trail WHERE execution_id = $1")
            .bind(execution.id)
            .execute(conn)
            .await
            .map_err(backend)?;
    } else if let Some(row) = trail_row(execution, undo) {
        sqlx::query(&trail_from_recordset(1))
            .bind(to_json(&[row]))
            .execute(conn)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// Inserts step records from the JSON recordset parameter `$param` (alias `r`, with its
/// position as `r.ord`: records keep their order); the statement appends its filter,
/// `ORDER BY r.ord` and what follows.
pub(super) fn steps_from_recordset(param: usize) -> String {
    format!("INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
        SELECT {STEP_SELECT} FROM ROWS FROM (jsonb_to_recordset(${param}) AS (id uuid, execution_id uuid, step_id text, step_type text, parent_step_id text, \
        iteration int, visit int, attempt int, status text, input jsonb, output jsonb, warnings jsonb, started_at timestamptz, \
        completed_at timestamptz, error jsonb)) WITH ORDINALITY AS r(id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, \
        status, input, output, warnings, started_at, completed_at, error, ord)")
}

/// Inserts a new execution row.
pub(super) async fn insert_execution(conn: &mut PgConnection, execution: &Execution) -> Result<()> {
    let params = execution_params();
    let sql = format!("INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES ({params})");
    bind_execution(sqlx::query(&sql), execution)
        .execute(conn)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                Error::not_found("snapshot", &execution.snapshot_id)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict(format!("execution {} already exists", execution.id))
            }
            _ => backend(err),
        })?;
    Ok(())
}

/// Runs a `SELECT status, COUNT(*) … GROUP BY status` query.
pub(super) async fn status_counts(
    pool: &sqlx::PgPool,
    sql: &'static str,
) -> Result<Vec<(ExecutionStatus, u64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(pool).await.map_err(backend)?;
    rules::status_counts(rows)
}

/// Inserts a notification and its delivery row (kind, outbox state). A second insert of
/// the same id changes nothing, unless `replace` (a notifier reporting an outcome).
pub(super) async fn insert_notification(
    conn: &mut PgConnection,
    n: &Notification,
    replace: bool,
) -> Result<()> {
    sqlx::query(if replace {
        "INSERT INTO notifications (id, execution_id, step_id, recipients, message, channel, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (id) DO UPDATE SET recipients = EXCLUDED.recipients, message = EXCLUDED.message, channel = EXCLUDED.channel, status = EXCLUDED.status"
    } else {
        "INSERT INTO notifications (id, execution_id, step_id, recipients, message, channel, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING"
    })
        .bind(n.id)
        .bind(n.execution_id)
        .bind(n.step_id.clone())
        .bind(n.recipients.clone())
        .bind(n.message.clone())
        .bind(n.channel.clone())
        .bind(n.status.clone())
        .bind(n.created_at)
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    write_delivery(conn, n, replace).await
}

/// Writes a notification's delivery row; `replace` overwrites an existing one and
/// releases its claim.
pub(super) async fn write_delivery(
    conn: &mut PgConnection,
    n: &Notification,
    replace: bool,
) -> Result<()> {
    let conflict = if replace {
        "ON CONFLICT (notification_id) DO UPDATE SET attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error, \
         next_attempt_at = EXCLUDED.next_attempt_at, claimed_by = NULL, claim_until = NULL, sent_at = EXCLUDED.sent_at"
    } else {
        "ON CONFLICT (notification_id) DO NOTHING"
    };
    sqlx::query(&format!("INSERT INTO notification_deliveries (notification_id, execution_id, kind, approval_id, subject, link_user, attempts, last_error, next_attempt_at, sent_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) {conflict}"))
        .bind(n.id)
        .bind(n.execution_id)
        .bind(n.kind.clone())
        .bind(n.approval_id)
        .bind(n.subject.clone())
        .bind(n.link_user.clone())
        .bind(i32::try_from(n.attempts).unwrap_or(i32::MAX))
        .bind(n.last_error.clone())
        .bind(n.next_attempt_at)
        .bind(n.sent_at)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// A notification with its delivery state; the `WHERE` follows.
pub(super) const NOTIFICATION_SELECT: &str = "SELECT n.id, n.execution_id, n.step_id, n.recipients, n.message, n.channel, n.status, n.created_at, \
    d.kind, d.approval_id, d.subject, d.link_user, d.attempts, d.last_error, d.next_attempt_at, d.sent_at, d.claimed_by \
    FROM notifications n LEFT JOIN notification_deliveries d ON d.notification_id = n.id";

/// The columns of `approval_rungs`, in [`crate::rows::rung`]'s terms.
pub(super) const RUNG_COLUMNS: &str =
    "approval_id, position, execution_id, kind, due_at, add_roles, add_users, notify, fired_at, outcome";
