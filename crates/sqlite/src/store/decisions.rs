//! The group-commit writer of approval decisions: the decisions queued at one moment are
//! decided in one `BEGIN IMMEDIATE` transaction in two hops on the writer — read every
//! request and its execution; then every write and the commit — each judged by
//! [`tollgate_store::rules`] in arrival order ([`DecisionBatch`]).

use std::sync::Arc;

use sqlx::Row;
use tollgate_store::decision_batch::{DecideRequest, DecisionBatch, DecisionWrites};
use tollgate_store::{Decided, Result};

use crate::rows;
use crate::rows::{backend, json, opt_ts, ts};

use super::sql::{
    bind_approval, bind_execution_update, bind_step, Bound, Held, INSERT_APPROVAL_SQL,
    UPDATE_EXECUTION_SQL, UPSERT_STEP_SQL,
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
    let marks = vec!["?"; ids.len()].join(", ");
    // The requests' holders and service levels come along for the answers (one row
    // each, told apart by `kind`): no read of their own after the decision.
    let read_sql = format!(
        "BEGIN IMMEDIATE; SELECT * FROM approvals WHERE id IN ({marks}); {} WHERE id IN (SELECT execution_id FROM approvals WHERE id IN ({marks})); {}",
        select_executions!(),
        super::approvals::SERVICE_SQL,
    );
    let mut read = sqlx::query(&read_sql);
    for id in ids.iter().chain(&ids) {
        read = read.bind(id.as_str());
    }
    let listed = json(&ids);
    read = read.bind(listed.clone()).bind(listed);
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
    let writes = batch.writes;
    let wakes = writes.wakes;
    let sql = if writes.is_empty() {
        String::from("COMMIT;")
    } else {
        write_sql(&writes)
    };
    let written = bind_writes(sqlx::query(&sql), &writes)
        .execute(held.conn()?)
        .await;
    match written {
        Ok(_) => held.settled = true,
        Err(err) => {
            held.rollback().await;
            return Err(backend(err));
        }
    }
    Ok((results, wakes))
}

/// Every write of a batch of decisions and the `COMMIT`, as one multi-statement query:
/// the executions claimed or continued, the requests decided, an audit row per claiming
/// decision, the continued executions' step records, trails and new requests.
fn write_sql(writes: &DecisionWrites) -> String {
    let mut sql = String::new();
    for _ in &writes.executions {
        sql.push_str(&UPDATE_EXECUTION_SQL);
        sql.push_str("; ");
    }
    for _ in &writes.approvals {
        sql.push_str(
            "UPDATE approvals SET status = ?, decisions = ?, decided_at = ? WHERE id = ?; ",
        );
    }
    for _ in &writes.audits {
        sql.push_str("INSERT INTO resume_requests (id, execution_id, \"trigger\", actor, data, requested_at, executed_at, outcome, error) VALUES (?, ?, 'approval', ?, ?, ?, ?, 'resumed', NULL); ");
    }
    for _ in &writes.records {
        sql.push_str(UPSERT_STEP_SQL);
        sql.push_str("; ");
    }
    for _ in &writes.trails {
        sql.push_str("INSERT INTO context_trail (execution_id, version, undo) VALUES (?, ?, ?); ");
    }
    for _ in &writes.completed {
        sql.push_str("DELETE FROM context_trail WHERE execution_id = ?; ");
    }
    for _ in &writes.new_approvals {
        sql.push_str(INSERT_APPROVAL_SQL);
        sql.push_str("; ");
    }
    sql.push_str("COMMIT;");
    sql
}

/// Binds the parameters of [`write_sql`] for the same writes.
fn bind_writes<'q>(mut query: Bound<'q>, writes: &DecisionWrites) -> Bound<'q> {
    for execution in writes.executions.values() {
        query = bind_execution_update(query, execution);
    }
    for approval in writes.approvals.values() {
        query = query
            .bind(approval.status.as_str())
            .bind(json(&approval.decisions))
            .bind(opt_ts(approval.decided_at))
            .bind(approval.id.to_string());
    }
    for audit in &writes.audits {
        query = query
            .bind(audit.id.to_string())
            .bind(audit.execution_id.to_string())
            .bind(audit.actor.clone())
            .bind(json(&audit.data))
            .bind(ts(audit.at))
            .bind(ts(audit.at));
    }
    for record in &writes.records {
        query = bind_step(query, record);
    }
    for trail in &writes.trails {
        query = query
            .bind(trail.execution_id.to_string())
            .bind(trail.version)
            .bind(json(&trail.undo));
    }
    for id in &writes.completed {
        query = query.bind(id.to_string());
    }
    for approval in &writes.new_approvals {
        query = bind_approval(query, approval);
    }
    query
}
