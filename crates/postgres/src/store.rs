//! The trait implementations on PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use sqlx::postgres::{PgArguments, PgConnection, PgRow, Postgres};
use sqlx::query::Query;
use sqlx::types::Json;
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

use crate::rows::{self, backend, enum_str, to_json};
use crate::{PgStore, WAKEUP_CHANNEL};

type Tx = sqlx::Transaction<'static, Postgres>;

impl PgStore {
    async fn tx(&self) -> Result<Tx> {
        self.pool.begin().await.map_err(backend)
    }
}

async fn commit(tx: Tx) -> Result<()> {
    tx.commit().await.map_err(backend)
}

/// Ends a transaction that a rule refused: rolled back now, so that its row locks are
/// gone when the caller sees the refusal (a dropped transaction rolls back only when its
/// connection is next used, and meanwhile `SKIP LOCKED` claims pass its rows over).
async fn refuse<T>(tx: Tx, err: Error) -> Result<T> {
    if let Err(rollback) = tx.rollback().await {
        tracing::warn!("rolling back a refused change failed: {rollback}");
    }
    Err(err)
}

fn id_after(page: &PageRequest) -> Result<Option<Uuid>> {
    decode_id_cursor(page.cursor.as_deref())
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(crate) fn limit(n: u32) -> i64 {
    i64::from(n)
}

// ------------------------------------------------------------------ execution rows

const EXECUTION_COLUMNS: &str = "id, workflow_id, workflow_key, workflow_version, snapshot_id, status, result, trigger_event, \
    trigger_payload, context, cursor, visits, steps_run, version, lease_owner, lease_expires_at, gate, gate_reason, \
    gate_deadline, gate_event, gate_approval_id, paused_at, wake, pause_requested, deadline, resume_count, \
    last_resumed_at, started_at, completed_at, updated_at, error, requested_by, consumed_events";

fn upsert_execution_sql() -> String {
    let sets: Vec<String> = EXECUTION_COLUMNS
        .split(',')
        .map(str::trim)
        .skip(1)
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect();
    let params: Vec<String> = (1..=33).map(|i| format!("${i}")).collect();
    format!("INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}", params.join(", "), sets.join(", "))
}

fn bind_execution<'q>(
    query: Query<'q, Postgres, PgArguments>,
    e: &Execution,
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

async fn write_execution(conn: &mut PgConnection, e: &Execution) -> Result<()> {
    bind_execution(sqlx::query(&upsert_execution_sql()), e)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

async fn load_execution(conn: &mut PgConnection, id: Uuid, lock: bool) -> Result<Execution> {
    let sql = if lock {
        "SELECT * FROM executions WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT * FROM executions WHERE id = $1"
    };
    let row = sqlx::query(sql)
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(backend)?;
    row.as_ref()
        .map(rows::execution)
        .transpose()?
        .ok_or_else(|| Error::not_found("execution", id))
}

const STEP_RECORDSET: &str = "jsonb_to_recordset($1) AS r(id uuid, execution_id uuid, step_id text, step_type text, parent_step_id text, \
    iteration int, visit int, attempt int, status text, input jsonb, output jsonb, warnings jsonb, started_at timestamptz, \
    completed_at timestamptz, error jsonb)";

/// The recordset's columns for an insert. `jsonb_to_recordset` reads a JSON `null` as SQL
/// NULL, so JSON-null inputs and outputs (a step that had none) are put back as JSON.
const STEP_SELECT: &str = "r.id, r.execution_id, r.step_id, r.step_type, r.parent_step_id, r.iteration, r.visit, r.attempt, r.status, \
    COALESCE(r.input, 'null'::jsonb), COALESCE(r.output, 'null'::jsonb), COALESCE(r.warnings, '[]'::jsonb), r.started_at, r.completed_at, r.error";

const STEP_UPSERT_TAIL: &str = "ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, input = EXCLUDED.input, output = EXCLUDED.output, \
    warnings = EXCLUDED.warnings, started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, error = EXCLUDED.error";

/// Inserts or replaces step records in one statement.
async fn upsert_steps(conn: &mut PgConnection, records: &[StepRecord]) -> Result<()> {
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

async fn insert_resume_request(conn: &mut PgConnection, r: &ResumeRequest) -> Result<()> {
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

async fn audit(
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

async fn close_approvals(
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

async fn load_approval(conn: &mut PgConnection, id: Uuid, lock: bool) -> Result<ApprovalRequest> {
    let sql = if lock {
        "SELECT * FROM approvals WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT * FROM approvals WHERE id = $1"
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

async fn insert_approval(conn: &mut PgConnection, a: &ApprovalRequest) -> Result<()> {
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

async fn apply_effect(conn: &mut PgConnection, effect: &Effect, now: Timestamp) -> Result<()> {
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
        Effect::Notify(n) => {
            sqlx::query("INSERT INTO notifications (id, execution_id, step_id, recipients, message, channel, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING")
                .bind(n.id)
                .bind(n.execution_id)
                .bind(n.step_id.clone())
                .bind(n.recipients.clone())
                .bind(n.message.clone())
                .bind(n.channel.clone())
                .bind(n.status.clone())
                .bind(n.created_at)
                .execute(conn)
                .await
                .map_err(backend)?;
        }
    }
    Ok(())
}

async fn notify_workers(conn: &mut PgConnection, what: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(WAKEUP_CHANNEL)
        .bind(what)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

// ------------------------------------------------------------------ workflows

fn event_pattern(definition: &WorkflowDefinition) -> Option<String> {
    match &definition.trigger {
        Trigger::Event { event } => Some(event.clone()),
        _ => None,
    }
}

async fn insert_snapshot(
    conn: &mut PgConnection,
    id: &str,
    definition: &WorkflowDefinition,
    now: Timestamp,
) -> Result<()> {
    sqlx::query("INSERT INTO snapshots (id, definition, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
        .bind(id)
        .bind(to_json(definition))
        .bind(now)
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
impl WorkflowStore for PgStore {
    async fn create_workflow(&self, workflow: Workflow) -> Result<Workflow> {
        let mut tx = self.tx().await?;
        insert_snapshot(
            &mut tx,
            &workflow.snapshot_id,
            &workflow.definition,
            workflow.created_at,
        )
        .await?;
        let result = sqlx::query("INSERT INTO workflows (id, workflow_id, version, enabled, definition, snapshot_id, tags, event_pattern, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(workflow.id)
            .bind(workflow.definition.workflow_id.clone())
            .bind(workflow.definition.version.clone())
            .bind(workflow.enabled)
            .bind(to_json(&*workflow.definition))
            .bind(workflow.snapshot_id.clone())
            .bind(workflow.definition.tags.clone())
            .bind(event_pattern(&workflow.definition))
            .bind(workflow.created_at)
            .bind(workflow.updated_at)
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
        let mut tx = self.tx().await?;
        let row = sqlx::query("SELECT * FROM workflows WHERE id = $1 FOR UPDATE")
            .bind(id)
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
        let result = sqlx::query("UPDATE workflows SET workflow_id = $1, version = $2, enabled = $3, definition = $4, snapshot_id = $5, tags = $6, event_pattern = $7, updated_at = $8 WHERE id = $9")
            .bind(definition.workflow_id.clone())
            .bind(definition.version.clone())
            .bind(definition.enabled)
            .bind(to_json(&*definition))
            .bind(snapshot_id.clone())
            .bind(definition.tags.clone())
            .bind(event_pattern(&definition))
            .bind(now)
            .bind(id)
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
        let mut tx = self.tx().await?;
        let row = sqlx::query(
            "UPDATE workflows SET enabled = $1, definition = jsonb_set(definition, '{enabled}', to_jsonb($1)), updated_at = $2 WHERE id = $3 RETURNING *",
        )
        .bind(enabled)
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let workflow = row
            .as_ref()
            .map(rows::workflow)
            .transpose()?
            .ok_or_else(|| Error::not_found("workflow", id))?;
        if enabled {
            crate::schedules::sync_trigger_schedule(&mut tx, &workflow, now, true).await?;
        }
        commit(tx).await?;
        Ok(workflow)
    }

    async fn delete_workflow(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM workflows WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("workflow", id));
        }
        Ok(())
    }

    async fn get_workflow(&self, id: Uuid) -> Result<Workflow> {
        let row = sqlx::query("SELECT * FROM workflows WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
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
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM workflows WHERE TRUE");
        if let Some(enabled) = filter.enabled {
            q.push(" AND enabled = ").push_bind(enabled);
        }
        if let Some(key) = &filter.workflow_id {
            q.push(" AND workflow_id = ").push_bind(key.clone());
        }
        if let Some(tag) = &filter.tag {
            q.push(" AND ").push_bind(tag.clone()).push(" = ANY(tags)");
        }
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after);
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::workflow)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |w| {
            encode_id_cursor(w.id)
        }))
    }

    async fn workflows_for_event(&self, event_type: &str) -> Result<Vec<Workflow>> {
        self.triggered.submit(event_type.to_owned()).await
    }

    async fn get_snapshot(&self, snapshot_id: &str) -> Result<Arc<WorkflowDefinition>> {
        let row = sqlx::query("SELECT definition FROM snapshots WHERE id = $1")
            .bind(snapshot_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Err(Error::not_found("snapshot", snapshot_id));
        };
        let Json(value): Json<Value> = row.try_get("definition").map_err(backend)?;
        let definition: WorkflowDefinition =
            serde_json::from_value(value).map_err(|e| rows::corrupt("snapshot", e))?;
        Ok(Arc::new(definition))
    }
}

// ------------------------------------------------------------------ executions

impl PgStore {
    /// Every step commit without effects or consumed events — continue, release for a
    /// retry, enter a gate, end — goes through the group committer: one statement per
    /// batch of concurrent commits ([`commit_batch`]), each keeping its own
    /// compare-and-set.
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

/// Inserts approval requests from the JSON recordset parameter `$param` (alias `a`, with
/// a `slot` column to join on); the statement appends its join and `RETURNING`.
fn approvals_from_recordset(param: usize) -> String {
    format!("INSERT INTO approvals (id, execution_id, step_id, visit, entity_type, entity_id, approver_roles, approver_users, required, status, reason, \
        data, decisions, requested_by, allow_self_approval, requested_at, expires_at, decided_at) \
    SELECT a.id, a.execution_id, a.step_id, a.visit, a.entity_type, a.entity_id, a.approver_roles, a.approver_users, a.required, a.status, a.reason, \
        COALESCE(a.data, 'null'::jsonb), COALESCE(a.decisions, '[]'::jsonb), a.requested_by, a.allow_self_approval, a.requested_at, a.expires_at, a.decided_at \
    FROM jsonb_to_recordset(${param}) AS a(slot int, id uuid, execution_id uuid, step_id text, visit int, entity_type text, entity_id text, \
        approver_roles text[], approver_users text[], required int, status text, reason text, data jsonb, decisions jsonb, requested_by text, \
        allow_self_approval boolean, requested_at timestamptz, expires_at timestamptz, decided_at timestamptz)")
}

/// Inserts step records from the JSON recordset parameter `$param` (alias `r`, with its
/// position as `r.ord`: records keep their order); the statement appends its filter,
/// `ORDER BY r.ord` and what follows.
fn steps_from_recordset(param: usize) -> String {
    format!("INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
        SELECT {STEP_SELECT} FROM ROWS FROM (jsonb_to_recordset(${param}) AS (id uuid, execution_id uuid, step_id text, step_type text, parent_step_id text, \
        iteration int, visit int, attempt int, status text, input jsonb, output jsonb, warnings jsonb, started_at timestamptz, \
        completed_at timestamptz, error jsonb)) WITH ORDINALITY AS r(id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, \
        status, input, output, warnings, started_at, completed_at, error, ord)")
}

/// One batch of effect-free step commits. `v` holds each commit's new row state as
/// computed by [`batch_row`] (what `rules::apply_commit` does for its transition); the
/// step rows, the approval request of a gate, the closing of an ending execution's open
/// approvals and the wake-up are joined to the update of their own execution, so they
/// only happen where its compare-and-set matched.
static GROUP_COMMIT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("WITH v AS (SELECT * FROM jsonb_to_recordset($1) AS v(slot int, id uuid, owner text, expected bigint, kind text, status text, \
        context jsonb, cursor jsonb, visits jsonb, steps_run int, result text, expires timestamptz, now timestamptz, gate jsonb, gate_reason text, \
        gate_deadline timestamptz, gate_event text, gate_approval_id uuid, paused_at timestamptz, error jsonb, close text, wakes boolean)), \
     upd AS (UPDATE executions e SET status = v.status, context = v.context, cursor = v.cursor, visits = v.visits, steps_run = v.steps_run, result = v.result, \
        wake = NULL, gate = v.gate, gate_reason = v.gate_reason, gate_deadline = v.gate_deadline, gate_event = v.gate_event, \
        gate_approval_id = v.gate_approval_id, paused_at = v.paused_at, \
        lease_owner = CASE WHEN v.kind = 'continue' THEN e.lease_owner END, lease_expires_at = v.expires, \
        pause_requested = CASE WHEN v.kind IN ('gate', 'finish') THEN false ELSE e.pause_requested END, \
        error = CASE WHEN v.kind = 'finish' THEN v.error ELSE e.error END, \
        completed_at = CASE WHEN v.kind = 'finish' THEN v.now ELSE e.completed_at END, \
        version = e.version + 1, updated_at = v.now \
        FROM v WHERE e.id = ANY($5) AND e.id = v.id AND e.status = 'running' AND e.lease_owner = v.owner AND e.version = v.expected \
        RETURNING v.slot, e.id, e.version, e.pause_requested, v.kind, v.close, v.wakes, v.now), \
     ins AS (INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
        SELECT r.id, r.execution_id, r.step_id, r.step_type, r.parent_step_id, r.iteration, r.visit, r.attempt, r.status, \
            COALESCE(r.input, 'null'::jsonb), COALESCE(r.output, 'null'::jsonb), COALESCE(r.warnings, '[]'::jsonb), r.started_at, r.completed_at, r.error \
        FROM jsonb_to_recordset($2) AS r(slot int, id uuid, execution_id uuid, step_id text, step_type text, parent_step_id text, iteration int, visit int, attempt int, \
            status text, input jsonb, output jsonb, warnings jsonb, started_at timestamptz, completed_at timestamptz, error jsonb) \
        JOIN upd ON upd.slot = r.slot \
        ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, input = EXCLUDED.input, output = EXCLUDED.output, warnings = EXCLUDED.warnings, \
            started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at, error = EXCLUDED.error RETURNING 1), \
     appr AS ({} JOIN upd ON upd.slot = a.slot RETURNING 1), \
     closed AS (UPDATE approvals a SET status = upd.close, decided_at = upd.now FROM upd \
        WHERE upd.close IS NOT NULL AND a.execution_id = upd.id AND a.status = 'pending' RETURNING 1), \
     note AS (SELECT pg_notify($4, 'commit') WHERE EXISTS (SELECT 1 FROM upd WHERE kind = 'release' OR wakes)) \
     SELECT slot, version, pause_requested, (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM appr) AS requested, \
        (SELECT count(*) FROM closed) AS closed, (SELECT count(*) FROM note) AS notified FROM upd", approvals_from_recordset(3))
});

/// One commit's row of the batch: the execution's state after its transition.
fn batch_row(slot: usize, c: &StepCommit) -> Value {
    let mut row = json!({
        "slot": slot, "id": c.execution_id, "owner": c.owner, "expected": c.expected_version,
        "context": c.context, "cursor": c.cursor, "visits": c.visits, "steps_run": c.steps_run,
        "result": c.result, "now": c.now, "wakes": false,
    });
    let extra = match &c.transition {
        Transition::Continue => {
            json!({"kind": "continue", "status": "running", "expires": c.lease_expires_at})
        }
        Transition::Release { at } => {
            json!({"kind": "release", "status": "running", "expires": at})
        }
        Transition::Gate { gate, .. } => {
            json!({"kind": "gate", "status": rules::gated_status(gate).as_str(), "gate": gate, "gate_reason": gate.reason.as_str(),
                "gate_deadline": gate.deadline, "gate_event": gate.event, "gate_approval_id": gate.approval_id,
                "paused_at": gate.paused_at, "wakes": gate.deadline.is_some()})
        }
        Transition::Finish { status, error } => {
            json!({"kind": "finish", "status": status.as_str(), "error": error,
                "close": rules::closing_status(*status).as_str()})
        }
    };
    if let (Value::Object(row), Value::Object(extra)) = (&mut row, extra) {
        row.extend(extra);
    }
    row
}

/// Commits step commits without effects or consumed events (any transition) in one
/// statement; returns, per commit, its new state or `None` when its compare-and-set did
/// not match. The transitions are exactly `rules::apply_commit`'s.
pub(crate) async fn commit_batch(
    conn: &mut PgConnection,
    commits: &[StepCommit],
) -> Result<Vec<Option<Committed>>> {
    let mut executions = Vec::with_capacity(commits.len());
    let mut records = Vec::new();
    let mut approvals = Vec::new();
    let slotted = |slot: usize, mut value: Value| -> Value {
        if let Value::Object(map) = &mut value {
            map.insert("slot".into(), json!(slot));
        }
        value
    };
    for (slot, c) in commits.iter().enumerate() {
        executions.push(batch_row(slot, c));
        for record in &c.records {
            records.push(slotted(
                slot,
                serde_json::to_value(record).unwrap_or(Value::Null),
            ));
        }
        if let Transition::Gate {
            approval: Some(approval),
            ..
        } = &c.transition
        {
            approvals.push(slotted(
                slot,
                serde_json::to_value(approval).unwrap_or(Value::Null),
            ));
        }
    }
    let rows = sqlx::query(&GROUP_COMMIT_SQL)
        .bind(to_json(&executions))
        .bind(to_json(&records))
        .bind(to_json(&approvals))
        .bind(WAKEUP_CHANNEL)
        .bind(commits.iter().map(|c| c.execution_id).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await
        .map_err(|err| match (&err, commits) {
            // Alone (the committer retries a failed batch commit by commit), a
            // duplicate approval id is this commit's conflict.
            (sqlx::Error::Database(db), [c]) if db.is_unique_violation() => match &c.transition {
                Transition::Gate {
                    approval: Some(a), ..
                } => Error::Conflict(format!("approval {} already exists", a.id)),
                _ => backend(err),
            },
            _ => backend(err),
        })?;
    let mut results = vec![None; commits.len()];
    for row in rows {
        let slot: i32 = row.try_get("slot").map_err(backend)?;
        let committed = Committed {
            version: row.try_get("version").map_err(backend)?,
            pause_requested: row.try_get("pause_requested").map_err(backend)?,
        };
        if let Some(entry) = usize::try_from(slot).ok().and_then(|s| results.get_mut(s)) {
            *entry = Some(committed);
        }
    }
    Ok(results)
}

/// Ids picked by a `SELECT id … FOR UPDATE SKIP LOCKED` inside the transaction.
async fn locked_ids(
    conn: &mut PgConnection,
    sql: &str,
    now: Timestamp,
    n: u32,
) -> Result<Vec<Uuid>> {
    let rows = sqlx::query(sql)
        .bind(now)
        .bind(limit(n))
        .fetch_all(conn)
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|r| r.try_get("id").map_err(backend))
        .collect()
}

/// Inserts a new execution row.
pub(crate) async fn insert_execution(conn: &mut PgConnection, execution: &Execution) -> Result<()> {
    let params: Vec<String> = (1..=33).map(|i| format!("${i}")).collect();
    let sql = format!(
        "INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES ({})",
        params.join(", ")
    );
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

#[async_trait]
impl ExecutionStore for PgStore {
    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        insert_execution(&mut conn, &execution).await?;
        Ok(execution)
    }

    async fn get_execution(&self, id: Uuid) -> Result<Execution> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        load_execution(&mut conn, id, false).await
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: &PageRequest,
    ) -> Result<Page<Execution>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM executions WHERE TRUE");
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(workflow) = filter.workflow_id {
            q.push(" AND workflow_id = ").push_bind(workflow);
        }
        if let Some(key) = &filter.workflow_key {
            q.push(" AND workflow_key = ").push_bind(key.clone());
        }
        if let Some(reason) = filter.paused_reason {
            q.push(" AND status IN ('paused', 'waiting') AND gate_reason = ")
                .push_bind(reason.as_str());
        }
        if let Some(role) = &filter.approver_role {
            q.push(" AND status IN ('paused', 'waiting') AND gate_approval_id IN (SELECT id FROM approvals WHERE status = 'pending' AND ")
                .push_bind(role.clone())
                .push(" = ANY(approver_roles))");
        }
        if let Some(after) = after {
            q.push(" AND id < ").push_bind(after);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
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
            &self.pool,
            "SELECT status, COUNT(*) FROM executions GROUP BY status",
        )
        .await
    }

    async fn count_in_flight(&self) -> Result<Vec<(ExecutionStatus, u64)>> {
        // A range of `executions_status` per status: the executions in flight only.
        status_counts(
            &self.pool,
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
                let micros: i64 = parts[0].parse().map_err(|_| bad())?;
                let at = chrono::DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
                let id = Uuid::parse_str(&parts[1]).map_err(|_| bad())?;
                Ok::<_, Error>((at, id))
            })
            .transpose()?;
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT * FROM executions WHERE status IN ('paused', 'waiting')",
        );
        if let Some((at, id)) = after {
            q.push(" AND (paused_at, id) > (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY paused_at, id LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::execution)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |e| {
            let at = e
                .gate
                .as_ref()
                .map_or(0, |g| g.paused_at.timestamp_micros());
            encode_cursor(&[&at.to_string(), &e.id.to_string()])
        }))
    }

    async fn list_steps(&self, execution_id: Uuid) -> Result<Vec<StepRecord>> {
        let exists = sqlx::query("SELECT 1 FROM executions WHERE id = $1")
            .bind(execution_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("execution", execution_id));
        }
        let rows = sqlx::query("SELECT * FROM step_records WHERE execution_id = $1 ORDER BY seq")
            .bind(execution_id)
            .fetch_all(&self.pool)
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
        // One statement: the CAS bump and the record, joined so the record only lands if
        // the bump matched.
        let sql = format!(
            "WITH upd AS (UPDATE executions SET version = version + 1, updated_at = $2 WHERE id = $3 AND status = 'running' AND lease_owner = $4 AND version = $5 RETURNING version), \
             ins AS (INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
                SELECT {STEP_SELECT} FROM upd, {STEP_RECORDSET} {STEP_UPSERT_TAIL} RETURNING 1) \
             SELECT version, (SELECT count(*) FROM ins) AS inserted FROM upd"
        );
        let row = sqlx::query(&sql)
            .bind(to_json(&[record]))
            .bind(now)
            .bind(execution_id)
            .bind(owner)
            .bind(expected_version)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        match row {
            Some(row) => row.try_get("version").map_err(backend),
            None => {
                let execution = self.get_execution(execution_id).await?;
                Err(rules::refusal(&execution, owner, Some(expected_version)))
            }
        }
    }

    async fn commit_step(&self, step: StepCommit) -> Result<Committed> {
        if let Transition::Finish { status, .. } = &step.transition {
            if !status.is_terminal() {
                return Err(Error::Invalid(format!(
                    "a step commit cannot finish an execution as {status}"
                )));
            }
        }
        if step.effects.is_empty() && step.consumed_events.is_empty() {
            return self.commit_in_one_statement(step).await;
        }
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, step.execution_id, true).await?;
        let now = step.now;
        let wakes =
            matches!(&step.transition, Transition::Gate { gate, .. } if gate.deadline.is_some());
        let writes = rules::apply_commit(&mut execution, step)?;
        write_execution(&mut tx, &execution).await?;
        upsert_steps(&mut tx, &writes.records).await?;
        for effect in &writes.effects {
            apply_effect(&mut tx, effect, now).await?;
        }
        if let Some(approval) = &writes.approval {
            insert_approval(&mut tx, approval).await?;
        }
        if let Some(status) = writes.close_approvals {
            close_approvals(&mut tx, execution.id, status, now).await?;
        }
        if wakes {
            notify_workers(&mut tx, "gate").await?;
        }
        commit(tx).await?;
        Ok(writes.committed)
    }

    async fn renew_lease(&self, id: Uuid, owner: &str, expires_at: Timestamp) -> Result<()> {
        let done = sqlx::query("UPDATE executions SET lease_expires_at = $1 WHERE id = $2 AND status = 'running' AND lease_owner = $3")
            .bind(expires_at)
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            let execution = self.get_execution(id).await?;
            return Err(rules::refusal(&execution, owner, None));
        }
        Ok(())
    }

    async fn release_lease(&self, id: Uuid, owner: &str, now: Timestamp) -> Result<()> {
        let done = sqlx::query("WITH upd AS (UPDATE executions SET lease_owner = NULL, lease_expires_at = $1, version = version + 1, updated_at = $1 WHERE id = $2 AND status = 'running' AND lease_owner = $3 RETURNING 1) SELECT pg_notify($4, 'release') FROM upd")
            .bind(now)
            .bind(id)
            .bind(owner)
            .bind(WAKEUP_CHANNEL)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if done.is_none() {
            let execution = self.get_execution(id).await?;
            return Err(rules::refusal(&execution, owner, None));
        }
        Ok(())
    }

    async fn claim_expired_leases(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        n: u32,
    ) -> Result<Vec<Execution>> {
        let rows = sqlx::query(
            "UPDATE executions SET lease_owner = $1, lease_expires_at = $2, version = version + 1, updated_at = $3 \
             WHERE id IN (SELECT id FROM executions WHERE status = 'running' AND lease_expires_at <= $3 ORDER BY lease_expires_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING *",
        )
        .bind(claim.owner.clone())
        .bind(claim.expires_at)
        .bind(now)
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::execution).collect()
    }

    async fn claim_due_gates(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        n: u32,
    ) -> Result<Vec<Execution>> {
        // Set-based, one statement: pick due gates (SKIP LOCKED), resume them with the
        // wake signal of `rules::deadline_wake`, expire their approval requests, and write
        // the `timer` audit rows — one round trip whatever the batch size.
        let rows = sqlx::query(
            "WITH due AS (SELECT id FROM executions WHERE status IN ('paused', 'waiting') AND gate_deadline <= $1 \
                ORDER BY gate_deadline LIMIT $2 FOR UPDATE SKIP LOCKED), \
             upd AS (UPDATE executions e SET status = 'running', lease_owner = $3, lease_expires_at = $4, version = e.version + 1, \
                updated_at = $1, resume_count = e.resume_count + 1, last_resumed_at = $1, \
                wake = CASE WHEN e.gate_reason = 'approval' AND e.gate_approval_id IS NOT NULL \
                    THEN jsonb_build_object('kind', 'approval', 'approval_id', e.gate_approval_id, 'outcome', 'expired', \
                        'decided_by', NULL, 'reason', NULL, 'data', NULL, 'decided_at', $1::timestamptz) \
                    ELSE jsonb_build_object('kind', 'wait_timeout', 'at', $1::timestamptz) END \
                FROM due WHERE e.id = due.id RETURNING e.*), \
             expired AS (UPDATE approvals SET status = 'expired', decided_at = $1 \
                WHERE id IN (SELECT gate_approval_id FROM upd) AND status = 'pending' RETURNING 1), \
             audited AS (INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) \
                SELECT gen_random_uuid(), id, 'timer', NULL, jsonb_build_object('deadline', gate_deadline, 'step_id', gate->>'step_id'), $1, $1, 'resumed', NULL \
                FROM upd RETURNING 1) \
             SELECT upd.*, (SELECT count(*) FROM expired) AS expired_count, (SELECT count(*) FROM audited) AS audited_count \
             FROM upd ORDER BY gate_deadline",
        )
        .bind(now)
        .bind(limit(n))
        .bind(claim.owner.clone())
        .bind(claim.expires_at)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::execution).collect()
    }

    async fn time_out_overdue(&self, now: Timestamp, n: u32) -> Result<Vec<Execution>> {
        let mut tx = self.tx().await?;
        let ids = locked_ids(
            &mut tx,
            "SELECT id FROM executions WHERE deadline <= $1 AND (status IN ('paused', 'waiting') \
             OR (status = 'running' AND (lease_owner IS NULL OR lease_expires_at <= $1))) ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED",
            now,
            n,
        )
        .await?;
        let mut ended = Vec::with_capacity(ids.len());
        for id in ids {
            let mut execution = load_execution(&mut tx, id, false).await?;
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
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, id, true).await?;
        if let Err(err) = rules::request_pause(&mut execution, reason, now) {
            return refuse(tx, err).await;
        }
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
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, id, true).await?;
        if let Err(err) = rules::check_manually_paused(&execution) {
            return refuse(tx, err).await;
        }
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
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, id, true).await?;
        if let Err(err) = rules::cancel(&mut execution, actor, reason, now) {
            return refuse(tx, err).await;
        }
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
        let mut tx = self.tx().await?;
        let mut execution = load_execution(&mut tx, id, true).await?;
        if let Err(err) = rules::check_wait_claim(&execution, expected_version, event) {
            return refuse(tx, err).await;
        }
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
        n: u32,
    ) -> Result<Vec<Execution>> {
        self.waiting
            .submit(WaitingScan {
                event_type: event_type.to_owned(),
                after,
                limit: limit(n),
            })
            .await
    }
}

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
    let rows = sqlx::query("SELECT * FROM workflows WHERE enabled AND event_pattern IS NOT NULL")
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?;
    let candidates = rows
        .iter()
        .map(rows::workflow)
        .collect::<Result<Vec<_>>>()?;
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
    let rows = sqlx::query(
        "SELECT q.ord AS scan, x.* FROM unnest($1::text[], $2::uuid[], $3::bigint[]) WITH ORDINALITY AS q(event_type, after, lim, ord) \
         CROSS JOIN LATERAL (SELECT * FROM executions e WHERE e.status = 'waiting' AND e.gate_event = q.event_type \
            AND (q.after IS NULL OR e.id > q.after) ORDER BY e.id LIMIT q.lim) x \
         ORDER BY q.ord, x.id",
    )
    .bind(&event_types)
    .bind(&afters)
    .bind(&limits)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?;
    let mut pages: Vec<Vec<Execution>> = vec![Vec::new(); scans.len()];
    for row in &rows {
        let scan: i64 = row.try_get("scan").map_err(backend)?;
        let page = usize::try_from(scan - 1)
            .ok()
            .and_then(|i| pages.get_mut(i))
            .ok_or_else(|| Error::Backend(format!("waiting scan {scan} out of range").into()))?;
        page.push(rows::execution(row)?);
    }
    Ok(pages.into_iter().map(Ok).collect())
}

// ------------------------------------------------------------------ approvals

#[async_trait]
impl ApprovalStore for PgStore {
    async fn get_approval(&self, id: Uuid) -> Result<ApprovalRequest> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        load_approval(&mut conn, id, false).await
    }

    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM approvals WHERE TRUE");
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(role) = &filter.role {
            q.push(" AND ")
                .push_bind(role.clone())
                .push(" = ANY(approver_roles)");
        }
        if let Some(execution) = filter.execution_id {
            q.push(" AND execution_id = ").push_bind(execution);
        }
        if let Some(p) = &filter.decidable_by {
            q.push(" AND status = 'pending' AND (")
                .push_bind(p.is_admin())
                .push(" OR ")
                .push_bind(p.subject.clone())
                .push(" = ANY(approver_users) OR approver_roles && ")
                .push_bind(p.roles.clone())
                .push(") AND (allow_self_approval OR requested_by IS NULL OR requested_by <> ")
                .push_bind(p.subject.clone())
                .push(") AND NOT decisions @> jsonb_build_array(jsonb_build_object('decided_by', ")
                .push_bind(p.subject.clone())
                .push("::text))");
        }
        if let Some(after) = after {
            q.push(" AND id < ").push_bind(after);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
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
        self.decider
            .submit(DecideRequest::new(
                approval_id,
                decision,
                decider,
                claim,
                now,
                None,
            ))
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
        self.decider
            .submit(DecideRequest::new(
                approval_id,
                decision,
                decider,
                claim,
                now,
                Some(then),
            ))
            .await
    }
}

/// One decision waiting for the decider.
#[derive(Clone)]
pub(crate) struct DecideRequest {
    pub(crate) approval_id: Uuid,
    pub(crate) decision: Decision,
    pub(crate) decider: Principal,
    pub(crate) claim: LeaseClaim,
    pub(crate) now: Timestamp,
    /// What the claimed execution does next ([`ApprovalStore::decide_then`]).
    pub(crate) then: Option<Continuation>,
    /// Set when a batch first tries to write this request (shared by the clones the
    /// batcher makes): found set, the request is being retried after a batch whose
    /// outcome was unknown, and its own decision may already be stored.
    pub(crate) tried: Arc<std::sync::atomic::AtomicBool>,
}

impl DecideRequest {
    fn new(
        approval_id: Uuid,
        decision: Decision,
        decider: &Principal,
        claim: &LeaseClaim,
        now: Timestamp,
        then: Option<Continuation>,
    ) -> Self {
        Self {
            approval_id,
            decision,
            decider: decider.clone(),
            claim: claim.clone(),
            now,
            then,
            tried: Arc::default(),
        }
    }
}

impl std::fmt::Debug for DecideRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecideRequest")
            .field("approval_id", &self.approval_id)
            .field("decided_by", &self.decision.decided_by)
            .field("continued", &self.then.is_some())
            .finish_non_exhaustive()
    }
}

/// The rows a batch of decisions writes, collected while the decisions are applied in
/// arrival order and written together in one statement.
#[derive(Default)]
struct DecisionWrites {
    /// Final state of each touched request, by id.
    approvals: std::collections::BTreeMap<Uuid, Value>,
    /// Final state of each claimed execution, by id (as its table's columns).
    executions: std::collections::BTreeMap<Uuid, Value>,
    /// One audit row per claiming decision.
    audits: Vec<Value>,
    /// Step records of the steps continued executions ran after their decision.
    records: Vec<StepRecord>,
    /// Requests of the gates continued executions stopped at.
    new_approvals: Vec<ApprovalRequest>,
    /// Whether a continued execution stopped where the worker loops must look.
    wakes: bool,
}

/// Columns an execution never changes after its insert: a decision's update leaves them
/// out (its JSON then carries no copy of the trigger payload for the database to parse).
const IMMUTABLE_EXECUTION_COLUMNS: [&str; 8] = [
    "workflow_id",
    "workflow_key",
    "workflow_version",
    "snapshot_id",
    "trigger_event",
    "trigger_payload",
    "started_at",
    "requested_by",
];

/// The columns of the execution's row that can change after its insert (and its id), as
/// a JSON object for `jsonb_populate_recordset`.
fn execution_changes(e: &Execution) -> Value {
    let gate = e.gate.as_ref();
    json!({
        "id": e.id, "status": e.status.as_str(), "result": e.result.map(tollgate_model::ExecutionResult::as_str),
        "context": e.context, "cursor": e.cursor, "visits": e.visits, "steps_run": e.steps_run, "version": e.version,
        "lease_owner": e.lease.as_ref().and_then(|l| l.owner.clone()),
        "lease_expires_at": e.lease.as_ref().map(|l| l.expires_at),
        "gate": gate, "gate_reason": gate.map(|g| g.reason.as_str()),
        "gate_deadline": gate.and_then(|g| g.deadline), "gate_event": gate.and_then(|g| g.event.clone()),
        "gate_approval_id": gate.and_then(|g| g.approval_id), "paused_at": gate.map(|g| g.paused_at),
        "wake": e.wake, "pause_requested": e.pause_requested, "deadline": e.deadline,
        "resume_count": e.resume_count, "last_resumed_at": e.last_resumed_at,
        "completed_at": e.completed_at, "updated_at": e.updated_at, "error": e.error,
        "consumed_events": e.consumed_events,
    })
}

/// The execution's row as a JSON object keyed by the `executions` columns (what
/// [`bind_execution`] binds), for `jsonb_populate_recordset`.
fn execution_row(e: &Execution) -> Value {
    let mut row = execution_changes(e);
    let Value::Object(columns) = &mut row else {
        return row;
    };
    for (column, value) in [
        ("workflow_id", json!(e.workflow_id)),
        ("workflow_key", json!(e.workflow_key)),
        ("workflow_version", json!(e.workflow_version)),
        ("snapshot_id", json!(e.snapshot_id)),
        ("trigger_event", json!(e.trigger_event)),
        ("trigger_payload", e.trigger_payload.clone()),
        ("started_at", json!(e.started_at)),
        ("requested_by", json!(e.requested_by)),
    ] {
        columns.insert(column.to_owned(), value);
    }
    row
}

/// `SET` list writing every column that can change after the insert from the recordset
/// `v`; `jsonb_populate_recordset` reads a JSON `null` as SQL NULL, so the NOT NULL
/// documents are put back as JSON.
fn execution_set_from_v() -> String {
    EXECUTION_COLUMNS
        .split(',')
        .map(str::trim)
        .skip(1)
        .filter(|c| !IMMUTABLE_EXECUTION_COLUMNS.contains(c))
        .map(|c| match c {
            "context" | "visits" => format!("{c} = COALESCE(v.{c}, 'null'::jsonb)"),
            _ => format!("{c} = v.{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every write of a batch of decisions: claimed (or continued) executions ($1, their ids
/// $4), touched requests ($2, their ids $5), audit rows ($3), the step records ($6) and
/// new requests ($7) of continued executions, and a wake-up on channel $8 when $9.
static DECISION_WRITES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH e AS (UPDATE executions SET {} FROM jsonb_populate_recordset(NULL::executions, $1) v \
            WHERE executions.id = ANY($4) AND executions.id = v.id RETURNING 1), \
         a AS (UPDATE approvals SET status = v.status, decisions = v.decisions, decided_at = v.decided_at \
            FROM jsonb_to_recordset($2) AS v(id uuid, status text, decisions jsonb, decided_at timestamptz) \
            WHERE approvals.id = ANY($5) AND approvals.id = v.id RETURNING 1), \
         r AS (INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) \
            SELECT v.id, v.execution_id, 'approval', v.actor, v.data, v.at, v.at, 'resumed', NULL \
            FROM jsonb_to_recordset($3) AS v(id uuid, execution_id uuid, actor text, data jsonb, at timestamptz) RETURNING 1), \
         st AS ({} ORDER BY r.ord {STEP_UPSERT_TAIL} RETURNING 1), \
         ap AS ({} RETURNING 1), \
         nt AS (SELECT pg_notify($8, 'gate') WHERE $9) \
         SELECT (SELECT count(*) FROM e) AS executions, (SELECT count(*) FROM a) AS approvals, (SELECT count(*) FROM r) AS audits, \
            (SELECT count(*) FROM st) AS steps, (SELECT count(*) FROM ap) AS new_approvals, (SELECT count(*) FROM nt) AS notified",
        execution_set_from_v(),
        steps_from_recordset(6),
        approvals_from_recordset(7),
    )
});

/// Group commit for decisions ([`tollgate_store::group_commit::Batcher`]): decides the
/// decisions queued at that moment in one transaction — one locked read of all their
/// requests and executions, the rules applied in arrival order (so several decisions on
/// one request see each other), one write statement, one flush for all. `Err` only for
/// a database error (nothing written).
/// Four round trips whatever the batch size: begin, one locked read, one write, commit.
pub(crate) async fn decide_batch(
    conn: &mut PgConnection,
    requests: &[DecideRequest],
) -> Result<Vec<Result<Decided>>> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(backend)?;
    let mut ids: Vec<Uuid> = requests.iter().map(|r| r.approval_id).collect();
    ids.sort();
    ids.dedup();
    let rows = read_for_decision(&mut tx, &ids).await?;
    let mut approvals = std::collections::HashMap::new();
    let mut executions = std::collections::HashMap::new();
    for row in &rows {
        let Json(doc): Json<Value> = row.try_get("approval_doc").map_err(backend)?;
        let approval: ApprovalRequest =
            serde_json::from_value(doc).map_err(|e| rows::corrupt("approval", e))?;
        let execution = rows::execution(row)?;
        executions.insert(execution.id, execution);
        approvals.insert(approval.id, approval);
    }
    let mut writes = DecisionWrites::default();
    let results: Vec<Result<Decided>> = requests
        .iter()
        .map(|request| {
            let retried = request
                .tried
                .swap(true, std::sync::atomic::Ordering::SeqCst);
            decide_one(
                &mut approvals,
                &mut executions,
                &mut writes,
                request,
                retried,
            )
        })
        .collect();
    if !writes.approvals.is_empty() {
        write_decisions(&mut tx, writes).await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(results)
}

/// The locked read of a batch of decisions: every request and its execution; the
/// execution as columns, the request as a document whose keys are the
/// `ApprovalRequest` fields.
///
/// Lock order: the executions first (in id order, by the `locked` CTE, which the
/// pseudo-constant `count(*)` runs once before the scan), then their requests (in
/// request id order). Every other path that touches both — cancel, workflow deadlines,
/// due gates — also locks the execution before its requests, so two of them can wait
/// for each other but never deadlock.
async fn read_for_decision(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<PgRow>> {
    sqlx::query(
        "WITH locked AS (SELECT id FROM executions WHERE id IN (SELECT execution_id FROM approvals WHERE id = ANY($1)) ORDER BY id FOR UPDATE) \
         SELECT e.*, to_jsonb(a) AS approval_doc FROM approvals a JOIN executions e ON e.id = a.execution_id \
         WHERE a.id = ANY($1) AND (SELECT count(*) FROM locked) >= 0 ORDER BY a.id FOR UPDATE OF a",
    )
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(backend)
}

/// The one write statement of a batch of decisions ([`DECISION_WRITES_SQL`]).
async fn write_decisions(conn: &mut PgConnection, writes: DecisionWrites) -> Result<()> {
    let sql: &str = &DECISION_WRITES_SQL;
    // The ids again as arrays: `= ANY` on the primary keys makes the planner look the
    // rows up by key, whatever its (possibly stale) estimate of the recordsets.
    let execution_ids: Vec<Uuid> = writes.executions.keys().copied().collect();
    let approval_ids: Vec<Uuid> = writes.approvals.keys().copied().collect();
    sqlx::query(sql)
        .bind(Json(Value::Array(
            writes.executions.into_values().collect::<Vec<_>>(),
        )))
        .bind(Json(Value::Array(
            writes.approvals.into_values().collect::<Vec<_>>(),
        )))
        .bind(Json(Value::Array(writes.audits)))
        .bind(execution_ids)
        .bind(approval_ids)
        .bind(to_json(&writes.records))
        .bind(to_json(&writes.new_approvals))
        .bind(WAKEUP_CHANNEL)
        .bind(writes.wakes)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

/// Runs a batch of decisions' statements on no rows, so that a new batch connection has
/// them prepared — and its server process its catalog caches filled — before the first
/// real batch. Changes nothing.
pub(crate) async fn prepare_decisions(conn: &mut PgConnection) -> Result<()> {
    read_for_decision(&mut *conn, &[]).await?;
    write_decisions(conn, DecisionWrites::default()).await
}

/// Applies one decision to the batch's locked rows and records what to write; `Err` is
/// this decision's refusal (nothing recorded for it).
fn decide_one(
    approvals: &mut std::collections::HashMap<Uuid, ApprovalRequest>,
    executions: &mut std::collections::HashMap<Uuid, Execution>,
    writes: &mut DecisionWrites,
    request: &DecideRequest,
    retried: bool,
) -> Result<Decided> {
    let approval_id = request.approval_id;
    let now = request.now;
    let Some(approval) = approvals.get_mut(&approval_id) else {
        return Err(Error::not_found("approval", approval_id));
    };
    let Some(execution) = executions.get_mut(&approval.execution_id) else {
        return Err(Error::not_found("execution", approval.execution_id));
    };
    // A retry after a batch whose COMMIT outcome was unknown, finding its own decision
    // stored: that write succeeded. Answered as done — not `409 already approved` — with
    // nothing written again. If it claimed the execution, the claim's lease lapses and
    // another worker advances it.
    if retried && rules::holds_decision(approval, &request.decision) {
        return Ok(Decided {
            approval: approval.clone(),
            execution: execution.clone(),
            claimed: false,
            continued: false,
        });
    }
    let decision = request.decision.clone();
    let (decided_by, reason, data, kind) = (
        decision.decided_by.clone(),
        decision.reason.clone(),
        decision.data.clone(),
        decision.decision,
    );
    // Refusals change nothing: work on copies and keep them only on success.
    let mut next_approval = approval.clone();
    let mut next_execution = execution.clone();
    let claimed = rules::decide(
        &mut next_approval,
        &mut next_execution,
        decision,
        &request.decider,
        &request.claim,
        now,
    )?;
    let approval_row = |a: &ApprovalRequest| json!({"id": a.id, "status": a.status.as_str(), "decisions": a.decisions, "decided_at": a.decided_at});
    if !claimed {
        writes
            .approvals
            .insert(approval_id, approval_row(&next_approval));
        *approval = next_approval;
        return Ok(Decided {
            approval: approval.clone(),
            execution: execution.clone(),
            claimed: false,
            continued: false,
        });
    }
    let next = request
        .then
        .as_ref()
        .and_then(|then| rules::continuation(&next_execution, then));
    let continued = next.is_some();
    if let Some(next) = next {
        // Leaving the gate closed its only open request (the decided one), so an ending
        // here has no other request to close.
        writes.wakes |= next.wakes_workers();
        next_execution = next.execution;
        writes.records.extend(next.records);
        writes.new_approvals.extend(next.approval);
    }
    writes
        .approvals
        .insert(approval_id, approval_row(&next_approval));
    writes
        .executions
        .insert(next_execution.id, execution_changes(&next_execution));
    writes.audits.push(json!({
        "id": Uuid::now_v7(), "execution_id": next_execution.id, "actor": decided_by, "at": now,
        "data": {"approval_id": approval_id, "decision": kind, "reason": reason, "data": data},
    }));
    *approval = next_approval;
    *execution = next_execution;
    Ok(Decided {
        approval: approval.clone(),
        execution: execution.clone(),
        claimed: true,
        continued,
    })
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
/// ($5 the channel, $6 whether any start needs one).
static INSERT_EVENTS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
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
         nt AS (SELECT pg_notify($5, 'gate') WHERE $6 AND EXISTS (SELECT 1 FROM ex)) \
         SELECT id, (SELECT count(*) FROM ex) AS executions, (SELECT count(*) FROM st) AS steps, \
            (SELECT count(*) FROM ap) AS approvals, (SELECT count(*) FROM nt) AS notified FROM ev",
        select.join(", "),
        steps_from_recordset(3),
        approvals_from_recordset(4),
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
    let rows = sqlx::query(&INSERT_EVENTS_SQL)
        .bind(Json(Value::Array(events)))
        .bind(Json(Value::Array(executions)))
        .bind(to_json(&records))
        .bind(to_json(&approvals))
        .bind(WAKEUP_CHANNEL)
        .bind(wakes)
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
        for row in sqlx::query("SELECT * FROM events WHERE id = ANY($1)")
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
        for row in sqlx::query("SELECT * FROM events WHERE event_id = ANY($1)")
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

// ------------------------------------------------------------------ events and the rest

#[async_trait]
impl EventStore for PgStore {
    async fn insert_event(&self, event: Event) -> Result<EventInsert> {
        self.insert_event_starting(event, Vec::new()).await
    }

    async fn insert_event_starting(
        &self,
        event: Event,
        starts: Vec<Starting>,
    ) -> Result<EventInsert> {
        self.events.submit((event, starts)).await
    }

    async fn set_event_outcome(
        &self,
        id: Uuid,
        started: Vec<Uuid>,
        resumed: Vec<Uuid>,
    ) -> Result<Event> {
        let row =
            sqlx::query("UPDATE events SET started = $1, resumed = $2 WHERE id = $3 RETURNING *")
                .bind(started)
                .bind(resumed)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        row.as_ref()
            .map(rows::event)
            .transpose()?
            .ok_or_else(|| Error::not_found("event", id))
    }

    async fn get_event(&self, id: Uuid) -> Result<Event> {
        let row = sqlx::query("SELECT * FROM events WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
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
        let mut tx = self.tx().await?;
        // The execution is locked first, as by every other claim, so the lock order is
        // the same everywhere.
        let mut execution = load_execution(&mut tx, target, true).await?;
        if let Some(key) = &event.event_id {
            let first = sqlx::query("SELECT * FROM events WHERE event_id = $1")
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
        if let Err(err) = rules::check_wait_claim(&execution, expected_version, &event) {
            return refuse(tx, err).await;
        }
        rules::claim_wait(&mut execution, &event, claim, now);
        write_execution(&mut tx, &execution).await?;
        event.resumed = vec![target];
        let inserted = sqlx::query(
            "INSERT INTO events (id, event_id, event_type, payload, source, correlation_id, submitted_by, received_at, started, resumed, delivered) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true) ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event.id)
        .bind(event.event_id.clone())
        .bind(event.event_type.clone())
        .bind(Json(&event.payload))
        .bind(event.source.clone())
        .bind(target)
        .bind(event.submitted_by.clone())
        .bind(event.received_at)
        .bind(&event.started)
        .bind(&event.resumed)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if inserted.rows_affected() == 0 {
            // A concurrent delivery with the same `event_id` committed first: ours is
            // rolled back (claim included) and the caller retries into the duplicate.
            let err = Error::Conflict(format!(
                "event_id `{}` is being delivered concurrently",
                event.event_id.as_deref().unwrap_or_default()
            ));
            return refuse(tx, err).await;
        }
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
        n: u32,
    ) -> Result<Vec<Event>> {
        // Keyset paging on (received_at, id), through the (event_type, received_at, id)
        // index: a page costs the same however many events of the type came before it.
        let rows = sqlx::query(
            "SELECT * FROM events WHERE event_type = $1 AND received_at >= $2 AND (correlation_id IS NULL OR correlation_id = $3) \
             AND ($4::timestamptz IS NULL OR (received_at, id) > ($4, $5)) ORDER BY received_at, id LIMIT $6",
        )
        .bind(event_type)
        .bind(since)
        .bind(execution_id)
        .bind(after.map(|(at, _)| at))
        .bind(after.map(|(_, id)| id))
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::event).collect()
    }

    async fn undelivered_events(&self, received_before: Timestamp, n: u32) -> Result<Vec<Event>> {
        let rows = sqlx::query(
            "SELECT * FROM events WHERE NOT delivered AND received_at <= $1 ORDER BY received_at, id LIMIT $2",
        )
        .bind(received_before)
        .bind(limit(n))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(rows::event).collect()
    }

    async fn mark_events_delivered(&self, ids: &[Uuid]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("UPDATE events SET delivered = true WHERE NOT delivered AND id = ANY($1)")
            .bind(ids)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl ResumeRequestStore for PgStore {
    async fn record_resume_request(&self, request: ResumeRequest) -> Result<()> {
        let mut conn = self.pool.acquire().await.map_err(backend)?;
        insert_resume_request(&mut conn, &request).await
    }

    async fn list_resume_requests(&self, execution_id: Uuid) -> Result<Vec<ResumeRequest>> {
        let exists = sqlx::query("SELECT 1 FROM executions WHERE id = $1")
            .bind(execution_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        if exists.is_none() {
            return Err(Error::not_found("execution", execution_id));
        }
        let rows =
            sqlx::query("SELECT * FROM resume_requests WHERE execution_id = $1 ORDER BY seq")
                .bind(execution_id)
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
        rows.iter().map(rows::resume_request).collect()
    }
}

#[async_trait]
impl RecordStore for PgStore {
    async fn get_record(&self, entity: &str, entity_id: &str) -> Result<Record> {
        let row = sqlx::query("SELECT * FROM records WHERE entity = $1 AND entity_id = $2")
            .bind(entity)
            .bind(entity_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref()
            .map(rows::record)
            .transpose()?
            .ok_or_else(|| Error::not_found("record", format!("{entity}/{entity_id}")))
    }
}

#[async_trait]
impl NotificationStore for PgStore {
    async fn put_notification(&self, n: Notification) -> Result<()> {
        sqlx::query(
            "INSERT INTO notifications (id, execution_id, step_id, recipients, message, channel, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET recipients = EXCLUDED.recipients, message = EXCLUDED.message, channel = EXCLUDED.channel, status = EXCLUDED.status",
        )
        .bind(n.id)
        .bind(n.execution_id)
        .bind(n.step_id)
        .bind(n.recipients)
        .bind(n.message)
        .bind(n.channel)
        .bind(n.status)
        .bind(n.created_at)
        .execute(&self.pool)
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
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM notifications WHERE TRUE");
        if let Some(execution) = filter.execution_id {
            q.push(" AND execution_id = ").push_bind(execution);
        }
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after);
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
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
impl ApiKeyStore for PgStore {
    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey> {
        let result = sqlx::query("INSERT INTO api_keys (id, name, roles, key_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(key.id)
            .bind(key.name.clone())
            .bind(key.roles.clone())
            .bind(key.key_hash.clone())
            .bind(key.created_at)
            .execute(&self.pool)
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
        let after = id_after(page)?;
        let rows = sqlx::query(
            "SELECT * FROM api_keys WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        let items = rows.iter().map(rows::api_key).collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |k| {
            encode_id_cursor(k.id)
        }))
    }

    async fn delete_api_key(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("api key", id));
        }
        Ok(())
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE key_hash = $1")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::api_key).transpose()
    }
}

#[async_trait]
impl Health for PgStore {
    async fn ping(&self) -> Result<()> {
        // A batching task that stopped would fail every write of its kind while the
        // database still answers: not ready.
        for (name, running) in [
            ("step commit", self.committer.is_running()),
            ("decision", self.decider.is_running()),
            ("event", self.events.is_running()),
            ("trigger lookup", self.triggered.is_running()),
            ("waiting-execution scan", self.waiting.is_running()),
        ] {
            if !running {
                return Err(Error::Backend(
                    format!("the {name} batching task has stopped").into(),
                ));
            }
        }
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// Runs a `SELECT status, COUNT(*) … GROUP BY status` query.
async fn status_counts(
    pool: &sqlx::PgPool,
    sql: &'static str,
) -> Result<Vec<(ExecutionStatus, u64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(pool).await.map_err(backend)?;
    rules::status_counts(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tollgate_model::records::DecisionKind;
    use tollgate_store::testkit::{
        approval_for, decision, definition, lease, manager, new_execution, t0,
    };

    use super::*;

    /// A decision retried after a batch whose outcome was unknown finds itself stored:
    /// answered as done, writing nothing. The same decision sent anew (not a retry) is
    /// refused as a second approval by the same decider.
    #[test]
    fn a_retried_decision_recognises_itself() {
        let definition = definition("orders", "1", "order.created");
        let w = tollgate_model::records::Workflow {
            id: Uuid::now_v7(),
            snapshot_id: tollgate_model::records::snapshot_id(&definition),
            enabled: true,
            definition,
            created_at: t0(),
            updated_at: t0(),
        };
        let mut execution = new_execution(&w, "w1");
        execution.status = tollgate_model::ExecutionStatus::Paused;
        let mut approval = approval_for(&execution, 2, None);
        let mine = decision("ann", DecisionKind::Approve);
        approval.decisions.push(mine.clone());
        let request = DecideRequest::new(
            approval.id,
            mine,
            &manager("ann"),
            &lease("api", t0()),
            t0(),
            None,
        );
        let mut approvals = std::collections::HashMap::from([(approval.id, approval.clone())]);
        let mut executions = std::collections::HashMap::from([(execution.id, execution)]);
        let mut writes = DecisionWrites::default();
        let fresh = decide_one(
            &mut approvals,
            &mut executions,
            &mut writes,
            &request,
            false,
        );
        assert!(fresh.unwrap_err().is_conflict(), "a new request is refused");
        let retried =
            decide_one(&mut approvals, &mut executions, &mut writes, &request, true).unwrap();
        assert!(!retried.claimed);
        assert_eq!(retried.approval, approval);
        assert!(writes.approvals.is_empty(), "nothing written again");
    }
}
