//! Step commits: the two-hop commit of a step that changes more than its row, and the
//! group-commit writer that folds concurrent hot-path commits into one batch.

use sqlx::sqlite::Sqlite;
use sqlx::QueryBuilder;
use sqlx::Row;
use tollgate_model::records::StepRecord;
use tollgate_store::group_commit::BeginRequest;
use tollgate_store::{rules, Committed, Error, ExecutionStore, Result, StepCommit, Transition};
use uuid::Uuid;

use crate::rows::{backend, json, opt_ts, ts};
use crate::{rows, SqliteStore};

use super::sql::{
    bind_approval, bind_execution_update, bind_step, bind_trail, trail_sql, Held,
    INSERT_APPROVAL_SQL, UPDATE_EXECUTION_SQL, UPSERT_STEP_SQL,
};

impl SqliteStore {
    /// A step commit without effects that enters a gate, ends the execution or consumes
    /// events, in two hops: open the transaction and read the row; then every write and
    /// the commit as one batch.
    pub(super) async fn commit_in_two_hops(&self, step: StepCommit) -> Result<Committed> {
        let mut held = self.held().await?;
        let read = sqlx::query(concat!(
            "BEGIN IMMEDIATE; ",
            select_executions!(),
            " WHERE id = ?"
        ))
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
        let mut execution = match rows::execution_to_change(row) {
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
        let consumed = step.consumed_events.clone();
        let writes = match rules::apply_commit(&mut execution, step) {
            Ok(writes) => writes,
            Err(err) => {
                held.rollback().await;
                return Err(err);
            }
        };
        let mut sql = UPDATE_EXECUTION_SQL.clone();
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
        sql.push_str(trail_sql(&writes.undo, writes.drop_trail));
        for _ in &consumed {
            sql.push(' ');
            sql.push_str(super::events::NOTE_CONSUMED);
        }
        sql.push_str(" COMMIT;");
        let mut query = bind_execution_update(sqlx::query(&sql), &execution);
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
        query = bind_trail(query, &execution, &writes.undo, writes.drop_trail);
        for event in &consumed {
            query = query
                .bind(execution.id.to_string())
                .bind(event.to_string())
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
}

impl SqliteStore {
    /// The hot path — a step that continues or waits for a retry, with no effects —
    /// through the group committer, which folds concurrent commits into one batch.
    pub(super) async fn commit_in_one_statement(&self, c: StepCommit) -> Result<Committed> {
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
pub(super) fn push_commit(q: &mut QueryBuilder<Sqlite>, c: &StepCommit, slot: usize, token: &str) {
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
        .push_bind(ts(c.now));
    push_guard(q, token, &id, &c.owner, c.expected_version);
    q.push(format!(
        " RETURNING version, pause_requested, {slot} AS slot;"
    ));
    for r in &c.records {
        push_step_if_token(q, r, &id, token);
    }
    // The batch never completes an execution (continue and release only), so the trail
    // only grows here; under the version the update just gave the row.
    if !c.undo.is_empty() {
        q.push(" INSERT INTO context_trail (execution_id, version, undo) SELECT id, version, ")
            .push_bind(json(&c.undo))
            .push(" FROM executions WHERE id = ")
            .push_bind(id.clone())
            .push(" AND commit_token = ")
            .push_bind(token.to_owned())
            .push(";");
    }
}

/// Ends an `UPDATE executions SET …` of a batch: stamps the row with the commit's random
/// `token` (what its step rows check) and matches it only as `running`, leased by
/// `owner`, at `expected` — the compare-and-set.
fn push_guard(q: &mut QueryBuilder<Sqlite>, token: &str, id: &str, owner: &str, expected: i64) {
    q.push(", commit_token = ")
        .push_bind(token.to_owned())
        .push(" WHERE id = ")
        .push_bind(id.to_owned())
        .push(" AND status = 'running' AND lease_owner = ")
        .push_bind(owner.to_owned())
        .push(" AND version = ")
        .push_bind(expected);
}

/// Appends the upsert of step record `r`, which only lands if the update of execution
/// `id` carrying commit token `token` did (in the same batch).
fn push_step_if_token(q: &mut QueryBuilder<Sqlite>, r: &StepRecord, id: &str, token: &str) {
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
        .push_bind(id.to_owned())
        .push(" AND commit_token = ")
        .push_bind(token.to_owned())
        .push(") ON CONFLICT(id) DO UPDATE SET status = excluded.status, input = excluded.input, output = excluded.output, warnings = excluded.warnings, started_at = excluded.started_at, completed_at = excluded.completed_at, error = excluded.error;");
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
    let rows = commit_on(writer, q).await?;
    by_slot(&rows, commits.len(), |row| {
        Ok(Committed {
            version: row.try_get("version").map_err(backend)?,
            pause_requested: row.try_get::<i64, _>("pause_requested").map_err(backend)? != 0,
        })
    })
}

/// Ends batch `q` (begun with `BEGIN IMMEDIATE`) with its `COMMIT` and runs it on the
/// writer in one hop; the rows its statements returned.
async fn commit_on(
    writer: &sqlx::SqlitePool,
    mut q: QueryBuilder<'_, Sqlite>,
) -> Result<Vec<sqlx::sqlite::SqliteRow>> {
    q.push(" COMMIT;");
    Held::acquire(writer)
        .await?
        .fetch_all(q.build())
        .await
        .map_err(backend)
}

/// The answers of a batch whose updates return their request's `slot`: per request, what
/// `decode` makes of its row, or `None` for one without (its compare-and-set did not
/// match).
fn by_slot<R: Clone>(
    rows: &[sqlx::sqlite::SqliteRow],
    n: usize,
    decode: impl Fn(&sqlx::sqlite::SqliteRow) -> Result<R>,
) -> Result<Vec<Option<R>>> {
    let mut answers = vec![None; n];
    for row in rows {
        let slot: i64 = row.try_get("slot").map_err(backend)?;
        if let Some(entry) = usize::try_from(slot).ok().and_then(|s| answers.get_mut(s)) {
            *entry = Some(decode(row)?);
        }
    }
    Ok(answers)
}

/// Writes a batch of step begins in one transaction and one thread hop: per begin, its
/// compare-and-set version bump (returning its slot) and its `running` record, which
/// lands only if that bump — identified by its random commit token — did. Per begin, the
/// execution's new version, or `None` when its compare-and-set did not match.
pub(crate) async fn begin_batch(
    writer: &sqlx::SqlitePool,
    begins: &[BeginRequest],
) -> Result<Vec<Option<i64>>> {
    let mut q = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE;");
    for (slot, b) in begins.iter().enumerate() {
        let id = b.execution_id.to_string();
        let token = Uuid::new_v4().to_string();
        q.push(" UPDATE executions SET version = version + 1, updated_at = ")
            .push_bind(ts(b.now));
        push_guard(&mut q, &token, &id, &b.owner, b.expected_version);
        q.push(format!(" RETURNING version, {slot} AS slot;"));
        push_step_if_token(&mut q, &b.record, &id, &token);
    }
    let rows = commit_on(writer, q).await?;
    by_slot(&rows, begins.len(), |row| {
        row.try_get("version").map_err(backend)
    })
}
