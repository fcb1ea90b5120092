//! The trait implementations. Each method is one statement or one `BEGIN IMMEDIATE`
//! transaction on the writer connection; reads use the read pool.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::sqlite::{Sqlite, SqliteConnection};
use sqlx::{QueryBuilder, Row};
use tollgate_model::definition::Trigger;
use tollgate_model::records::{
    ApiKey, ApprovalRequest, ApprovalStatus, Decision, Event, Execution, Notification, Principal,
    Record, ResumeOutcome, ResumeRequest, ResumeTrigger, StepRecord, Timestamp, Wake, Workflow,
};
use tollgate_model::{ExecutionStatus, WorkflowDefinition};
use tollgate_store::{
    decode_cursor, decode_id_cursor, encode_cursor, encode_id_cursor, page_from_overfetch, rules,
    ApiKeyStore, ApprovalFilter, ApprovalStore, Committed, Continuation, Decided, Delivery, Effect,
    Error, EventInsert, EventStore, ExecutionFilter, ExecutionStore, Health, LeaseClaim,
    NotificationFilter, NotificationStore, Page, PageRequest, RecordStore, Result,
    ResumeRequestStore, Starting, StepCommit, Transition, WorkflowFilter, WorkflowStore,
};
use uuid::Uuid;

use crate::rows::{self, backend, enum_str, json, opt_ts, ts};
use crate::SqliteStore;

type Tx = sqlx::Transaction<'static, Sqlite>;

impl SqliteStore {
    async fn write_tx(&self) -> Result<Tx> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)
    }
}

impl SqliteStore {
    /// A step commit without effects that enters a gate, ends the execution or consumes
    /// events, in two hops: open the transaction and read the row; then every write and
    /// the commit as one batch.
    async fn commit_in_two_hops(&self, step: StepCommit) -> Result<Committed> {
        let mut held = self.held().await?;
        let read = sqlx::query("BEGIN IMMEDIATE; SELECT * FROM executions WHERE id = ?")
            .bind(step.execution_id.to_string())
            .fetch_all(held.conn()?)
            .await;
        let rows = match read {
            Ok(rows) => rows,
            Err(err) => {
                held.rollback().await;
                return Err(backend(err));
            }
        };
        let Some(row) = rows.first() else {
            held.rollback().await;
            return Err(Error::not_found("execution", step.execution_id));
        };
        let mut execution = match rows::execution(row) {
            Ok(e) => e,
            Err(err) => {
                held.rollback().await;
                return Err(err);
            }
        };
        let now = step.now;
        let wakes = matches!(
            step.transition,
            Transition::Release { .. } | Transition::Gate { .. }
        );
        let writes = match rules::apply_commit(&mut execution, step) {
            Ok(writes) => writes,
            Err(err) => {
                held.rollback().await;
                return Err(err);
            }
        };
        let mut sql = upsert_execution_sql();
        sql.push(';');
        for _ in &writes.records {
            sql.push(' ');
            sql.push_str(UPSERT_STEP_SQL);
            sql.push(';');
        }
        if writes.approval.is_some() {
            sql.push(' ');
            sql.push_str(INSERT_APPROVAL_SQL);
            sql.push(';');
        }
        if writes.close_approvals.is_some() {
            sql.push_str(" UPDATE approvals SET status = ?, decided_at = ? WHERE execution_id = ? AND status = 'pending';");
        }
        sql.push_str(" COMMIT;");
        let mut query = bind_execution(sqlx::query(&sql), &execution);
        for record in &writes.records {
            query = bind_step(query, record);
        }
        if let Some(approval) = &writes.approval {
            query = bind_approval(query, approval);
        }
        if let Some(status) = writes.close_approvals {
            query = query
                .bind(status.as_str())
                .bind(ts(now))
                .bind(execution.id.to_string());
        }
        match query.execute(held.conn()?).await {
            Ok(_) => held.settled = true,
            Err(err) => {
                held.rollback().await;
                return Err(match backend(err) {
                    Error::Conflict(_) if writes.approval.is_some() => Error::Conflict(format!(
                        "approval {} already exists",
                        writes.approval.as_ref().map(|a| a.id).unwrap_or_default()
                    )),
                    other => other,
                });
            }
        }
        if wakes {
            self.wakeups.notify_one();
        }
        Ok(writes.committed)
    }

    pub(crate) async fn held(&self) -> Result<Held> {
        Ok(Held {
            conn: Some(self.writer.acquire().await.map_err(backend)?),
            settled: false,
        })
    }
}

/// The writer connection while a transaction is managed by hand: a transaction opened
/// and finished inside multi-statement queries costs one thread hop per query instead of
/// one per statement. If it is dropped unsettled (an error, or a caller that stopped
/// waiting), the connection is detached and closed, and SQLite rolls the transaction back.
pub(crate) struct Held {
    conn: Option<sqlx::pool::PoolConnection<Sqlite>>,
    pub(crate) settled: bool,
}

impl Held {
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

async fn commit(tx: Tx) -> Result<()> {
    tx.commit().await.map_err(backend)
}

fn id_after(page: &PageRequest) -> Result<Option<String>> {
    Ok(decode_id_cursor(page.cursor.as_deref())?.map(|u| u.to_string()))
}

// ------------------------------------------------------------------ execution rows

async fn load_execution(conn: &mut SqliteConnection, id: Uuid) -> Result<Execution> {
    let row = sqlx::query("SELECT * FROM executions WHERE id = ?")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(backend)?;
    row.as_ref()
        .map(rows::execution)
        .transpose()?
        .ok_or_else(|| Error::not_found("execution", id))
}

const EXECUTION_COLUMNS: &str = "id, workflow_id, workflow_key, workflow_version, snapshot_id, status, result, trigger_event, \
    trigger_payload, context, cursor, visits, steps_run, version, lease_owner, lease_expires_at, gate, gate_reason, \
    gate_deadline, gate_event, gate_approval_id, paused_at, wake, pause_requested, deadline, resume_count, \
    last_resumed_at, started_at, completed_at, updated_at, error, requested_by, consumed_events";

fn bind_execution<'q>(
    query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    e: &Execution,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    let gate = e.gate.as_ref();
    query
        .bind(e.id.to_string())
        .bind(e.workflow_id.to_string())
        .bind(e.workflow_key.clone())
        .bind(e.workflow_version.clone())
        .bind(e.snapshot_id.clone())
        .bind(e.status.as_str())
        .bind(e.result.map(tollgate_model::ExecutionResult::as_str))
        .bind(e.trigger_event.clone())
        .bind(json(&e.trigger_payload))
        .bind(json(&e.context))
        .bind(e.cursor.as_ref().map(json))
        .bind(json(&e.visits))
        .bind(i64::from(e.steps_run))
        .bind(e.version)
        .bind(e.lease.as_ref().and_then(|l| l.owner.clone()))
        .bind(e.lease.as_ref().map(|l| ts(l.expires_at)))
        .bind(gate.map(json))
        .bind(gate.map(|g| g.reason.as_str()))
        .bind(gate.and_then(|g| g.deadline).map(ts))
        .bind(gate.and_then(|g| g.event.clone()))
        .bind(gate.and_then(|g| g.approval_id).map(|a| a.to_string()))
        .bind(gate.map(|g| ts(g.paused_at)))
        .bind(e.wake.as_ref().map(json))
        .bind(i64::from(e.pause_requested))
        .bind(opt_ts(e.deadline))
        .bind(i64::from(e.resume_count))
        .bind(opt_ts(e.last_resumed_at))
        .bind(ts(e.started_at))
        .bind(opt_ts(e.completed_at))
        .bind(ts(e.updated_at))
        .bind(e.error.as_ref().map(json))
        .bind(e.requested_by.clone())
        .bind(json(&e.consumed_events))
}

pub(crate) async fn insert_execution(conn: &mut SqliteConnection, e: &Execution) -> Result<()> {
    let sql = format!(
        "INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES ({})",
        vec!["?"; 33].join(", ")
    );
    bind_execution(sqlx::query(&sql), e)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// `INSERT … ON CONFLICT DO UPDATE` of every column, bound by [`bind_execution`].
fn upsert_execution_sql() -> String {
    let sets: Vec<String> = EXECUTION_COLUMNS
        .split(',')
        .map(str::trim)
        .skip(1)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES ({}) ON CONFLICT(id) DO UPDATE SET {}",
        vec!["?"; 33].join(", "),
        sets.join(", ")
    )
}

/// Writes the whole row (the caller loaded it in the same transaction).
async fn write_execution(conn: &mut SqliteConnection, e: &Execution) -> Result<()> {
    bind_execution(sqlx::query(&upsert_execution_sql()), e)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// One parameterised query (possibly several statements) being bound.
type Bound<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

const UPSERT_STEP_SQL: &str = "INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT(id) DO UPDATE SET status = excluded.status, input = excluded.input, output = excluded.output, \
     warnings = excluded.warnings, started_at = excluded.started_at, completed_at = excluded.completed_at, error = excluded.error";

fn bind_step<'q>(query: Bound<'q>, r: &StepRecord) -> Bound<'q> {
    query
        .bind(r.id.to_string())
        .bind(r.execution_id.to_string())
        .bind(r.step_id.clone())
        .bind(r.step_type.clone())
        .bind(r.parent_step_id.clone())
        .bind(r.iteration.map(i64::from))
        .bind(i64::from(r.visit))
        .bind(i64::from(r.attempt))
        .bind(r.status.as_str())
        .bind(json(&r.input))
        .bind(json(&r.output))
        .bind(json(&r.warnings))
        .bind(ts(r.started_at))
        .bind(opt_ts(r.completed_at))
        .bind(r.error.as_ref().map(json))
}

async fn upsert_step(conn: &mut SqliteConnection, r: &StepRecord) -> Result<()> {
    bind_step(sqlx::query(UPSERT_STEP_SQL), r)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

async fn insert_resume_request(conn: &mut SqliteConnection, r: &ResumeRequest) -> Result<()> {
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

async fn audit(
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

async fn close_approvals(
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

async fn load_approval(conn: &mut SqliteConnection, id: Uuid) -> Result<ApprovalRequest> {
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

const INSERT_APPROVAL_SQL: &str = "INSERT INTO approvals (id, execution_id, step_id, visit, entity_type, entity_id, approver_roles, approver_users, required, status, reason, data, decisions, requested_by, allow_self_approval, requested_at, expires_at, decided_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

fn bind_approval<'q>(query: Bound<'q>, a: &ApprovalRequest) -> Bound<'q> {
    query
        .bind(a.id.to_string())
        .bind(a.execution_id.to_string())
        .bind(a.step_id.clone())
        .bind(i64::from(a.visit))
        .bind(a.entity_type.clone())
        .bind(a.entity_id.clone())
        .bind(json(&a.approver_roles))
        .bind(json(&a.approver_users))
        .bind(i64::from(a.required))
        .bind(a.status.as_str())
        .bind(a.reason.clone())
        .bind(json(&a.data))
        .bind(json(&a.decisions))
        .bind(a.requested_by.clone())
        .bind(i64::from(a.allow_self_approval))
        .bind(ts(a.requested_at))
        .bind(opt_ts(a.expires_at))
        .bind(opt_ts(a.decided_at))
}

async fn insert_approval(conn: &mut SqliteConnection, a: &ApprovalRequest) -> Result<()> {
    bind_approval(sqlx::query(INSERT_APPROVAL_SQL), a)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

async fn apply_effect(conn: &mut SqliteConnection, effect: &Effect, now: Timestamp) -> Result<()> {
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
        Effect::Notify(n) => {
            sqlx::query("INSERT INTO notifications (id, execution_id, step_id, recipients, message, channel, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO NOTHING")
                .bind(n.id.to_string())
                .bind(n.execution_id.to_string())
                .bind(n.step_id.clone())
                .bind(json(&n.recipients))
                .bind(n.message.clone())
                .bind(n.channel.clone())
                .bind(n.status.clone())
                .bind(ts(n.created_at))
                .execute(conn)
                .await
                .map_err(backend)?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// The hot path — a step that continues or waits for a retry, with no effects —
    /// through the group committer, which folds concurrent commits into one batch.
    async fn commit_in_one_statement(&self, c: StepCommit) -> Result<Committed> {
        let (execution_id, owner, expected) = (c.execution_id, c.owner.clone(), c.expected_version);
        match self.committer.submit(c).await? {
            Some(committed) => Ok(committed),
            // Nothing changed: say precisely why.
            None => {
                let execution = self.get_execution(execution_id).await?;
                Err(rules::refusal(&execution, &owner, Some(expected)))
            }
        }
    }
}

/// Appends one commit to a batch: its compare-and-set `UPDATE` (returning its slot) and
/// its step rows, which only land if that update — identified by its random commit token —
/// did. The transition is exactly [`rules::apply_commit`]'s for `Continue` and `Release`.
fn push_commit(q: &mut QueryBuilder<Sqlite>, c: &StepCommit, slot: usize, token: &str) {
    let id = c.execution_id.to_string();
    let (owner_sql, expires) = match c.transition {
        Transition::Release { at } => ("NULL", at),
        _ => ("lease_owner", c.lease_expires_at),
    };
    q.push(" UPDATE executions SET context = ")
        .push_bind(json(&c.context))
        .push(", cursor = ")
        .push_bind(c.cursor.as_ref().map(json))
        .push(", visits = ")
        .push_bind(json(&c.visits))
        .push(", steps_run = ")
        .push_bind(i64::from(c.steps_run))
        .push(", result = ")
        .push_bind(c.result.map(tollgate_model::ExecutionResult::as_str))
        .push(", wake = NULL, gate = NULL, gate_reason = NULL, gate_deadline = NULL, gate_event = NULL, gate_approval_id = NULL, paused_at = NULL, lease_owner = ")
        .push(owner_sql)
        .push(", lease_expires_at = ")
        .push_bind(ts(expires))
        .push(", version = version + 1, updated_at = ")
        .push_bind(ts(c.now))
        .push(", commit_token = ")
        .push_bind(token.to_owned())
        .push(" WHERE id = ")
        .push_bind(id.clone())
        .push(" AND status = 'running' AND lease_owner = ")
        .push_bind(c.owner.clone())
        .push(" AND version = ")
        .push_bind(c.expected_version)
        .push(format!(" RETURNING version, pause_requested, {slot} AS slot;"));
    for r in &c.records {
        q.push(" INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) SELECT ");
        let mut values = q.separated(", ");
        values
            .push_bind(r.id.to_string())
            .push_bind(r.execution_id.to_string())
            .push_bind(r.step_id.clone())
            .push_bind(r.step_type.clone())
            .push_bind(r.parent_step_id.clone())
            .push_bind(r.iteration.map(i64::from))
            .push_bind(i64::from(r.visit))
            .push_bind(i64::from(r.attempt))
            .push_bind(r.status.as_str())
            .push_bind(json(&r.input))
            .push_bind(json(&r.output))
            .push_bind(json(&r.warnings))
            .push_bind(ts(r.started_at))
            .push_bind(opt_ts(r.completed_at))
            .push_bind(r.error.as_ref().map(json));
        q.push(" WHERE EXISTS (SELECT 1 FROM executions WHERE id = ")
            .push_bind(id.clone())
            .push(" AND commit_token = ")
            .push_bind(token.to_owned())
            .push(") ON CONFLICT(id) DO UPDATE SET status = excluded.status, input = excluded.input, output = excluded.output, warnings = excluded.warnings, started_at = excluded.started_at, completed_at = excluded.completed_at, error = excluded.error;");
    }
}

/// Commits a batch of hot-path commits in one transaction and one thread hop; per
/// commit, its new state or `None` when its compare-and-set did not match.
pub(crate) async fn commit_batch(
    writer: &sqlx::SqlitePool,
    commits: &[StepCommit],
) -> Result<Vec<Option<Committed>>> {
    let mut q = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE;");
    for (slot, c) in commits.iter().enumerate() {
        push_commit(&mut q, c, slot, &Uuid::new_v4().to_string());
    }
    q.push(" COMMIT;");
    let mut held = Held {
        conn: Some(writer.acquire().await.map_err(backend)?),
        settled: false,
    };
    let rows = match q.build().fetch_all(held.conn()?).await {
        Ok(rows) => {
            held.settled = true;
            rows
        }
        Err(err) => {
            held.rollback().await;
            return Err(backend(err));
        }
    };
    let mut results = vec![None; commits.len()];
    for row in rows {
        let slot: i64 = row.try_get("slot").map_err(backend)?;
        let committed = Committed {
            version: row.try_get("version").map_err(backend)?,
            pause_requested: row.try_get::<i64, _>("pause_requested").map_err(backend)? != 0,
        };
        if let Some(entry) = usize::try_from(slot).ok().and_then(|s| results.get_mut(s)) {
            *entry = Some(committed);
        }
    }
    Ok(results)
}

// ------------------------------------------------------------------ workflows

fn event_pattern(definition: &WorkflowDefinition) -> Option<String> {
    match &definition.trigger {
        Trigger::Event { event } => Some(event.clone()),
        _ => None,
    }
}

async fn insert_snapshot(
    conn: &mut SqliteConnection,
    id: &str,
    definition: &WorkflowDefinition,
    now: Timestamp,
) -> Result<()> {
    sqlx::query("INSERT INTO snapshots (id, definition, created_at) VALUES (?, ?, ?) ON CONFLICT(id) DO NOTHING")
        .bind(id)
        .bind(json(definition))
        .bind(ts(now))
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

fn taken(definition: &WorkflowDefinition) -> Error {
    Error::Conflict(format!(
        "workflow `{}` version `{}` already exists",
        definition.workflow_id, definition.version
    ))
}

#[async_trait]
impl WorkflowStore for SqliteStore {
    async fn create_workflow(&self, workflow: Workflow) -> Result<Workflow> {
        let mut tx = self.write_tx().await?;
        insert_snapshot(
            &mut tx,
            &workflow.snapshot_id,
            &workflow.definition,
            workflow.created_at,
        )
        .await?;
        let result = sqlx::query("INSERT INTO workflows (id, workflow_id, version, enabled, definition, snapshot_id, tags, event_pattern, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(workflow.id.to_string())
            .bind(workflow.definition.workflow_id.clone())
            .bind(workflow.definition.version.clone())
            .bind(i64::from(workflow.enabled))
            .bind(json(&*workflow.definition))
            .bind(workflow.snapshot_id.clone())
            .bind(json(&workflow.definition.tags))
            .bind(event_pattern(&workflow.definition))
            .bind(ts(workflow.created_at))
            .bind(ts(workflow.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(backend);
        match result {
            Err(Error::Conflict(_)) => return Err(taken(&workflow.definition)),
            other => other?,
        };
        crate::schedules::sync_trigger_schedule(&mut tx, &workflow, workflow.updated_at, false)
            .await?;
        commit(tx).await?;
        Ok(workflow)
    }

    async fn replace_workflow(
        &self,
        id: Uuid,
        definition: Arc<WorkflowDefinition>,
        now: Timestamp,
    ) -> Result<Workflow> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT * FROM workflows WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let mut workflow = row
            .as_ref()
            .map(rows::workflow)
            .transpose()?
            .ok_or_else(|| Error::not_found("workflow", id))?;
        let snapshot_id = tollgate_model::records::snapshot_id(&definition);
        insert_snapshot(&mut tx, &snapshot_id, &definition, now).await?;
        let result = sqlx::query("UPDATE workflows SET workflow_id = ?, version = ?, enabled = ?, definition = ?, snapshot_id = ?, tags = ?, event_pattern = ?, updated_at = ? WHERE id = ?")
            .bind(definition.workflow_id.clone())
            .bind(definition.version.clone())
            .bind(i64::from(definition.enabled))
            .bind(json(&*definition))
            .bind(snapshot_id.clone())
            .bind(json(&definition.tags))
            .bind(event_pattern(&definition))
            .bind(ts(now))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend);
        match result {
            Err(Error::Conflict(_)) => return Err(taken(&definition)),
            other => other?,
        };
        workflow.enabled = definition.enabled;
        workflow.definition = definition;
        workflow.snapshot_id = snapshot_id;
        workflow.updated_at = now;
        crate::schedules::sync_trigger_schedule(&mut tx, &workflow, now, false).await?;
        commit(tx).await?;
        Ok(workflow)
    }

    async fn set_workflow_enabled(
        &self,
        id: Uuid,
        enabled: bool,
        now: Timestamp,
    ) -> Result<Workflow> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query("SELECT * FROM workflows WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        let mut workflow = row
            .as_ref()
            .map(rows::workflow)
            .transpose()?
            .ok_or_else(|| Error::not_found("workflow", id))?;
        workflow.enabled = enabled;
        Arc::make_mut(&mut workflow.definition).enabled = enabled;
        workflow.updated_at = now;
        sqlx::query(
            "UPDATE workflows SET enabled = ?, definition = ?, updated_at = ? WHERE id = ?",
        )
        .bind(i64::from(enabled))
        .bind(json(&*workflow.definition))
        .bind(ts(now))
        .bind(id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if enabled {
            crate::schedules::sync_trigger_schedule(&mut tx, &workflow, now, true).await?;
        }
        commit(tx).await?;
        Ok(workflow)
    }

    async fn delete_workflow(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM workflows WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("workflow", id));
        }
        Ok(())
    }

    async fn get_workflow(&self, id: Uuid) -> Result<Workflow> {
        let row = sqlx::query("SELECT * FROM workflows WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref()
            .map(rows::workflow)
            .transpose()?
            .ok_or_else(|| Error::not_found("workflow", id))
    }

    async fn list_workflows(
        &self,
        filter: &WorkflowFilter,
        page: &PageRequest,
    ) -> Result<Page<Workflow>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM workflows WHERE 1 = 1");
        if let Some(enabled) = filter.enabled {
            q.push(" AND enabled = ").push_bind(i64::from(enabled));
        }
        if let Some(key) = &filter.workflow_id {
            q.push(" AND workflow_id = ").push_bind(key.clone());
        }
        if let Some(tag) = &filter.tag {
            q.push(" AND EXISTS (SELECT 1 FROM json_each(workflows.tags) WHERE value = ")
                .push_bind(tag.clone())
                .push(")");
        }
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after);
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::workflow)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |w| {
            encode_id_cursor(w.id)
        }))
    }

    async fn workflows_for_event(&self, event_type: &str) -> Result<Vec<Workflow>> {
        let rows =
            sqlx::query("SELECT * FROM workflows WHERE enabled = 1 AND event_pattern IS NOT NULL")
                .fetch_all(&self.reader)
                .await
                .map_err(backend)?;
        let candidates = rows
            .iter()
            .map(rows::workflow)
            .collect::<Result<Vec<_>>>()?;
        Ok(rules::triggered_workflows(candidates, event_type))
    }

    async fn get_snapshot(&self, snapshot_id: &str) -> Result<Arc<WorkflowDefinition>> {
        let row = sqlx::query("SELECT definition FROM snapshots WHERE id = ?")
            .bind(snapshot_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Err(Error::not_found("snapshot", snapshot_id));
        };
        let text: String = row.try_get("definition").map_err(backend)?;
        let definition: WorkflowDefinition =
            serde_json::from_str(&text).map_err(|e| rows::corrupt("snapshot", e))?;
        Ok(Arc::new(definition))
    }
}

// ------------------------------------------------------------------ executions

#[async_trait]
impl ExecutionStore for SqliteStore {
    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        let mut tx = self.write_tx().await?;
        let snapshot = sqlx::query("SELECT 1 FROM snapshots WHERE id = ?")
            .bind(execution.snapshot_id.clone())
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?;
        if snapshot.is_none() {
            return Err(Error::not_found("snapshot", &execution.snapshot_id));
        }
        insert_execution(&mut tx, &execution)
            .await
            .map_err(|e| match e {
                Error::Conflict(_) => {
                    Error::Conflict(format!("execution {} already exists", execution.id))
                }
                other => other,
            })?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn get_execution(&self, id: Uuid) -> Result<Execution> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        load_execution(&mut conn, id).await
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: &PageRequest,
    ) -> Result<Page<Execution>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM executions WHERE 1 = 1");
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(workflow) = filter.workflow_id {
            q.push(" AND workflow_id = ")
                .push_bind(workflow.to_string());
        }
        if let Some(key) = &filter.workflow_key {
            q.push(" AND workflow_key = ").push_bind(key.clone());
        }
        if let Some(reason) = filter.paused_reason {
            q.push(" AND status IN ('paused', 'waiting') AND gate_reason = ")
                .push_bind(reason.as_str());
        }
        if let Some(role) = &filter.approver_role {
            q.push(" AND status IN ('paused', 'waiting') AND gate_approval_id IN (SELECT id FROM approvals WHERE status = 'pending' AND EXISTS (SELECT 1 FROM json_each(approvals.approver_roles) WHERE value = ")
                .push_bind(role.clone())
                .push("))");
        }
        if let Some(after) = after {
            q.push(" AND id < ").push_bind(after);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::execution)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |e| {
            encode_id_cursor(e.id)
        }))
    }

    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>> {
        status_counts(
            &self.reader,
            "SELECT status, COUNT(*) FROM executions GROUP BY status",
        )
        .await
    }

    async fn count_in_flight(&self) -> Result<Vec<(ExecutionStatus, u64)>> {
        // A range of `executions_status` per status: the executions in flight only.
        status_counts(
            &self.reader,
            "SELECT status, COUNT(*) FROM executions \
             WHERE status IN ('running', 'paused', 'waiting') GROUP BY status",
        )
        .await
    }

    async fn list_gated(&self, page: &PageRequest) -> Result<Page<Execution>> {
        let after = page
            .cursor
            .as_deref()
            .map(|c| {
                let parts = decode_cursor(c, 2)?;
                let bad = || Error::Invalid(format!("`{c}` is not a cursor returned by this list"));
                let at: i64 = parts[0].parse().map_err(|_| bad())?;
                let id = Uuid::parse_str(&parts[1]).map_err(|_| bad())?;
                Ok::<_, Error>((at, id.to_string()))
            })
            .transpose()?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT * FROM executions WHERE status IN ('paused', 'waiting')",
        );
        if let Some((at, id)) = after {
            q.push(" AND (paused_at > ")
                .push_bind(at)
                .push(" OR (paused_at = ")
                .push_bind(at)
                .push(" AND id > ")
                .push_bind(id)
                .push("))");
        }
        q.push(" ORDER BY paused_at, id LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::execution)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |e| {
            let at = e.gate.as_ref().map_or(0, |g| ts(g.paused_at));
            encode_cursor(&[&at.to_string(), &e.id.to_string()])
        }))
    }

    async fn list_steps(&self, execution_id: Uuid) -> Result<Vec<StepRecord>> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        let exists = sqlx::query("SELECT 1 FROM executions WHERE id = ?")
            .bind(execution_id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("execution", execution_id));
        }
        let rows = sqlx::query("SELECT * FROM step_records WHERE execution_id = ? ORDER BY seq")
            .bind(execution_id.to_string())
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        rows.iter().map(rows::step_record).collect()
    }

    async fn begin_step(
        &self,
        execution_id: Uuid,
        owner: &str,
        expected_version: i64,
        record: StepRecord,
        now: Timestamp,
    ) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let execution = load_execution(&mut tx, execution_id).await?;
        rules::check_lease(&execution, owner, Some(expected_version))?;
        let version = execution.version + 1;
        sqlx::query("UPDATE executions SET version = ?, updated_at = ? WHERE id = ?")
            .bind(version)
            .bind(ts(now))
            .bind(execution_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        upsert_step(&mut tx, &record).await?;
        commit(tx).await?;
        Ok(version)
    }

    async fn commit_step(&self, step: StepCommit) -> Result<Committed> {
        if step.effects.is_empty()
            && step.consumed_events.is_empty()
            && matches!(
                step.transition,
                Transition::Continue | Transition::Release { .. }
            )
        {
            return self.commit_in_one_statement(step).await;
        }
        if step.effects.is_empty() {
            return self.commit_in_two_hops(step).await;
        }
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, step.execution_id).await?;
        let now = step.now;
        let wakes = matches!(
            step.transition,
            Transition::Release { .. } | Transition::Gate { .. }
        );
        let writes = rules::apply_commit(&mut execution, step)?;
        write_execution(&mut tx, &execution).await?;
        for record in &writes.records {
            upsert_step(&mut tx, record).await?;
        }
        for effect in &writes.effects {
            apply_effect(&mut tx, effect, now).await?;
        }
        if let Some(approval) = &writes.approval {
            insert_approval(&mut tx, approval)
                .await
                .map_err(|e| match e {
                    Error::Conflict(_) => {
                        Error::Conflict(format!("approval {} already exists", approval.id))
                    }
                    other => other,
                })?;
        }
        if let Some(status) = writes.close_approvals {
            close_approvals(&mut tx, execution.id, status, now).await?;
        }
        commit(tx).await?;
        if wakes {
            self.wakeups.notify_one();
        }
        Ok(writes.committed)
    }

    async fn renew_lease(&self, id: Uuid, owner: &str, expires_at: Timestamp) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let execution = load_execution(&mut tx, id).await?;
        rules::check_lease(&execution, owner, None)?;
        sqlx::query("UPDATE executions SET lease_expires_at = ? WHERE id = ?")
            .bind(ts(expires_at))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        commit(tx).await
    }

    async fn release_lease(&self, id: Uuid, owner: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let execution = load_execution(&mut tx, id).await?;
        rules::check_lease(&execution, owner, None)?;
        sqlx::query("UPDATE executions SET lease_owner = NULL, lease_expires_at = ?, version = version + 1, updated_at = ? WHERE id = ?")
            .bind(ts(now))
            .bind(ts(now))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        commit(tx).await?;
        self.wakeups.notify_one();
        Ok(())
    }

    async fn claim_expired_leases(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<Execution>> {
        // One statement: pick and claim in the same UPDATE, so no row is handed out twice.
        let rows = sqlx::query(
            "UPDATE executions SET lease_owner = ?, lease_expires_at = ?, version = version + 1, updated_at = ? \
             WHERE id IN (SELECT id FROM executions WHERE status = 'running' AND lease_expires_at <= ? ORDER BY lease_expires_at LIMIT ?) \
             RETURNING *",
        )
        .bind(claim.owner.clone())
        .bind(ts(claim.expires_at))
        .bind(ts(now))
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::execution).collect()
    }

    async fn claim_due_gates(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<Execution>> {
        // One batch, one hop: the claim is a single `UPDATE … RETURNING` (building the wake
        // signal of `rules::deadline_wake` in SQL and stamping a batch token); the approval
        // expiry and the `timer` audit rows follow in the same transaction, selected by
        // that token.
        let token = Uuid::new_v4().to_string();
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let sql = "BEGIN IMMEDIATE; \
            UPDATE executions SET status = 'running', lease_owner = ?1, lease_expires_at = ?2, version = version + 1, updated_at = ?3, \
                resume_count = resume_count + 1, last_resumed_at = ?3, commit_token = ?4, \
                wake = CASE WHEN gate_reason = 'approval' AND gate_approval_id IS NOT NULL \
                    THEN json_object('kind', 'approval', 'approval_id', gate_approval_id, 'outcome', 'expired', 'decided_by', NULL, \
                        'reason', NULL, 'data', NULL, 'decided_at', ?5) \
                    ELSE json_object('kind', 'wait_timeout', 'at', ?5) END \
              WHERE id IN (SELECT id FROM executions WHERE status IN ('paused', 'waiting') AND gate_deadline <= ?3 ORDER BY gate_deadline LIMIT ?6) \
              RETURNING *; \
            UPDATE approvals SET status = 'expired', decided_at = ?3 \
              WHERE status = 'pending' AND id IN (SELECT gate_approval_id FROM executions WHERE commit_token = ?4); \
            INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) \
              SELECT lower(hex(randomblob(16))), id, 'timer', NULL, \
                json_object('deadline', strftime('%Y-%m-%dT%H:%M:%fZ', gate_deadline / 1000000.0, 'unixepoch'), 'step_id', json_extract(gate, '$.step_id')), \
                ?3, ?3, 'resumed', NULL \
              FROM executions WHERE commit_token = ?4; \
            COMMIT;";
        let mut held = self.held().await?;
        let result = sqlx::query(sql)
            .bind(claim.owner.clone())
            .bind(ts(claim.expires_at))
            .bind(ts(now))
            .bind(token)
            .bind(at)
            .bind(i64::from(limit))
            .fetch_all(held.conn()?)
            .await;
        let rows = match result {
            Ok(rows) => {
                held.settled = true;
                rows
            }
            Err(err) => {
                held.rollback().await;
                return Err(backend(err));
            }
        };
        rows.iter().map(rows::execution).collect()
    }

    async fn time_out_overdue(&self, now: Timestamp, limit: u32) -> Result<Vec<Execution>> {
        let mut tx = self.write_tx().await?;
        let ids: Vec<String> = sqlx::query(
            "SELECT id FROM executions WHERE deadline <= ? AND (status IN ('paused', 'waiting') \
             OR (status = 'running' AND (lease_owner IS NULL OR lease_expires_at <= ?))) ORDER BY deadline LIMIT ?",
        )
        .bind(ts(now))
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(backend)?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()
        .map_err(backend)?;
        let mut ended = Vec::with_capacity(ids.len());
        for id in ids {
            let id = Uuid::parse_str(&id).map_err(|e| rows::corrupt("execution id", e))?;
            let mut execution = load_execution(&mut tx, id).await?;
            let Some(deadline) = execution
                .deadline
                .filter(|_| rules::is_overdue(&execution, now))
            else {
                continue;
            };
            rules::time_out(&mut execution, deadline, now);
            write_execution(&mut tx, &execution).await?;
            close_approvals(&mut tx, id, ApprovalStatus::Expired, now).await?;
            audit(
                &mut tx,
                id,
                ResumeTrigger::Timer,
                None,
                json!({"deadline": deadline, "workflow_timeout": true}),
                now,
            )
            .await?;
            ended.push(execution);
        }
        commit(tx).await?;
        Ok(ended)
    }

    async fn request_pause(
        &self,
        id: Uuid,
        _actor: Option<&str>,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, id).await?;
        rules::request_pause(&mut execution, reason, now)?;
        write_execution(&mut tx, &execution).await?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn resume_manual(
        &self,
        id: Uuid,
        actor: Option<&str>,
        data: Value,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, id).await?;
        rules::check_manually_paused(&execution)?;
        rules::resume(
            &mut execution,
            Wake::Manual {
                data: data.clone(),
                actor: actor.map(str::to_owned),
            },
            claim,
            now,
        );
        write_execution(&mut tx, &execution).await?;
        audit(&mut tx, id, ResumeTrigger::Manual, actor, data, now).await?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn cancel_execution(
        &self,
        id: Uuid,
        actor: Option<&str>,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, id).await?;
        rules::cancel(&mut execution, actor, reason, now)?;
        write_execution(&mut tx, &execution).await?;
        close_approvals(&mut tx, id, ApprovalStatus::Cancelled, now).await?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn claim_wait(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        event: &Event,
        actor: Option<&str>,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut tx = self.write_tx().await?;
        let mut execution = load_execution(&mut tx, id).await?;
        rules::check_wait_claim(&execution, expected_version, event)?;
        rules::claim_wait(&mut execution, event, claim, now);
        write_execution(&mut tx, &execution).await?;
        audit(
            &mut tx,
            id,
            ResumeTrigger::Event,
            actor,
            json!({"event_id": event.id, "event_type": event.event_type}),
            now,
        )
        .await?;
        commit(tx).await?;
        Ok(execution)
    }

    async fn waiting_for_event(
        &self,
        event_type: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Execution>> {
        let rows = sqlx::query("SELECT * FROM executions WHERE status = 'waiting' AND gate_event = ? AND id > ? ORDER BY id LIMIT ?")
            .bind(event_type)
            .bind(after.map_or_else(String::new, |a| a.to_string()))
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter().map(rows::execution).collect()
    }
}

// ------------------------------------------------------------------ approvals

#[async_trait]
impl ApprovalStore for SqliteStore {
    async fn get_approval(&self, id: Uuid) -> Result<ApprovalRequest> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        load_approval(&mut conn, id).await
    }

    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM approvals WHERE 1 = 1");
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(role) = &filter.role {
            q.push(" AND EXISTS (SELECT 1 FROM json_each(approvals.approver_roles) WHERE value = ")
                .push_bind(role.clone())
                .push(")");
        }
        if let Some(execution) = filter.execution_id {
            q.push(" AND execution_id = ")
                .push_bind(execution.to_string());
        }
        if let Some(p) = &filter.decidable_by {
            q.push(" AND status = 'pending' AND (")
                .push_bind(i64::from(p.is_admin()))
                .push(" = 1 OR EXISTS (SELECT 1 FROM json_each(approvals.approver_users) WHERE value = ")
                .push_bind(p.subject.clone())
                .push(") OR EXISTS (SELECT 1 FROM json_each(approvals.approver_roles) r, json_each(")
                .push_bind(json(&p.roles))
                .push(") mine WHERE r.value = mine.value))")
                .push(" AND (allow_self_approval = 1 OR requested_by IS NULL OR requested_by <> ")
                .push_bind(p.subject.clone())
                .push(") AND NOT EXISTS (SELECT 1 FROM json_each(approvals.decisions) d WHERE json_extract(d.value, '$.decided_by') = ")
                .push_bind(p.subject.clone())
                .push(")");
        }
        if let Some(after) = after {
            q.push(" AND id < ").push_bind(after);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::approval)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |a| {
            encode_id_cursor(a.id)
        }))
    }

    async fn decide(
        &self,
        approval_id: Uuid,
        decision: Decision,
        decider: &Principal,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Decided> {
        self.decide_with(approval_id, decision, decider, claim, now, None)
            .await
    }

    async fn decide_then(
        &self,
        approval_id: Uuid,
        decision: Decision,
        decider: &Principal,
        claim: &LeaseClaim,
        now: Timestamp,
        then: Continuation,
    ) -> Result<Decided> {
        self.decide_with(approval_id, decision, decider, claim, now, Some(&then))
            .await
    }
}

impl SqliteStore {
    async fn decide_with(
        &self,
        approval_id: Uuid,
        decision: Decision,
        decider: &Principal,
        claim: &LeaseClaim,
        now: Timestamp,
        then: Option<&Continuation>,
    ) -> Result<Decided> {
        // Hop 1: open the transaction and read the request and its execution.
        let mut held = self.held().await?;
        let read = sqlx::query("BEGIN IMMEDIATE; SELECT * FROM approvals WHERE id = ?; SELECT * FROM executions WHERE id = (SELECT execution_id FROM approvals WHERE id = ?)")
            .bind(approval_id.to_string())
            .bind(approval_id.to_string())
            .fetch_all(held.conn()?)
            .await;
        let rows = match read {
            Ok(rows) => rows,
            Err(err) => {
                held.rollback().await;
                return Err(backend(err));
            }
        };
        let approval_row = rows
            .iter()
            .find(|r| r.try_get::<String, _>("decisions").is_ok());
        let execution_row = rows
            .iter()
            .find(|r| r.try_get::<String, _>("context").is_ok());
        let (Some(approval_row), Some(execution_row)) = (approval_row, execution_row) else {
            held.rollback().await;
            return Err(Error::not_found("approval", approval_id));
        };
        let mut approval = rows::approval(approval_row)?;
        let mut execution = rows::execution(execution_row)?;
        let (decided_by, reason, data, kind) = (
            decision.decided_by.clone(),
            decision.reason.clone(),
            decision.data.clone(),
            decision.decision,
        );
        let claimed =
            match rules::decide(&mut approval, &mut execution, decision, decider, claim, now) {
                Ok(claimed) => claimed,
                Err(refusal) => {
                    held.rollback().await;
                    return Err(refusal);
                }
            };
        // The side-effect-free steps after the decision, stored with it.
        let next = match then {
            Some(then) if claimed => rules::continuation(&execution, then),
            _ => None,
        };
        let continued = next.is_some();
        let (records, new_approval, wakes) = match next {
            Some(next) => {
                // Leaving the gate closed its only open request (the decided one), so
                // an ending here has no other request to close.
                let wakes = next.wakes_workers();
                execution = next.execution;
                (next.records, next.approval, wakes)
            }
            None => (Vec::new(), None, false),
        };
        // Hop 2: every write and the commit, in one batch.
        let mut sql = String::from(
            "UPDATE approvals SET status = ?, decisions = ?, decided_at = ? WHERE id = ?;",
        );
        if claimed {
            sql.push(' ');
            sql.push_str(&upsert_execution_sql());
            sql.push_str("; INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) VALUES (?, ?, 'approval', ?, ?, ?, ?, 'resumed', NULL);");
            for _ in &records {
                sql.push(' ');
                sql.push_str(UPSERT_STEP_SQL);
                sql.push(';');
            }
            if new_approval.is_some() {
                sql.push_str(" INSERT INTO approvals (id, execution_id, step_id, visit, entity_type, entity_id, approver_roles, approver_users, required, status, reason, data, decisions, requested_by, allow_self_approval, requested_at, expires_at, decided_at) VALUES (");
                sql.push_str(&vec!["?"; 18].join(", "));
                sql.push_str(");");
            }
        }
        sql.push_str(" COMMIT;");
        let mut write = sqlx::query(&sql)
            .bind(approval.status.as_str())
            .bind(json(&approval.decisions))
            .bind(opt_ts(approval.decided_at))
            .bind(approval_id.to_string());
        if claimed {
            write = bind_execution(write, &execution)
                .bind(Uuid::now_v7().to_string())
                .bind(execution.id.to_string())
                .bind(decided_by.clone())
                .bind(json(&json!({"approval_id": approval_id, "decision": kind, "reason": reason, "data": data})))
                .bind(ts(now))
                .bind(ts(now));
            for record in &records {
                write = bind_step(write, record);
            }
            if let Some(new_approval) = &new_approval {
                write = bind_approval(write, new_approval);
            }
        }
        match write.execute(held.conn()?).await {
            Ok(_) => held.settled = true,
            Err(err) => {
                held.rollback().await;
                return Err(backend(err));
            }
        }
        if wakes {
            self.wakeups.notify_one();
        }
        Ok(Decided {
            approval,
            execution,
            claimed,
            continued,
        })
    }
}

// ------------------------------------------------------------------ events and the rest

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
        // One hop: the event is inserted unless its `event_id` exists; each execution, its
        // step records and its approval request only if the event was (so a duplicate
        // stores nothing); then the stored event with that `event_id` (ours, or the
        // first) is read back.
        let mut sql = String::from(
            "BEGIN IMMEDIATE; INSERT INTO events (id, event_id, event_type, payload, source, correlation_id, submitted_by, received_at, started, resumed, delivered) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT(event_id) DO NOTHING;",
        );
        const IF_INSERTED: &str = "WHERE EXISTS (SELECT 1 FROM events WHERE id = ?);";
        let insert_one = format!(
            " INSERT INTO executions ({EXECUTION_COLUMNS}) SELECT {} {IF_INSERTED}",
            vec!["?"; 33].join(", ")
        );
        let insert_step = format!(
            " INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
             SELECT {} {IF_INSERTED}",
            vec!["?"; 15].join(", ")
        );
        let insert_approval = format!(
            " INSERT INTO approvals (id, execution_id, step_id, visit, entity_type, entity_id, approver_roles, approver_users, required, status, reason, data, decisions, requested_by, allow_self_approval, requested_at, expires_at, decided_at) \
             SELECT {} {IF_INSERTED}",
            vec!["?"; 18].join(", ")
        );
        for start in &starts {
            sql.push_str(&insert_one);
            for _ in &start.records {
                sql.push_str(&insert_step);
            }
            if start.approval.is_some() {
                sql.push_str(&insert_approval);
            }
        }
        sql.push_str(
            " COMMIT; SELECT * FROM events WHERE id = ? OR (? IS NOT NULL AND event_id = ?);",
        );
        let mut query = sqlx::query(&sql)
            .bind(event.id.to_string())
            .bind(event.event_id.clone())
            .bind(event.event_type.clone())
            .bind(json(&event.payload))
            .bind(event.source.clone())
            .bind(event.correlation_id.map(|c| c.to_string()))
            .bind(event.submitted_by.clone())
            .bind(ts(event.received_at))
            .bind(json(&event.started))
            .bind(json(&event.resumed));
        for start in &starts {
            query = bind_execution(query, &start.execution).bind(event.id.to_string());
            for record in &start.records {
                query = bind_step(query, record).bind(event.id.to_string());
            }
            if let Some(approval) = &start.approval {
                query = bind_approval(query, approval).bind(event.id.to_string());
            }
        }
        query = query
            .bind(event.id.to_string())
            .bind(event.event_id.clone())
            .bind(event.event_id.clone());
        let mut held = self.held().await?;
        let rows = match query.fetch_all(held.conn()?).await {
            Ok(rows) => {
                held.settled = true;
                rows
            }
            Err(err) => {
                held.rollback().await;
                drop(held);
                if matches!(&err, sqlx::Error::Database(db) if db.is_unique_violation()) {
                    // This very event (same id) is stored: a retried write of it.
                    if let Ok(ours) = self.get_event(event.id).await {
                        return Ok(EventInsert::Inserted(ours));
                    }
                    return Err(Error::Conflict(format!(
                        "an execution of event {} already exists",
                        event.id
                    )));
                }
                return Err(backend(err));
            }
        };
        let Some(row) = rows.first() else {
            return Err(Error::Backend(
                format!("event {} was neither stored nor found", event.id).into(),
            ));
        };
        let stored = rows::event(row)?;
        if stored.id == event.id {
            if starts.iter().any(Starting::wakes_workers) {
                self.wakeups.notify_one();
            }
            Ok(EventInsert::Inserted(event))
        } else {
            Ok(EventInsert::Duplicate(stored))
        }
    }

    async fn set_event_outcome(
        &self,
        id: Uuid,
        started: Vec<Uuid>,
        resumed: Vec<Uuid>,
    ) -> Result<Event> {
        let row =
            sqlx::query("UPDATE events SET started = ?, resumed = ? WHERE id = ? RETURNING *")
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
}

#[async_trait]
impl ResumeRequestStore for SqliteStore {
    async fn record_resume_request(&self, request: ResumeRequest) -> Result<()> {
        let mut conn = self.writer.acquire().await.map_err(backend)?;
        insert_resume_request(&mut conn, &request).await
    }

    async fn list_resume_requests(&self, execution_id: Uuid) -> Result<Vec<ResumeRequest>> {
        let mut conn = self.reader.acquire().await.map_err(backend)?;
        let exists = sqlx::query("SELECT 1 FROM executions WHERE id = ?")
            .bind(execution_id.to_string())
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("execution", execution_id));
        }
        let rows = sqlx::query("SELECT * FROM resume_requests WHERE execution_id = ? ORDER BY seq")
            .bind(execution_id.to_string())
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?;
        rows.iter().map(rows::resume_request).collect()
    }
}

#[async_trait]
impl RecordStore for SqliteStore {
    async fn get_record(&self, entity: &str, entity_id: &str) -> Result<Record> {
        let row = sqlx::query("SELECT * FROM records WHERE entity = ? AND entity_id = ?")
            .bind(entity)
            .bind(entity_id)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref()
            .map(rows::record)
            .transpose()?
            .ok_or_else(|| Error::not_found("record", format!("{entity}/{entity_id}")))
    }
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn put_notification(&self, n: Notification) -> Result<()> {
        sqlx::query(
            "INSERT INTO notifications (id, execution_id, step_id, recipients, message, channel, status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET recipients = excluded.recipients, message = excluded.message, channel = excluded.channel, status = excluded.status",
        )
        .bind(n.id.to_string())
        .bind(n.execution_id.to_string())
        .bind(n.step_id)
        .bind(json(&n.recipients))
        .bind(n.message)
        .bind(n.channel)
        .bind(n.status)
        .bind(ts(n.created_at))
        .execute(&self.writer)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> Result<Page<Notification>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM notifications WHERE 1 = 1");
        if let Some(execution) = filter.execution_id {
            q.push(" AND execution_id = ")
                .push_bind(execution.to_string());
        }
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after);
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q.build().fetch_all(&self.reader).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::notification)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |n| {
            encode_id_cursor(n.id)
        }))
    }
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey> {
        let result = sqlx::query(
            "INSERT INTO api_keys (id, name, roles, key_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(key.id.to_string())
        .bind(key.name.clone())
        .bind(json(&key.roles))
        .bind(key.key_hash.clone())
        .bind(ts(key.created_at))
        .execute(&self.writer)
        .await
        .map_err(backend);
        match result {
            Err(Error::Conflict(_)) => Err(Error::Conflict(format!(
                "an API key named `{}` already exists",
                key.name
            ))),
            Err(other) => Err(other),
            Ok(_) => Ok(key),
        }
    }

    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKey>> {
        let after = id_after(page)?.unwrap_or_default();
        let rows = sqlx::query("SELECT * FROM api_keys WHERE id > ? ORDER BY id LIMIT ?")
            .bind(after)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        let items = rows.iter().map(rows::api_key).collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |k| {
            encode_id_cursor(k.id)
        }))
    }

    async fn delete_api_key(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = ?")
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("api key", id));
        }
        Ok(())
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE key_hash = ?")
            .bind(key_hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::api_key).transpose()
    }
}

#[async_trait]
impl Health for SqliteStore {
    async fn ping(&self) -> Result<()> {
        // A stopped batching task would fail every step commit while the file still
        // answers: not ready.
        if !self.committer.is_running() {
            return Err(Error::Backend(
                "the step commit batching task has stopped".into(),
            ));
        }
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// Runs a `SELECT status, COUNT(*) … GROUP BY status` query.
async fn status_counts(
    pool: &sqlx::SqlitePool,
    sql: &'static str,
) -> Result<Vec<(ExecutionStatus, u64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(pool).await.map_err(backend)?;
    rules::status_counts(rows)
}
