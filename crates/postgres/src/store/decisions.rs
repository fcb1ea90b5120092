//! The group-commit writer of approval decisions: each decision judged by
//! [`tollgate_store::rules`] on rows read under lock, the batch written in one statement.

use std::sync::Arc;

use serde_json::{json, Value};
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::types::Json;
use sqlx::Row;
use tollgate_model::records::{
    ApprovalRequest, Decision, Execution, Principal, StepRecord, Timestamp,
};
use tollgate_store::{rules, Continuation, Decided, Error, LeaseClaim, Result};
use uuid::Uuid;

use crate::rows::{backend, to_json};
use crate::{rows, WAKEUP_CHANNEL};

use super::sql::{
    approvals_from_recordset, steps_from_recordset, trail_from_recordset, trail_row,
    EXECUTION_COLUMNS, STEP_UPSERT_TAIL,
};

/// One decision waiting for the decider.
#[derive(Clone)]
pub(crate) struct DecideRequest {
    pub(crate) approval_id: Uuid,
    pub(crate) decision: Decision,
    pub(crate) decider: Principal,
    pub(crate) claim: LeaseClaim,
    pub(crate) now: Timestamp,
    /// What the claimed execution does next ([`ApprovalStore::decide`]).
    pub(crate) then: Option<Continuation>,
    /// Set when a batch first tries to write this request (shared by the clones the
    /// batcher makes): found set, the request is being retried after a batch whose
    /// outcome was unknown, and its own decision may already be stored.
    pub(crate) tried: Arc<std::sync::atomic::AtomicBool>,
}

impl DecideRequest {
    pub(super) fn new(
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
            .field("continues", &self.then.is_some())
            .finish_non_exhaustive()
    }
}

/// The rows a batch of decisions writes, collected while the decisions are applied in
/// arrival order and written together in one statement.
#[derive(Default)]
pub(super) struct DecisionWrites {
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
    /// Context undo trail rows of continued executions ([`trail_row`]).
    trails: Vec<Value>,
    /// Continued executions that completed: their trails are deleted.
    completed: Vec<Uuid>,
}

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

/// The columns of the execution's row that can change after its insert (and its id), as
/// a JSON object for `jsonb_populate_recordset`.
pub(super) fn execution_changes(e: &Execution) -> Value {
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
pub(super) fn execution_row(e: &Execution) -> Value {
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
    let mut approvals = std::collections::HashMap::new();
    let mut executions = std::collections::HashMap::new();
    for row in &rows {
        let Json(doc): Json<Value> = row.try_get("approval_doc").map_err(backend)?;
        let approval: ApprovalRequest =
            serde_json::from_value(doc).map_err(|e| rows::corrupt("approval", e))?;
        let execution = rows::execution_to_change(row)?;
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
pub(super) async fn read_for_decision(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<PgRow>> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "WITH locked AS (SELECT id FROM executions WHERE id IN (SELECT execution_id FROM approvals WHERE id = ANY($1)) ORDER BY id FOR UPDATE) \
             SELECT {}, {}, to_jsonb(a) AS approval_doc FROM approvals a JOIN executions e ON e.id = a.execution_id \
             WHERE a.id = ANY($1) AND (SELECT count(*) FROM locked) >= 0 ORDER BY a.id FOR UPDATE OF a",
            columns!(executions, "e."),
            super::sql::format_of("e")
        )
    });
    sqlx::query(SQL.as_str())
        .bind(ids)
        .fetch_all(conn)
        .await
        .map_err(backend)
}

/// The one write statement of a batch of decisions ([`DECISION_WRITES_SQL`]).
pub(super) async fn write_decisions(conn: &mut PgConnection, writes: DecisionWrites) -> Result<()> {
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
        .bind(Json(Value::Array(writes.trails)))
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

/// Applies one decision to the batch's locked rows and records what to write; `Err` is
/// this decision's refusal (nothing recorded for it).
pub(super) fn decide_one(
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
            continued: None,
        });
    }
    let decision = request.decision.clone();
    let (decided_by, audit) = (
        decision.decided_by.clone(),
        rules::decision_audit(approval_id, &decision),
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
            continued: None,
        });
    }
    let next = request
        .then
        .as_ref()
        .and_then(|then| rules::continuation(&next_execution, then));
    if let Some(next) = &next {
        // Leaving the gate closed its only open request (the decided one), so an ending
        // here has no other request to close.
        writes.wakes |= next.wakes_workers();
        next_execution = next.execution.clone();
        writes.records.extend(next.records.iter().cloned());
        writes.new_approvals.extend(next.approval.iter().cloned());
        writes.trails.extend(trail_row(&next_execution, &next.undo));
        if next_execution.status == tollgate_model::ExecutionStatus::Completed {
            writes.completed.push(next_execution.id);
        }
    }
    writes
        .approvals
        .insert(approval_id, approval_row(&next_approval));
    writes
        .executions
        .insert(next_execution.id, execution_changes(&next_execution));
    writes.audits.push(json!({
        "id": Uuid::now_v7(), "execution_id": next_execution.id, "actor": decided_by, "at": now,
        "data": audit,
    }));
    *approval = next_approval;
    *execution = next_execution;
    Ok(Decided {
        approval: approval.clone(),
        execution: execution.clone(),
        claimed: true,
        continued: next,
    })
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
