//! The rows of the batch writers' JSON recordsets, serialised straight from the records
//! they borrow: the server builds no `serde_json::Value` copy of an execution's context,
//! cursor or step records per row (at tens of rows per batch, those copies and their
//! drops were a tenth of the server's work on a decision). Each row's keys are the
//! column names of the recordset that reads it; a `None` is JSON `null`, read as SQL
//! NULL, as a missing key would be.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use tollgate_model::records::{Cursor, Decision, Execution, ExecutionError, Gate, Timestamp, Wake};
use tollgate_model::undo::ContextUndo;
use tollgate_store::{rules, StepCommit, Transition};
use uuid::Uuid;

/// `row` with its position in the batch as the column `slot` (how a batch statement
/// joins a commit's rows to its own compare-and-set).
#[derive(Serialize)]
pub(super) struct Slotted<'a, T: Serialize> {
    pub(super) slot: usize,
    #[serde(flatten)]
    pub(super) row: &'a T,
}

/// A step commit's context undo entries, by its slot.
#[derive(Serialize)]
pub(super) struct SlotUndo<'a> {
    pub(super) slot: usize,
    pub(super) undo: &'a [ContextUndo],
}

/// The columns of an execution's row that can change after its insert, and its id (see
/// [`super::decisions::IMMUTABLE_EXECUTION_COLUMNS`]), for `jsonb_populate_recordset`.
#[derive(Serialize)]
pub(super) struct ExecutionChanges<'a> {
    id: Uuid,
    status: &'static str,
    result: Option<&'static str>,
    context: &'a Value,
    cursor: &'a Option<Cursor>,
    visits: &'a BTreeMap<String, u32>,
    steps_run: u32,
    version: i64,
    lease_owner: Option<&'a str>,
    lease_expires_at: Option<Timestamp>,
    #[serde(flatten)]
    gate: GateColumns<'a>,
    wake: &'a Option<Wake>,
    pause_requested: bool,
    deadline: Option<Timestamp>,
    resume_count: u32,
    last_resumed_at: Option<Timestamp>,
    completed_at: Option<Timestamp>,
    updated_at: Timestamp,
    error: &'a Option<ExecutionError>,
    consumed_events: &'a [Uuid],
}

impl<'a> ExecutionChanges<'a> {
    pub(super) fn of(e: &'a Execution) -> Self {
        Self {
            id: e.id,
            status: e.status.as_str(),
            result: e.result.map(tollgate_model::ExecutionResult::as_str),
            context: &e.context,
            cursor: &e.cursor,
            visits: &e.visits,
            steps_run: e.steps_run,
            version: e.version,
            lease_owner: e.lease.as_ref().and_then(|l| l.owner.as_deref()),
            lease_expires_at: e.lease.as_ref().map(|l| l.expires_at),
            gate: GateColumns::of(e.gate.as_ref()),
            wake: &e.wake,
            pause_requested: e.pause_requested,
            deadline: e.deadline,
            resume_count: e.resume_count,
            last_resumed_at: e.last_resumed_at,
            completed_at: e.completed_at,
            updated_at: e.updated_at,
            error: &e.error,
            consumed_events: &e.consumed_events,
        }
    }
}

/// The gate an execution stopped at, and the columns copied out of it for the indexes
/// that find due, waiting and paused executions.
#[derive(Serialize)]
struct GateColumns<'a> {
    gate: Option<&'a Gate>,
    gate_reason: Option<&'static str>,
    gate_deadline: Option<Timestamp>,
    gate_event: Option<&'a str>,
    gate_approval_id: Option<Uuid>,
    paused_at: Option<Timestamp>,
}

impl<'a> GateColumns<'a> {
    fn of(gate: Option<&'a Gate>) -> Self {
        Self {
            gate,
            gate_reason: gate.map(|g| g.reason.as_str()),
            gate_deadline: gate.and_then(|g| g.deadline),
            gate_event: gate.and_then(|g| g.event.as_deref()),
            gate_approval_id: gate.and_then(|g| g.approval_id),
            paused_at: gate.map(|g| g.paused_at),
        }
    }
}

/// The whole row of a new execution: its changeable columns and those an execution never
/// changes after its insert.
#[derive(Serialize)]
pub(super) struct ExecutionRow<'a> {
    #[serde(flatten)]
    changes: ExecutionChanges<'a>,
    workflow_id: Uuid,
    workflow_key: &'a str,
    workflow_version: &'a str,
    snapshot_id: &'a str,
    trigger_event: &'a str,
    trigger_payload: &'a Value,
    started_at: Timestamp,
    requested_by: Option<&'a str>,
}

impl<'a> ExecutionRow<'a> {
    pub(super) fn of(e: &'a Execution) -> Self {
        Self {
            changes: ExecutionChanges::of(e),
            workflow_id: e.workflow_id,
            workflow_key: &e.workflow_key,
            workflow_version: &e.workflow_version,
            snapshot_id: &e.snapshot_id,
            trigger_event: &e.trigger_event,
            trigger_payload: &e.trigger_payload,
            started_at: e.started_at,
            requested_by: e.requested_by.as_deref(),
        }
    }
}

/// Context undo entries stored under an execution's version (a `context_trail` row).
#[derive(Serialize)]
pub(super) struct TrailRow<'a> {
    pub(super) execution_id: Uuid,
    pub(super) version: i64,
    pub(super) undo: &'a [ContextUndo],
}

/// What a decision changes in its request's row.
#[derive(Serialize)]
pub(super) struct ApprovalChanges<'a> {
    pub(super) id: Uuid,
    pub(super) status: &'static str,
    pub(super) decisions: &'a [Decision],
    pub(super) decided_at: Option<Timestamp>,
}

/// One step commit's row of the group commit: the execution's state after its
/// transition, as `rules::apply_commit` computes it.
#[derive(Serialize)]
pub(super) struct CommitRow<'a> {
    slot: usize,
    id: Uuid,
    owner: &'a str,
    expected: i64,
    kind: &'static str,
    status: &'static str,
    context: &'a Value,
    cursor: &'a Option<Cursor>,
    visits: &'a BTreeMap<String, u32>,
    steps_run: u32,
    result: Option<tollgate_model::ExecutionResult>,
    expires: Option<Timestamp>,
    now: Timestamp,
    #[serde(flatten)]
    gate: GateColumns<'a>,
    error: Option<&'a ExecutionError>,
    close: Option<&'static str>,
    wakes: bool,
    stop: bool,
}

impl<'a> CommitRow<'a> {
    pub(super) fn of(slot: usize, c: &'a StepCommit) -> Self {
        let mut row = Self {
            slot,
            id: c.execution_id,
            owner: &c.owner,
            expected: c.expected_version,
            kind: "continue",
            status: "running",
            context: &c.context,
            cursor: &c.cursor,
            visits: &c.visits,
            steps_run: c.steps_run,
            result: c.result,
            expires: None,
            now: c.now,
            gate: GateColumns::of(None),
            error: None,
            close: None,
            wakes: false,
            stop: c.refuse_if_pause_requested,
        };
        match &c.transition {
            Transition::Continue => row.expires = Some(c.lease_expires_at),
            Transition::Release { at } => {
                row.kind = "release";
                row.expires = Some(*at);
            }
            Transition::Gate { gate, .. } => {
                row.kind = "gate";
                row.status = rules::gated_status(gate).as_str();
                row.gate = GateColumns::of(Some(gate));
                row.wakes = gate.deadline.is_some();
            }
            Transition::Finish { status, error } => {
                row.kind = "finish";
                row.status = status.as_str();
                row.error = error.as_ref();
                row.close = Some(rules::closing_status(*status).as_str());
            }
        }
        row
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;
    use tollgate_model::records::Lease;
    use tollgate_model::{ExecutionStatus, PauseReason};

    use super::*;

    fn execution() -> Execution {
        let at = chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .unwrap()
            .to_utc();
        serde_json::from_value(json!({
            "id": Uuid::nil(), "workflow_id": Uuid::nil(), "workflow_key": "orders",
            "workflow_version": "1", "snapshot_id": "s", "status": "paused",
            "trigger_event": "order.created", "trigger_payload": {"amount": 12000},
            "context": {"order": {"amount": 12000}}, "visits": {"approve": 1},
            "steps_run": 2, "version": 3, "pause_requested": false, "resume_count": 0,
            "started_at": at, "updated_at": at, "consumed_events": [],
        }))
        .unwrap()
    }

    /// The rows name exactly the columns their statements read, with the values the
    /// statements expect (statuses and reasons as their stored names).
    #[test]
    fn execution_rows_carry_every_column_by_name() {
        let mut e = execution();
        e.lease = Some(Lease {
            owner: Some("w1".into()),
            expires_at: e.updated_at,
        });
        let mut gate: Gate =
            serde_json::from_value(json!({"reason": "approval", "step_id": "approve", "visit": 1, "paused_at": e.updated_at}))
                .unwrap();
        gate.event = Some("payment.received".into());
        e.gate = Some(gate);
        e.status = ExecutionStatus::Paused;
        let row = serde_json::to_value(ExecutionRow::of(&e)).unwrap();
        let mut columns: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        columns.sort_unstable();
        let mut expected: Vec<&str> = crate::store::sql::EXECUTION_COLUMNS
            .split(',')
            .map(str::trim)
            .collect();
        expected.sort_unstable();
        assert_eq!(columns, expected);
        assert_eq!(row["status"], "paused");
        assert_eq!(row["gate_reason"], PauseReason::Approval.as_str());
        assert_eq!(row["gate_event"], "payment.received");
        assert_eq!(row["lease_owner"], "w1");
        assert_eq!(row["context"], json!({"order": {"amount": 12000}}));
        assert_eq!(row["trigger_payload"], json!({"amount": 12000}));
        let slotted = serde_json::to_value(Slotted { slot: 4, row: &row }).unwrap();
        assert_eq!(slotted["slot"], 4);
        assert_eq!(slotted["version"], 3);
    }
}
