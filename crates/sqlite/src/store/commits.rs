//! Step commits: the two-hop commit of a step that changes more than its row, and the
//! group-commit writer that folds concurrent hot-path commits into one batch.

use sqlx::Row;
use tollgate_model::records::StepRecord;
use tollgate_model::ExecutionStatus;
use tollgate_store::group_commit::BeginRequest;
use tollgate_store::{rules, Committed, Error, ExecutionStore, Result, StepCommit, Transition};
use uuid::Uuid;

use crate::rows::{backend, json, opt_ts, ts};
use crate::{rows, SqliteStore};

use super::sql::{
    bind_approval, bind_execution_update, bind_step, bind_trail, json_array, trail_sql, Held,
    INSERT_APPROVAL_SQL, UPDATE_EXECUTION_SQL, UPSERT_STEP_SQL,
};

impl SqliteStore {
    /// A step commit without effects that enters a gate or consumes events, in two
    /// hops: open the transaction and read the row; then every write and
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
    /// The hot path — a step that continues, waits for a retry or ends the execution,
    /// with no effects — through the group committer, which folds concurrent commits into one batch.
    pub(super) async fn commit_in_one_statement(&self, c: StepCommit) -> Result<Committed> {
        let (execution_id, owner, expected, stop) = (
            c.execution_id,
            c.owner.clone(),
            c.expected_version,
            c.refuse_if_pause_requested,
        );
        match self.committer.submit(c).await? {
            Some(committed) => Ok(committed),
            // Nothing changed: say precisely why.
            None => {
                let execution = self.get_execution(execution_id).await?;
                Err(rules::commit_refusal(&execution, &owner, expected, stop))
            }
        }
    }
}

/// The condition that batch item `$item`'s update landed (its row carries the item's
/// token): every other write of the item carries it, so that it only happens where that
/// compare-and-set matched.
macro_rules! landed {
    ($item:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM executions x WHERE x.id = ",
            $item,
            " ->> 'id' AND x.commit_token = ",
            $item,
            " ->> 'token')"
        )
    };
}

/// The upsert of a batch's step records ([`record_row`]s, one JSON array), each landing
/// only where its execution's update did.
macro_rules! upsert_landed_records {
    () => {
        concat!(
            rows_as_j!(),
            " INSERT INTO step_records (id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error) \
             SELECT j.value ->> 'record', j.value ->> 'id', j.value ->> 'step_id', j.value ->> 'step_type', j.value ->> 'parent_step_id', j.value ->> 'iteration', \
                j.value ->> 'visit', j.value ->> 'attempt', j.value ->> 'status', j.value ->> 'input', j.value ->> 'output', j.value ->> 'warnings', \
                j.value ->> 'started_at', j.value ->> 'completed_at', j.value ->> 'error' \
             FROM j WHERE ",
            landed!("j.value"),
            " ON CONFLICT(id) DO UPDATE SET status = excluded.status, input = excluded.input, output = excluded.output, warnings = excluded.warnings, \
                started_at = excluded.started_at, completed_at = excluded.completed_at, error = excluded.error; ",
        )
    };
}

/// Step record `r` of the batch item updating execution `id` with commit token `token`,
/// as a JSON row of [`upsert_landed_records`] (the record's own id is `record`).
fn record_row(r: &StepRecord, id: &str, token: &str) -> serde_json::Value {
    serde_json::json!({
        "record": r.id.to_string(), "id": id, "token": token, "step_id": r.step_id,
        "step_type": r.step_type, "parent_step_id": r.parent_step_id, "iteration": r.iteration,
        "visit": r.visit, "attempt": r.attempt, "status": r.status.as_str(),
        "input": json(&r.input), "output": json(&r.output), "warnings": json(&r.warnings),
        "started_at": ts(r.started_at), "completed_at": opt_ts(r.completed_at),
        "error": r.error.as_ref().map(json),
    })
}

/// One batch of effect-free step commits that continue, release for a retry or end, as
/// one constant text — prepared once per connection, whatever the batch holds. The
/// commits are one JSON array (bound to the first statement), their step records another
/// (the second); the approvals' close and the trail's delete and insert each get a slim
/// array of only the commits they concern, so that no statement parses the
/// commits' contexts again (parsing the batch's JSON was the writer's largest cost).
/// Each commit's update is its compare-and-set
/// and stamps the row with the commit's random token; its records, the closing of its
/// open approvals and its trail only land where the row carries that token. The
/// transitions are exactly [`rules::apply_commit`]'s for `Continue`, `Release` and
/// `Finish` (the running → terminal change is the guard's `status = 'running'`; a commit
/// flagged `refuse_if_pause_requested` also needs no pause request pending); a gate
/// never comes here (it reads the row to insert its request).
const COMMIT_BATCH_SQL: &str = concat!(
    "BEGIN IMMEDIATE; ",
    rows_as_j!(),
    " UPDATE executions SET context = v.context, cursor = v.cursor, visits = v.visits, steps_run = v.steps_run, result = v.result, \
        wake = NULL, gate = NULL, gate_reason = NULL, gate_deadline = NULL, gate_event = NULL, gate_approval_id = NULL, paused_at = NULL, \
        status = CASE WHEN v.kind = 'finish' THEN v.status ELSE executions.status END, \
        error = CASE WHEN v.kind = 'finish' THEN v.error ELSE executions.error END, \
        completed_at = CASE WHEN v.kind = 'finish' THEN v.now ELSE executions.completed_at END, \
        pause_requested = CASE WHEN v.kind = 'finish' THEN 0 ELSE executions.pause_requested END, \
        lease_owner = CASE WHEN v.kind = 'continue' THEN executions.lease_owner END, lease_expires_at = v.expires, \
        version = executions.version + 1, updated_at = v.now, commit_token = v.token \
     FROM (SELECT value ->> 'id' AS id, value ->> 'token' AS token, value ->> 'owner' AS owner, value ->> 'expected' AS expected, \
            value ->> 'kind' AS kind, value ->> 'status' AS status, value ->> 'error' AS error, value ->> 'context' AS context, \
            value ->> 'cursor' AS cursor, value ->> 'visits' AS visits, value ->> 'steps_run' AS steps_run, value ->> 'result' AS result, \
            value ->> 'expires' AS expires, value ->> 'now' AS now, value ->> 'stop' AS stop FROM j) AS v \
     WHERE executions.id = v.id AND executions.status = 'running' AND executions.lease_owner = v.owner AND executions.version = v.expected \
        AND (v.stop = 0 OR executions.pause_requested = 0) \
     RETURNING commit_token, version, pause_requested; ",
    upsert_landed_records!(),
    "UPDATE approvals SET status = c.value ->> 'close', decided_at = c.value ->> 'now' FROM json_each(?) AS c \
     WHERE approvals.execution_id = c.value ->> 'id' AND approvals.status = 'pending' AND ",
    landed!("c.value"),
    "; ",
    "DELETE FROM context_trail WHERE execution_id IN (SELECT d.value ->> 'id' FROM json_each(?) AS d WHERE ",
    landed!("d.value"),
    "); ",
    "INSERT INTO context_trail (execution_id, version, undo) SELECT x.id, x.version, t.value ->> 'undo' FROM json_each(?) AS t \
     JOIN executions x ON x.id = t.value ->> 'id' AND x.commit_token = t.value ->> 'token'; ",
    "COMMIT;"
);

/// Commits a batch of hot-path commits in one transaction and one thread hop, with one
/// statement per table ([`COMMIT_BATCH_SQL`]); per commit, its new state or `None` when
/// its compare-and-set did not match.
pub(crate) async fn commit_batch(
    writer: &sqlx::SqlitePool,
    commits: &[StepCommit],
) -> Result<Vec<Option<Committed>>> {
    let tokens: Vec<String> = commits.iter().map(|_| Uuid::new_v4().to_string()).collect();
    let mut items = Vec::with_capacity(commits.len());
    let mut records = Vec::new();
    let (mut closes, mut drops, mut undos) = (Vec::new(), Vec::new(), Vec::new());
    for (c, token) in commits.iter().zip(&tokens) {
        let id = c.execution_id.to_string();
        let (kind, status, error, expires, close) = match &c.transition {
            Transition::Continue => ("continue", None, None, Some(c.lease_expires_at), None),
            Transition::Release { at } => ("release", None, None, Some(*at), None),
            Transition::Finish { status, error } => (
                "finish",
                Some(status.as_str()),
                error.as_ref().map(json),
                None,
                Some(rules::closing_status(*status).as_str()),
            ),
            Transition::Gate { .. } => {
                return Err(Error::Invalid(
                    "a gate's commit reads its row; it is not batched".into(),
                ))
            }
        };
        let drop_trail = matches!(
            c.transition,
            Transition::Finish {
                status: ExecutionStatus::Completed,
                ..
            }
        );
        if let Some(close) = close {
            closes.push(
                serde_json::json!({ "id": id, "token": token, "close": close, "now": ts(c.now) }),
            );
        }
        if drop_trail {
            drops.push(serde_json::json!({ "id": id, "token": token }));
        } else if !c.undo.is_empty() {
            // Under the version the update just gave the row; a completed execution's
            // trail goes instead.
            undos.push(serde_json::json!({ "id": id, "token": token, "undo": json(&c.undo) }));
        }
        items.push(serde_json::json!({
            "id": id, "token": token, "owner": c.owner, "expected": c.expected_version,
            "kind": kind, "status": status, "error": error, "context": json(&c.context),
            "cursor": c.cursor.as_ref().map(json), "visits": json(&c.visits),
            "steps_run": c.steps_run, "result": c.result.map(tollgate_model::ExecutionResult::as_str),
            "expires": expires.map(ts), "now": ts(c.now), "stop": i64::from(c.refuse_if_pause_requested),
        }));
        records.extend(c.records.iter().map(|r| record_row(r, &id, token)));
    }
    let rows = Held::acquire(writer)
        .await?
        .fetch_all(
            sqlx::query(COMMIT_BATCH_SQL)
                .bind(json_array(items))
                .bind(json_array(records))
                .bind(json_array(closes))
                .bind(json_array(drops))
                .bind(json_array(undos)),
        )
        .await
        .map_err(backend)?;
    by_token(&rows, &tokens, |row| {
        Ok(Committed {
            version: row.try_get("version").map_err(backend)?,
            pause_requested: row.try_get::<i64, _>("pause_requested").map_err(backend)? != 0,
        })
    })
}

/// The answers of a batch whose updates return their item's random `commit_token`
/// (`tokens`, in the items' order): per item, what `decode` makes of its row, or `None`
/// for one without (its compare-and-set did not match).
fn by_token<R: Clone>(
    rows: &[sqlx::sqlite::SqliteRow],
    tokens: &[String],
    decode: impl Fn(&sqlx::sqlite::SqliteRow) -> Result<R>,
) -> Result<Vec<Option<R>>> {
    let mut answers = vec![None; tokens.len()];
    for row in rows {
        let token: String = row.try_get("commit_token").map_err(backend)?;
        if let Some(answer) = tokens
            .iter()
            .position(|t| *t == token)
            .and_then(|slot| answers.get_mut(slot))
        {
            *answer = Some(decode(row)?);
        }
    }
    Ok(answers)
}

/// One batch of step begins as one constant text, whatever the batch holds: per begin
/// (one JSON array), its compare-and-set version bump, stamping the row with the
/// begin's random commit token; then its `running` record (another array), which lands
/// only where the row carries that token.
const BEGIN_BATCH_SQL: &str = concat!(
    "BEGIN IMMEDIATE; ",
    rows_as_j!(),
    " UPDATE executions SET version = executions.version + 1, updated_at = v.now, commit_token = v.token \
     FROM (SELECT value ->> 'id' AS id, value ->> 'token' AS token, value ->> 'owner' AS owner, \
            value ->> 'expected' AS expected, value ->> 'now' AS now FROM j) AS v \
     WHERE executions.id = v.id AND executions.status = 'running' AND executions.lease_owner = v.owner \
        AND executions.version = v.expected \
     RETURNING commit_token, version; ",
    upsert_landed_records!(),
    "COMMIT;"
);

/// Writes a batch of step begins in one transaction and one thread hop
/// ([`BEGIN_BATCH_SQL`]). Per begin, the execution's new version, or `None` when its
/// compare-and-set did not match.
pub(crate) async fn begin_batch(
    writer: &sqlx::SqlitePool,
    begins: &[BeginRequest],
) -> Result<Vec<Option<i64>>> {
    let tokens: Vec<String> = begins.iter().map(|_| Uuid::new_v4().to_string()).collect();
    let mut items = Vec::with_capacity(begins.len());
    let mut records = Vec::with_capacity(begins.len());
    for (b, token) in begins.iter().zip(&tokens) {
        let id = b.execution_id.to_string();
        records.push(record_row(&b.record, &id, token));
        items.push(serde_json::json!({
            "id": id, "token": token, "owner": b.owner, "expected": b.expected_version,
            "now": ts(b.now),
        }));
    }
    let rows = Held::acquire(writer)
        .await?
        .fetch_all(
            sqlx::query(BEGIN_BATCH_SQL)
                .bind(json_array(items))
                .bind(json_array(records)),
        )
        .await
        .map_err(backend)?;
    by_token(&rows, &tokens, |row| {
        row.try_get("version").map_err(backend)
    })
}
