//! What every write shares: the writer's transactions (opened with `BEGIN IMMEDIATE`, or
//! held by hand across multi-statement queries), execution, step, approval and audit
//! rows, and the effects a commit applies.

use serde_json::Value;
use sqlx::sqlite::{Sqlite, SqliteConnection};
use tollgate_model::records::{
    ApprovalRequest, ApprovalStatus, Execution, Notification, ResumeOutcome, ResumeRequest,
    ResumeTrigger, StepRecord, Timestamp,
};
use tollgate_model::undo::ContextUndo;
use tollgate_model::ExecutionStatus;
use tollgate_store::{decode_id_cursor, rules, Effect, Error, PageRequest, Result};
use uuid::Uuid;

use crate::rows::{backend, enum_str, json, opt_ts, ts};
use crate::{rows, SqliteStore};

pub(super) type Tx = sqlx::Transaction<'static, Sqlite>;

impl SqliteStore {
    pub(super) async fn write_tx(&self) -> Result<Tx> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)
    }

    /// The writer connection for a transaction managed by hand ([`Held`]).
    pub(super) async fn held(&self) -> Result<Held> {
        Held::acquire(&self.writer).await
    }
}

/// The writer connection while a transaction is managed by hand: a transaction opened
/// and finished inside multi-statement queries costs one thread hop per query instead of
/// one per statement. If it is dropped unsettled (an error, or a caller that stopped
/// waiting), the connection is detached and closed, and SQLite rolls the transaction back.
pub(super) struct Held {
    pub(super) conn: Option<sqlx::pool::PoolConnection<Sqlite>>,
    pub(crate) settled: bool,
}

impl Held {
    /// The writer connection of `writer`, no transaction open yet.
    pub(crate) async fn acquire(writer: &sqlx::SqlitePool) -> Result<Self> {
        Ok(Self {
            conn: Some(writer.acquire().await.map_err(backend)?),
            settled: false,
        })
    }

    /// Runs `query` — a whole transaction, `BEGIN IMMEDIATE` to `COMMIT`, in one text —
    /// and returns its rows: settled when it succeeded, rolled back when it failed. The
    /// error is SQLite's own, so that a caller can tell a clash from a failure.
    pub(crate) async fn fetch_all<'q>(
        &mut self,
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> std::result::Result<Vec<sqlx::sqlite::SqliteRow>, sqlx::Error> {
        let conn = self.conn.as_deref_mut().ok_or(sqlx::Error::PoolClosed)?;
        match query.fetch_all(conn).await {
            Ok(rows) => {
                self.settled = true;
                Ok(rows)
            }
            Err(err) => {
                self.rollback().await;
                Err(err)
            }
        }
    }

    pub(crate) fn conn(&mut self) -> Result<&mut SqliteConnection> {
        self.conn
            .as_deref_mut()
            .ok_or_else(|| Error::Backend("the writer connection was already released".into()))
    }

    /// Rolls back after a failed or refused transaction.
    pub(crate) async fn rollback(&mut self) {
        if let Ok(conn) = self.conn() {
            if sqlx::query("ROLLBACK").execute(conn).await.is_ok() {
                self.settled = true;
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.settled {
            if let Some(conn) = self.conn.take() {
                drop(conn.detach());
            }
        }
    }
}

pub(super) async fn commit(tx: Tx) -> Result<()> {
    tx.commit().await.map_err(backend)
}

pub(super) fn id_after(page: &PageRequest) -> Result<Option<String>> {
    Ok(decode_id_cursor(page.cursor.as_deref())?.map(|u| u.to_string()))
}

pub(super) async fn load_execution(conn: &mut SqliteConnection, id: Uuid) -> Result<Execution> {
    let row = sqlx::query(concat!(select_executions!(), " WHERE id = ?"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    row.as_ref()
        .map(rows::execution_to_change)
        .transpose()?
        .ok_or_else(|| Error::not_found("execution", id))
}

pub(super) const EXECUTION_COLUMNS: &str = "id, workflow_id, workflow_key, workflow_version, snapshot_id, status, result, trigger_event, \
    trigger_payload, context, cursor, visits, steps_run, version, lease_owner, lease_expires_at, gate, gate_reason, \
    gate_deadline, gate_event, gate_approval_id, paused_at, wake, pause_requested, deadline, resume_count, \
    last_resumed_at, started_at, completed_at, updated_at, error, requested_by, consumed_events";

/// An execution's row, column by column in the order of [`EXECUTION_COLUMNS`]: the
/// columns set only at insert, and between them its changing columns
/// ([`changing_cells`]), which keep their relative order in the row.
pub(super) fn execution_cells(e: &Execution) -> Vec<Cell> {
    let mut changing = changing_cells(e).into_iter();
    EXECUTION_COLUMNS
        .split(',')
        .map(str::trim)
        .map(|column| match column {
            "id" => e.id.to_string().into(),
            "workflow_id" => e.workflow_id.to_string().into(),
            "workflow_key" => e.workflow_key.clone().into(),
            "workflow_version" => e.workflow_version.clone().into(),
            "snapshot_id" => e.snapshot_id.clone().into(),
            "trigger_event" => e.trigger_event.clone().into(),
            "trigger_payload" => json(&e.trigger_payload).into(),
            "started_at" => ts(e.started_at).into(),
            "requested_by" => e.requested_by.clone().into(),
            _ => changing.next().unwrap_or(Cell::Null),
        })
        .collect()
}

/// Binds an execution's whole row, in the order of [`EXECUTION_COLUMNS`].
pub(super) fn bind_execution<'q>(query: Bound<'q>, e: &Execution) -> Bound<'q> {
    bind_cells(query, execution_cells(e))
}

/// One column's value: bound as a parameter of a statement, or carried in a JSON row
/// that a constant statement reads with `->>` (which gives back the same SQL type:
/// text, integer or NULL). One list of cells per row kind serves both, so a batch
/// written as JSON rows stores exactly what a statement per row would.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    /// `TEXT`.
    Text(String),
    /// `INTEGER`.
    Int(i64),
    /// `NULL`.
    Null,
}

impl From<String> for Cell {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

impl From<&str> for Cell {
    fn from(value: &str) -> Self {
        Self::Text(value.to_owned())
    }
}

impl From<i64> for Cell {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl<T: Into<Cell>> From<Option<T>> for Cell {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

/// Binds `cells` in order.
pub(super) fn bind_cells(mut query: Bound<'_>, cells: Vec<Cell>) -> Bound<'_> {
    for cell in cells {
        query = match cell {
            Cell::Text(text) => query.bind(text),
            Cell::Int(int) => query.bind(int),
            Cell::Null => query.bind(None::<i64>),
        };
    }
    query
}

/// A JSON row (an object keyed by column) of `cells`, named by `columns` (a
/// comma-separated list in the same order), for a statement built by [`json_insert`].
pub(super) fn json_row(columns: &str, cells: Vec<Cell>) -> serde_json::Map<String, Value> {
    columns
        .split(',')
        .map(str::trim)
        .zip(cells)
        .map(|(column, cell)| {
            let value = match cell {
                Cell::Text(text) => Value::String(text),
                Cell::Int(int) => Value::from(int),
                Cell::Null => Value::Null,
            };
            (column.to_owned(), value)
        })
        .collect()
}

/// `rows` as the JSON array text a batch's constant statement reads with `json_each`.
pub(super) fn json_array(rows: Vec<Value>) -> String {
    Value::Array(rows).to_string()
}

/// `INSERT INTO table (columns) SELECT … FROM j WHERE filter` (`j`: `rows_as_j!`): one
/// constant statement inserting every JSON row (from [`json_row`]) of the array bound
/// to it. `filter` may use `j.value`; `true` for none (it also keeps an `ON CONFLICT`
/// after it unambiguous).
pub(super) fn json_insert(table: &str, columns: &str, filter: &str) -> String {
    let picks: Vec<String> = columns
        .split(',')
        .map(str::trim)
        .map(|c| format!("j.value ->> '{c}'"))
        .collect();
    format!(
        "{} INSERT INTO {table} ({columns}) SELECT {} FROM j WHERE {filter}",
        rows_as_j!(),
        picks.join(", ")
    )
}

pub(super) async fn insert_execution(conn: &mut SqliteConnection, e: &Execution) -> Result<()> {
    let sql = format!(
        "INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES ({})",
        vec!["?"; EXECUTION_COLUMNS.split(',').count()].join(", ")
    );
    bind_execution(sqlx::query(&sql), e)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The columns of an execution's row that change after its insert, in the order
/// [`UPDATE_EXECUTION_SQL`] binds them. The others (its workflow, trigger and start)
/// never change but by a migration, which writes the whole row.
const CHANGING_COLUMNS: [&str; 24] = [
    "status",
    "result",
    "context",
    "cursor",
    "visits",
    "steps_run",
    "version",
    "lease_owner",
    "lease_expires_at",
    "gate",
    "gate_reason",
    "gate_deadline",
    "gate_event",
    "gate_approval_id",
    "paused_at",
    "wake",
    "pause_requested",
    "deadline",
    "resume_count",
    "last_resumed_at",
    "completed_at",
    "updated_at",
    "error",
    "consumed_events",
];

/// `UPDATE` of an existing execution's changing columns, bound by
/// [`bind_execution_update`]. Cheaper than [`upsert_execution_sql`] on the hot paths: no
/// insert attempt that conflicts, no copy of the trigger payload, and the indexes on the
/// unchanging columns (the workflow's) are left alone.
pub(super) static UPDATE_EXECUTION_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        let sets: Vec<String> = CHANGING_COLUMNS
            .iter()
            .map(|c| format!("{c} = ?"))
            .collect();
        format!("UPDATE executions SET {} WHERE id = ?", sets.join(", "))
    });

/// An execution's changing columns, in the order of [`CHANGING_COLUMNS`].
fn changing_cells(e: &Execution) -> Vec<Cell> {
    let gate = e.gate.as_ref();
    vec![
        e.status.as_str().into(),
        e.result.map(tollgate_model::ExecutionResult::as_str).into(),
        json(&e.context).into(),
        e.cursor.as_ref().map(json).into(),
        json(&e.visits).into(),
        i64::from(e.steps_run).into(),
        e.version.into(),
        e.lease.as_ref().and_then(|l| l.owner.clone()).into(),
        e.lease.as_ref().map(|l| ts(l.expires_at)).into(),
        gate.map(json).into(),
        gate.map(|g| g.reason.as_str()).into(),
        gate.and_then(|g| g.deadline).map(ts).into(),
        gate.and_then(|g| g.event.clone()).into(),
        gate.and_then(|g| g.approval_id)
            .map(|a| a.to_string())
            .into(),
        gate.map(|g| ts(g.paused_at)).into(),
        e.wake.as_ref().map(json).into(),
        i64::from(e.pause_requested).into(),
        opt_ts(e.deadline).into(),
        i64::from(e.resume_count).into(),
        opt_ts(e.last_resumed_at).into(),
        opt_ts(e.completed_at).into(),
        ts(e.updated_at).into(),
        e.error.as_ref().map(json).into(),
        json(&e.consumed_events).into(),
    ]
}

/// An execution's changing columns then its id: the parameters of
/// [`UPDATE_EXECUTION_SQL`].
pub(super) fn execution_update_cells(e: &Execution) -> Vec<Cell> {
    let mut cells = changing_cells(e);
    cells.push(e.id.to_string().into());
    cells
}

/// Binds the parameters of [`UPDATE_EXECUTION_SQL`] for `e`.
pub(super) fn bind_execution_update<'q>(query: Bound<'q>, e: &Execution) -> Bound<'q> {
    bind_cells(query, execution_update_cells(e))
}

/// An execution's changing columns and id as a JSON row, for [`JSON_UPDATE_EXECUTIONS_SQL`].
pub(super) fn execution_update_row(e: &Execution) -> Value {
    static COLUMNS: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{}, id", CHANGING_COLUMNS.join(", ")));
    Value::Object(json_row(&COLUMNS, execution_update_cells(e)))
}

/// [`UPDATE_EXECUTION_SQL`] for every JSON row ([`execution_update_row`]) of the array
/// bound to it, as one constant statement.
pub(super) static JSON_UPDATE_EXECUTIONS_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| {
        let sets: Vec<String> = CHANGING_COLUMNS
            .iter()
            .map(|c| format!("{c} = j.value ->> '{c}'"))
            .collect();
        format!(
            "{} UPDATE executions SET {} FROM j WHERE executions.id = j.value ->> 'id'",
            rows_as_j!(),
            sets.join(", ")
        )
    });

/// `INSERT … ON CONFLICT DO UPDATE` of every column, bound by [`bind_execution`].
pub(super) fn upsert_execution_sql() -> String {
    let sets: Vec<String> = EXECUTION_COLUMNS
        .split(',')
        .map(str::trim)
        .skip(1)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES ({}) ON CONFLICT(id) DO UPDATE SET {}",
        vec!["?"; EXECUTION_COLUMNS.split(',').count()].join(", "),
        sets.join(", ")
    )
}

/// Writes the whole row (the caller loaded it in the same transaction).
pub(super) async fn write_execution(conn: &mut SqliteConnection, e: &Execution) -> Result<()> {
    bind_execution(sqlx::query(&upsert_execution_sql()), e)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// One parameterised query (possibly several statements) being bound.
pub(super) type Bound<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

pub(super) const UPSERT_STEP_SQL: &str = "INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT(id) DO UPDATE SET status = excluded.status, input = excluded.input, output = excluded.output, \
     warnings = excluded.warnings, started_at = excluded.started_at, completed_at = excluded.completed_at, error = excluded.error";

/// The columns of a step record's row, in the order [`step_cells`] gives them.
pub(super) const STEP_COLUMNS: &str = "id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error";

/// A step record's row, column by column in the order of [`STEP_COLUMNS`].
pub(super) fn step_cells(r: &StepRecord) -> Vec<Cell> {
    vec![
        r.id.to_string().into(),
        r.execution_id.to_string().into(),
        r.step_id.clone().into(),
        r.step_type.clone().into(),
        r.parent_step_id.clone().into(),
        r.iteration.map(i64::from).into(),
        i64::from(r.visit).into(),
        i64::from(r.attempt).into(),
        r.status.as_str().into(),
        json(&r.input).into(),
        json(&r.output).into(),
        json(&r.warnings).into(),
        ts(r.started_at).into(),
        opt_ts(r.completed_at).into(),
        r.error.as_ref().map(json).into(),
    ]
}

pub(super) fn bind_step<'q>(query: Bound<'q>, r: &StepRecord) -> Bound<'q> {
    bind_cells(query, step_cells(r))
}

/// The statement writing one commit's part of the context undo trail (see
/// [`tollgate_store::StepCommit::undo`]): its entries under the execution's new version,
/// or, for an execution that completed (`drop`), the deletion of its trail; empty when
/// there is nothing to write. Its parameters are bound by [`bind_trail`].
pub(super) fn trail_sql(undo: &[ContextUndo], drop: bool) -> &'static str {
    if drop {
        " DELETE FROM context_trail WHERE execution_id = ?;"
    } else if undo.is_empty() {
        ""
    } else {
        " INSERT INTO context_trail (execution_id, version, undo) VALUES (?, ?, ?);"
    }
}

/// Binds the parameters of [`trail_sql`] for the same arguments.
pub(super) fn bind_trail<'q>(
    query: Bound<'q>,
    execution: &Execution,
    undo: &[ContextUndo],
    drop: bool,
) -> Bound<'q> {
    if drop {
        query.bind(execution.id.to_string())
    } else if undo.is_empty() {
        query
    } else {
        query
            .bind(execution.id.to_string())
            .bind(execution.version)
            .bind(json(&undo))
    }
}

/// Writes one commit's part of the context undo trail (see [`trail_sql`]).
pub(super) async fn write_trail(
    conn: &mut SqliteConnection,
    execution: &Execution,
    undo: &[ContextUndo],
    drop: bool,
) -> Result<()> {
    let sql = trail_sql(undo, drop);
    if sql.is_empty() {
        return Ok(());
    }
    bind_trail(sqlx::query(sql), execution, undo, drop)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn upsert_step(conn: &mut SqliteConnection, r: &StepRecord) -> Result<()> {
    bind_step(sqlx::query(UPSERT_STEP_SQL), r)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn insert_resume_request(
    conn: &mut SqliteConnection,
    r: &ResumeRequest,
) -> Result<()> {
    sqlx::query("INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(r.id.to_string())
        .bind(r.execution_id.to_string())
        .bind(enum_str(&r.trigger))
        .bind(r.actor.clone())
        .bind(json(&r.data))
        .bind(ts(r.requested_at))
        .bind(opt_ts(r.executed_at))
        .bind(enum_str(&r.outcome))
        .bind(r.error.clone())
        .execute(conn)
        .await
        .map_err(|err| match &err {
            sqlx::Error::Database(db) if db.message().contains("FOREIGN KEY") => Error::not_found("execution", r.execution_id),
            _ => backend(err),
        })?;
    Ok(())
}

pub(super) async fn audit(
    conn: &mut SqliteConnection,
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
    conn: &mut SqliteConnection,
    id: Uuid,
    detail: &str,
    now: Timestamp,
) -> Result<()> {
    let row = sqlx::query(concat!(select_executions!(), " WHERE id = ?"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    let Some(row) = row else {
        return Err(Error::not_found("execution", id));
    };
    let original = rows::verbatim(&row);
    let format = original
        .get("format")
        .and_then(Value::as_i64)
        .unwrap_or(tollgate_store::STORED_FORMAT);
    if format > tollgate_store::STORED_FORMAT {
        return Err(Error::NewerFormat {
            what: "execution",
            id: id.to_string(),
            format,
        });
    }
    sqlx::query(
        "INSERT INTO quarantined_executions (execution_id, detail, original, quarantined_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (execution_id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(detail)
    .bind(json(&original))
    .bind(ts(now))
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    sqlx::query(
        "UPDATE executions SET status = 'failed', result = NULL, cursor = NULL, visits = '{}', \
         lease_owner = NULL, lease_expires_at = NULL, gate = NULL, gate_reason = NULL, gate_deadline = NULL, \
         gate_event = NULL, gate_approval_id = NULL, paused_at = NULL, wake = NULL, pause_requested = 0, \
         consumed_events = '[]', completed_at = ?, updated_at = ?, error = ?, version = version + 1 WHERE id = ?",
    )
    .bind(ts(now))
    .bind(ts(now))
    .bind(json(&rules::quarantine_error(detail)))
    .bind(id.to_string())
    .execute(&mut *conn)
    .await
    .map_err(backend)?;
    close_approvals(conn, id, ApprovalStatus::Cancelled, now).await
}

pub(super) async fn close_approvals(
    conn: &mut SqliteConnection,
    execution_id: Uuid,
    status: ApprovalStatus,
    now: Timestamp,
) -> Result<()> {
    sqlx::query("UPDATE approvals SET status = ?, decided_at = ? WHERE execution_id = ? AND status = 'pending'")
        .bind(status.as_str())
        .bind(ts(now))
        .bind(execution_id.to_string())
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn load_approval(
    conn: &mut SqliteConnection,
    id: Uuid,
) -> Result<ApprovalRequest> {
    let row = sqlx::query("SELECT * FROM approvals WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    row.as_ref()
        .map(rows::approval)
        .transpose()?
        .ok_or_else(|| Error::not_found("approval", id))
}

pub(super) const INSERT_APPROVAL_SQL: &str = "INSERT INTO approvals (id, execution_id, step_id, visit, entity_type, entity_id, approver_roles, approver_users, required, status, reason, data, decisions, requested_by, allow_self_approval, requested_at, expires_at, decided_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// The columns of an approval request's row, in the order [`approval_cells`] gives them.
pub(super) const APPROVAL_COLUMNS: &str = "id, execution_id, step_id, visit, entity_type, entity_id, approver_roles, approver_users, required, status, reason, data, decisions, requested_by, allow_self_approval, requested_at, expires_at, decided_at";

/// An approval request's row, column by column in the order of [`APPROVAL_COLUMNS`].
pub(super) fn approval_cells(a: &ApprovalRequest) -> Vec<Cell> {
    vec![
        a.id.to_string().into(),
        a.execution_id.to_string().into(),
        a.step_id.clone().into(),
        i64::from(a.visit).into(),
        a.entity_type.clone().into(),
        a.entity_id.clone().into(),
        json(&a.approver_roles).into(),
        json(&a.approver_users).into(),
        i64::from(a.required).into(),
        a.status.as_str().into(),
        a.reason.clone().into(),
        json(&a.data).into(),
        json(&a.decisions).into(),
        a.requested_by.clone().into(),
        i64::from(a.allow_self_approval).into(),
        ts(a.requested_at).into(),
        opt_ts(a.expires_at).into(),
        opt_ts(a.decided_at).into(),
    ]
}

pub(super) fn bind_approval<'q>(query: Bound<'q>, a: &ApprovalRequest) -> Bound<'q> {
    bind_cells(query, approval_cells(a))
}

pub(super) async fn insert_approval(
    conn: &mut SqliteConnection,
    a: &ApprovalRequest,
) -> Result<()> {
    bind_approval(sqlx::query(INSERT_APPROVAL_SQL), a)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) async fn apply_effect(
    conn: &mut SqliteConnection,
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
            let existing = sqlx::query("SELECT * FROM records WHERE entity = ? AND entity_id = ?")
                .bind(entity)
                .bind(entity_id)
                .fetch_optional(&mut *conn)
                .await
                .map_err(backend)?;
            match existing.as_ref().map(rows::record).transpose()? {
                Some(mut record) => {
                    rules::merge_record_data(&mut record.data, data.clone(), *merge);
                    sqlx::query("UPDATE records SET data = ?, version = version + 1, updated_at = ? WHERE entity = ? AND entity_id = ?")
                        .bind(json(&record.data))
                        .bind(ts(now))
                        .bind(entity)
                        .bind(entity_id)
                        .execute(conn)
                        .await
                        .map_err(backend)?;
                }
                None => {
                    sqlx::query("INSERT INTO records (entity, entity_id, data, version, updated_at) VALUES (?, ?, ?, 1, ?)")
                        .bind(entity)
                        .bind(entity_id)
                        .bind(json(data))
                        .bind(ts(now))
                        .execute(conn)
                        .await
                        .map_err(backend)?;
                }
            }
        }
        Effect::Notify(n) => insert_notification(conn, n, false).await?,
        Effect::Rung(r) => {
            sqlx::query("INSERT INTO approval_rungs (approval_id, position, execution_id, kind, due_at, add_roles, add_users, notify, fired_at, outcome) \
                         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(approval_id, position) DO NOTHING")
                .bind(r.approval_id.to_string())
                .bind(i64::from(r.position))
                .bind(r.execution_id.to_string())
                .bind(r.kind.clone())
                .bind(ts(r.due_at))
                .bind(json(&r.add_roles))
                .bind(json(&r.add_users))
                .bind(json(&r.notify))
                .bind(opt_ts(r.fired_at))
                .bind(r.outcome.clone())
                .execute(conn)
                .await
                .map_err(backend)?;
        }
        Effect::Sla(sla) => {
            sqlx::query(
                "INSERT INTO approval_sla (approval_id, priority, due_at) VALUES (?, ?, ?) \
                         ON CONFLICT(approval_id) DO NOTHING",
            )
            .bind(sla.approval_id.to_string())
            .bind(sla.priority.clone())
            .bind(opt_ts(sla.due_at))
            .execute(conn)
            .await
            .map_err(backend)?;
        }
    }
    Ok(())
}

/// Runs a `SELECT status, COUNT(*) … GROUP BY status` query.
pub(super) async fn status_counts(
    pool: &sqlx::SqlitePool,
    sql: &'static str,
) -> Result<Vec<(ExecutionStatus, u64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(pool).await.map_err(backend)?;
    rules::status_counts(rows)
}

/// Inserts a notification and its delivery row (kind, outbox state). A second insert of
/// the same id changes nothing, unless `replace` (a notifier reporting an outcome).
pub(super) async fn insert_notification(
    conn: &mut SqliteConnection,
    n: &Notification,
    replace: bool,
) -> Result<()> {
    sqlx::query(if replace {
        "INSERT INTO notifications (id, execution_id, step_id, recipients, message, channel, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT(id) DO UPDATE SET recipients = excluded.recipients, message = excluded.message, channel = excluded.channel, status = excluded.status"
    } else {
        "INSERT INTO notifications (id, execution_id, step_id, recipients, message, channel, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING"
    })
        .bind(n.id.to_string())
        .bind(n.execution_id.to_string())
        .bind(n.step_id.clone())
        .bind(json(&n.recipients))
        .bind(n.message.clone())
        .bind(n.channel.clone())
        .bind(n.status.clone())
        .bind(ts(n.created_at))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    write_delivery(conn, n, replace).await
}

/// Writes a notification's delivery row; `replace` overwrites an existing one.
pub(super) async fn write_delivery(
    conn: &mut SqliteConnection,
    n: &Notification,
    replace: bool,
) -> Result<()> {
    let conflict = if replace {
        "ON CONFLICT(notification_id) DO UPDATE SET attempts = excluded.attempts, last_error = excluded.last_error, \
         next_attempt_at = excluded.next_attempt_at, claimed_by = NULL, claim_until = NULL, sent_at = excluded.sent_at"
    } else {
        "ON CONFLICT(notification_id) DO NOTHING"
    };
    sqlx::query(&format!("INSERT INTO notification_deliveries (notification_id, execution_id, kind, approval_id, subject, link_user, attempts, last_error, next_attempt_at, sent_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) {conflict}"))
        .bind(n.id.to_string())
        .bind(n.execution_id.to_string())
        .bind(n.kind.clone())
        .bind(n.approval_id.map(|a| a.to_string()))
        .bind(n.subject.clone())
        .bind(n.link_user.clone())
        .bind(i64::from(n.attempts))
        .bind(n.last_error.clone())
        .bind(opt_ts(n.next_attempt_at))
        .bind(opt_ts(n.sent_at))
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// A notification with its delivery state; the `WHERE` follows.
pub(super) const NOTIFICATION_SELECT: &str = "SELECT n.id, n.execution_id, n.step_id, n.recipients, n.message, n.channel, n.status, n.created_at, \
    d.kind, d.approval_id, d.subject, d.link_user, d.attempts, d.last_error, d.next_attempt_at, d.sent_at, d.claimed_by \
    FROM notifications n LEFT JOIN notification_deliveries d ON d.notification_id = n.id";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::{CHANGING_COLUMNS, EXECUTION_COLUMNS};

    /// [`super::execution_cells`] places the changing columns by their order: the row's
    /// columns other than those set only at insert must be exactly them, in their order.
    #[test]
    fn the_changing_columns_keep_their_order_in_the_row() {
        const INSERT_ONLY: [&str; 9] = [
            "id",
            "workflow_id",
            "workflow_key",
            "workflow_version",
            "snapshot_id",
            "trigger_event",
            "trigger_payload",
            "started_at",
            "requested_by",
        ];
        let rest: Vec<&str> = EXECUTION_COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|c| !INSERT_ONLY.contains(c))
            .collect();
        assert_eq!(rest, CHANGING_COLUMNS);
    }
}
