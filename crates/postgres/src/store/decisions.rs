//! The group-commit writer of approval decisions: each decision judged by
//! [`tollgate_store::rules`] on rows read under lock, the batch written in one statement.

use serde_json::Value;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::types::Json;
use sqlx::Row;
use tollgate_model::records::{ApprovalAssignment, ApprovalRequest, ApprovalSla};
use tollgate_store::decision_batch::{DecideRequest, DecisionBatch, DecisionWrites};
use tollgate_store::{Decided, Result};
use uuid::Uuid;

use crate::rows::{backend, to_json};
use crate::{rows, WAKEUP_CHANNEL};

use super::json_rows::{ApprovalChanges, ExecutionChanges};

use super::sql::{
    approvals_from_recordset, steps_from_recordset, trail_from_recordset, EXECUTION_COLUMNS,
    STEP_UPSERT_TAIL,
};

/// Columns an execution never changes after its insert: a decision's update leaves them
/// out (its JSON then carries no copy of the trigger payload for the database to parse).
pub(super) const IMMUTABLE_EXECUTION_COLUMNS: [&str; 8] = [
    "workflow_id",
    "workflow_key",
    "workflow_version",
    "snapshot_id",
    "trigger_event",
    "trigger_payload",
    "started_at",
    "requested_by",
];

/// `SET` list writing every column that can change after the insert from the recordset
/// `v`; `jsonb_populate_recordset` reads a JSON `null` as SQL NULL, so the NOT NULL
/// documents are put back as JSON.
pub(super) fn execution_set_from_v() -> String {
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
pub(super) static DECISION_WRITES_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(
    || {
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
         nt AS (SELECT pg_notify($8, 'gate') WHERE $9), \
         tr AS ({} RETURNING 1), \
         untr AS (DELETE FROM context_trail WHERE execution_id = ANY($11) RETURNING 1) \
         SELECT (SELECT count(*) FROM e) AS executions, (SELECT count(*) FROM a) AS approvals, (SELECT count(*) FROM r) AS audits, \
            (SELECT count(*) FROM st) AS steps, (SELECT count(*) FROM ap) AS new_approvals, (SELECT count(*) FROM nt) AS notified",
        execution_set_from_v(),
        steps_from_recordset(6),
        approvals_from_recordset(7),
        trail_from_recordset(10),
    )
    },
);

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
    let mut approvals = Vec::with_capacity(rows.len());
    let mut executions = Vec::with_capacity(rows.len());
    let (mut held, mut slas) = (Vec::new(), Vec::new());
    for row in &rows {
        let Json(doc): Json<Value> = row.try_get("approval_doc").map_err(backend)?;
        let approval: ApprovalRequest =
            serde_json::from_value(doc).map_err(|e| rows::corrupt("approval", e))?;
        let held_doc: Option<Json<ApprovalAssignment>> =
            row.try_get("held_doc").map_err(backend)?;
        held.extend(held_doc.map(|Json(h)| h));
        let sla_doc: Option<Json<ApprovalSla>> = row.try_get("sla_doc").map_err(backend)?;
        slas.extend(sla_doc.map(|Json(s)| s));
        executions.push(rows::execution_to_change(row)?);
        approvals.push(approval);
    }
    let mut batch = DecisionBatch::new(approvals, executions).with_service(held, slas);
    let results: Vec<Result<Decided>> = requests
        .iter()
        .map(|request| batch.apply(request, request.retried()))
        .collect();
    let writes = batch.into_writes();
    if !writes.is_empty() {
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
pub(super) async fn read_for_decision(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<PgRow>> {
    sqlx::query(READ_FOR_DECISION_SQL.as_str())
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(backend)
}

/// [`read_for_decision`]'s statement.
pub(super) static READ_FOR_DECISION_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(
    || {
        format!(
            "WITH locked AS (SELECT id FROM executions WHERE id IN (SELECT execution_id FROM approvals WHERE id = ANY($1)) ORDER BY id FOR UPDATE) \
             SELECT {}, {}, to_jsonb(a) AS approval_doc, \
               (SELECT to_jsonb(h) FROM approval_assignments h WHERE h.approval_id = a.id) AS held_doc, \
               (SELECT to_jsonb(s) FROM approval_sla s WHERE s.approval_id = a.id) AS sla_doc \
             FROM approvals a JOIN executions e ON e.id = a.execution_id \
             WHERE a.id = ANY($1) AND (SELECT count(*) FROM locked) >= 0 ORDER BY a.id FOR UPDATE OF a",
            columns!(executions, "e."),
            super::sql::format_of("e")
        )
    },
);

/// The one write statement of a batch of decisions ([`DECISION_WRITES_SQL`]).
pub(super) async fn write_decisions(conn: &mut PgConnection, writes: DecisionWrites) -> Result<()> {
    let sql: &str = &DECISION_WRITES_SQL;
    // The ids again as arrays: `= ANY` on the primary keys makes the planner look the
    // rows up by key, whatever its (possibly stale) estimate of the recordsets.
    let execution_ids: Vec<Uuid> = writes.executions.keys().copied().collect();
    let approval_ids: Vec<Uuid> = writes.approvals.keys().copied().collect();
    let executions: Vec<ExecutionChanges> = writes
        .executions
        .values()
        .map(ExecutionChanges::of)
        .collect();
    let approvals: Vec<ApprovalChanges> = writes
        .approvals
        .values()
        .map(|a| ApprovalChanges {
            id: a.id,
            status: a.status.as_str(),
            decisions: &a.decisions,
            decided_at: a.decided_at,
        })
        .collect();
    sqlx::query(sql)
        .bind(to_json(&executions))
        .bind(to_json(&approvals))
        .bind(to_json(&writes.audits))
        .bind(execution_ids)
        .bind(approval_ids)
        .bind(to_json(&writes.records))
        .bind(to_json(&writes.new_approvals))
        .bind(WAKEUP_CHANNEL)
        .bind(writes.wakes)
        .bind(to_json(&writes.trails))
        .bind(writes.completed)
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
