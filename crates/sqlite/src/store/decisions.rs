//! The group-commit writer of approval decisions: the decisions queued at one moment are
//! decided in one `BEGIN IMMEDIATE` transaction in two hops on the writer — read every
//! request and its execution; then every write and the commit — each judged by
//! [`tollgate_store::rules`] in arrival order ([`DecisionBatch`]).

use std::sync::Arc;

use serde_json::Value;
use sqlx::Row;
use tollgate_store::decision_batch::{DecideRequest, DecisionBatch, DecisionWrites};
use tollgate_store::{Decided, Result};
use uuid::Uuid;

use crate::rows;
use crate::rows::{backend, json, opt_ts, ts};

use super::sql::{
    approval_cells, execution_update_row, json_array, json_insert, json_row, step_cells, Bound,
    Held, APPROVAL_COLUMNS, JSON_UPDATE_EXECUTIONS_SQL, STEP_COLUMNS,
};

/// The decisions' group committer.
pub(crate) type Decider = tollgate_store::group_commit::Batcher<DecideRequest, Decided>;

/// Starts the decisions' group committer on `writer`; `wake` is signalled after a batch
/// that left due work for the worker loops.
pub(crate) fn decider(writer: sqlx::SqlitePool, wake: Arc<tokio::sync::Notify>) -> Decider {
    tollgate_store::group_commit::Batcher::spawn(move |requests: Arc<Vec<DecideRequest>>| {
        let writer = writer.clone();
        let wake = wake.clone();
        async move {
            let (results, wakes) = decide_batch(&writer, &requests).await?;
            if wakes {
                wake.notify_one();
            }
            Ok(results)
        }
    })
}

/// Decides a batch in one transaction: one hop reads the requests and their executions
/// under `BEGIN IMMEDIATE`, the rules apply in memory, one hop writes and commits. `Err`
/// only for a database error (nothing written); otherwise one answer per request and
/// whether a continued execution stopped where the worker loops must look.
async fn decide_batch(
    writer: &sqlx::SqlitePool,
    requests: &[DecideRequest],
) -> Result<(Vec<Result<Decided>>, bool)> {
    let mut ids: Vec<String> = requests.iter().map(|r| r.approval_id.to_string()).collect();
    ids.sort();
    ids.dedup();
    // The requests' holders and service levels come along for the answers (one row
    // each, told apart by `kind`): no read of their own after the decision.
    let listed = json(&ids);
    let read = sqlx::query(&READ_SQL)
        .bind(listed.clone())
        .bind(listed.clone())
        .bind(listed.clone())
        .bind(listed);
    let mut held = Held::acquire(writer).await?;
    let rows = match read.fetch_all(held.conn()?).await {
        Ok(rows) => rows,
        Err(err) => {
            held.rollback().await;
            return Err(backend(err));
        }
    };
    // Approval rows carry `decisions`, holder and service-level rows `kind`, execution
    // rows `context`.
    let mut approvals = Vec::new();
    let mut executions = Vec::new();
    let mut service = Vec::new();
    let parsed: Result<()> = rows.iter().try_for_each(|row| {
        if row.try_get::<String, _>("decisions").is_ok() {
            approvals.push(rows::approval(row)?);
        } else if row.try_get::<String, _>("kind").is_ok() {
            service.push(row);
        } else {
            executions.push(rows::execution_to_change(row)?);
        }
        Ok(())
    });
    let service = parsed.and_then(|()| super::approvals::service_rows(service));
    let (held_by, slas) = match service {
        Ok(service) => service,
        Err(err) => {
            held.rollback().await;
            return Err(err);
        }
    };
    let mut batch = DecisionBatch::new(approvals, executions).with_service(held_by, slas);
    // A SQLite batch's outcome is never unknown: a failed batch rolled back, so a
    // request written again alone is never a retry of a stored decision.
    let results: Vec<Result<Decided>> = requests
        .iter()
        .map(|request| batch.apply(request, false))
        .collect();
    let writes = batch.into_writes();
    let wakes = writes.wakes;
    let written = if writes.is_empty() {
        sqlx::query("COMMIT;").execute(held.conn()?).await
    } else {
        bind_writes(sqlx::query(&WRITE_SQL), &writes)
            .execute(held.conn()?)
            .await
    };
    match written {
        Ok(_) => held.settled = true,
        Err(err) => {
            held.rollback().await;
            return Err(backend(err));
        }
    }
    Ok((results, wakes))
}

/// The batch's read under `BEGIN IMMEDIATE`: the requests, their executions, and the
/// requests' holders and service levels; the ids bound as a JSON array to each of its
/// four parameters. One constant statement whatever the batch's size.
static READ_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "BEGIN IMMEDIATE; SELECT * FROM approvals WHERE id IN (SELECT value FROM json_each(?)); \
         {} WHERE id IN (SELECT execution_id FROM approvals WHERE id IN (SELECT value FROM json_each(?))); {}",
        select_executions!(),
        super::approvals::SERVICE_SQL,
    )
});

/// Every write of a batch of decisions and the `COMMIT`, one constant statement per
/// table whatever the batch holds (so the writer keeps one prepared program, not one
/// per batch shape): the executions claimed or continued, the requests decided, an
/// audit row per claiming decision, the continued executions' step records, trails and
/// new requests. Each statement reads the JSON array [`bind_writes`] binds to it.
static WRITE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{}; \
         UPDATE approvals SET status = j.value ->> 'status', decisions = j.value ->> 'decisions', \
         decided_at = j.value ->> 'decided_at' FROM json_each(?) AS j WHERE approvals.id = j.value ->> 'id'; \
         INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) \
         SELECT j.value ->> 'id', j.value ->> 'execution_id', 'approval', j.value ->> 'actor', j.value ->> 'data', \
         j.value ->> 'at', j.value ->> 'at', 'resumed', NULL FROM json_each(?) AS j; \
         {} ON CONFLICT(id) DO UPDATE SET status = excluded.status, input = excluded.input, output = excluded.output, \
         warnings = excluded.warnings, started_at = excluded.started_at, completed_at = excluded.completed_at, error = excluded.error; \
         {}; \
         DELETE FROM context_trail WHERE execution_id IN (SELECT value FROM json_each(?)); \
         {}; COMMIT;",
        &*JSON_UPDATE_EXECUTIONS_SQL,
        json_insert("step_records", STEP_COLUMNS, "true"),
        json_insert("context_trail", "execution_id, version, undo", "true"),
        json_insert("approvals", APPROVAL_COLUMNS, "true"),
    )
});

/// Binds the JSON arrays of [`WRITE_SQL`] for `writes`.
fn bind_writes<'q>(query: Bound<'q>, writes: &DecisionWrites) -> Bound<'q> {
    let executions = writes
        .executions
        .values()
        .map(execution_update_row)
        .collect();
    let approvals = writes
        .approvals
        .values()
        .map(|a| {
            serde_json::json!({
                "id": a.id.to_string(), "status": a.status.as_str(),
                "decisions": json(&a.decisions), "decided_at": opt_ts(a.decided_at),
            })
        })
        .collect();
    let audits = writes
        .audits
        .iter()
        .map(|audit| {
            serde_json::json!({
                "id": audit.id.to_string(), "execution_id": audit.execution_id.to_string(),
                "actor": audit.actor, "data": json(&audit.data), "at": ts(audit.at),
            })
        })
        .collect();
    let records = writes
        .records
        .iter()
        .map(|r| Value::Object(json_row(STEP_COLUMNS, step_cells(r))))
        .collect();
    let trails = writes
        .trails
        .iter()
        .map(|t| {
            serde_json::json!({
                "execution_id": t.execution_id.to_string(), "version": t.version,
                "undo": json(&t.undo),
            })
        })
        .collect();
    let completed: Vec<String> = writes.completed.iter().map(Uuid::to_string).collect();
    let new_approvals = writes
        .new_approvals
        .iter()
        .map(|a| Value::Object(json_row(APPROVAL_COLUMNS, approval_cells(a))))
        .collect();
    query
        .bind(json_array(executions))
        .bind(json_array(approvals))
        .bind(json_array(audits))
        .bind(json_array(records))
        .bind(json_array(trails))
        .bind(json(&completed))
        .bind(json_array(new_approvals))
}
