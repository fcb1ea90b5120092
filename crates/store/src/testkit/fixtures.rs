//! Builders the rules share: a fixed clock, workflows, executions at each kind of gate,
//! deciders and events.

use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_model::undo::{ContextUndo, Prior};

use chrono::{TimeDelta, TimeZone, Utc};
use serde_json::json;
use tollgate_model::records::{
    snapshot_id, ApprovalRequest, ApprovalStatus, Cursor, Decision, DecisionKind, Event, Execution,
    Gate, Lease, Principal, StepRecord, StepStatus, Timestamp, Workflow,
};
use tollgate_model::{ExecutionStatus, PauseReason, WorkflowDefinition};
use uuid::Uuid;

use crate::{LeaseClaim, StepCommit, Store, Transition};

/// A fixed "now" for the kit: stores never read the clock, so tests choose time.
pub fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().unwrap()
}

pub(crate) fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

pub fn definition(workflow_id: &str, version: &str, event: &str) -> Arc<WorkflowDefinition> {
    let doc = json!({
        "workflow_id": workflow_id, "version": version, "tags": ["kit"],
        "trigger": {"type": "event", "event": event},
        "steps": [
            {"id": "gate", "type": "approval", "approval": {"approvers": {"role": "manager"}}, "on_approve": "done"},
            {"id": "done", "type": "action", "action": "allow"}
        ]
    });
    Arc::new(tollgate_model::load(&doc).unwrap().definition)
}

pub async fn workflow(
    store: &Arc<dyn Store>,
    workflow_id: &str,
    version: &str,
    event: &str,
) -> Workflow {
    let definition = definition(workflow_id, version, event);
    store
        .create_workflow(Workflow {
            id: Uuid::now_v7(),
            snapshot_id: snapshot_id(&definition),
            enabled: definition.enabled,
            definition,
            created_at: t0(),
            updated_at: t0(),
        })
        .await
        .unwrap()
}

pub fn lease(owner: &str, until: Timestamp) -> LeaseClaim {
    LeaseClaim {
        owner: owner.to_owned(),
        expires_at: until,
    }
}

/// A running execution of `w`, leased by `owner` for 30 s from [`t0`].
pub async fn running(store: &Arc<dyn Store>, w: &Workflow, owner: &str) -> Execution {
    store
        .create_execution(new_execution(w, owner))
        .await
        .unwrap()
}

/// A running execution of `w` leased by `owner`, not stored yet.
pub fn new_execution(w: &Workflow, owner: &str) -> Execution {
    Execution {
        id: Uuid::now_v7(),
        workflow_id: w.id,
        workflow_key: w.workflow_id().to_owned(),
        workflow_version: w.version().to_owned(),
        snapshot_id: w.snapshot_id.clone(),
        status: ExecutionStatus::Running,
        result: None,
        trigger_event: "order.created".into(),
        trigger_payload: json!({"order": {"id": "o-1"}}),
        context: json!({"order": {"id": "o-1"}}),
        cursor: Some(Cursor::new("gate", 1)),
        visits: BTreeMap::new(),
        steps_run: 0,
        version: 1,
        lease: Some(Lease {
            owner: Some(owner.to_owned()),
            expires_at: t0() + secs(30),
        }),
        gate: None,
        wake: None,
        pause_requested: false,
        deadline: None,
        resume_count: 0,
        last_resumed_at: None,
        started_at: t0(),
        completed_at: None,
        updated_at: t0(),
        error: None,
        requested_by: Some("shop".into()),
        consumed_events: Vec::new(),
    }
}

pub fn step_record(execution_id: Uuid, step_id: &str, status: StepStatus) -> StepRecord {
    StepRecord {
        id: Uuid::now_v7(),
        execution_id,
        step_id: step_id.to_owned(),
        step_type: "action".into(),
        parent_step_id: None,
        iteration: None,
        visit: 1,
        attempt: 1,
        status,
        input: json!({}),
        output: json!({}),
        warnings: Vec::new(),
        started_at: t0(),
        completed_at: None,
        error: None,
    }
}

pub fn commit(e: &Execution, owner: &str, version: i64, transition: Transition) -> StepCommit {
    StepCommit {
        execution_id: e.id,
        owner: owner.to_owned(),
        expected_version: version,
        records: Vec::new(),
        context: e.context.clone(),
        cursor: e.cursor.clone(),
        visits: e.visits.clone(),
        steps_run: e.steps_run + 1,
        result: e.result,
        consumed_events: Vec::new(),
        undo: Vec::new(),
        effects: Vec::new(),
        transition,
        lease_expires_at: t0() + secs(30),
        now: t0(),
        refuse_if_pause_requested: false,
    }
}

/// A context undo entry of visit `visit` of `step` that replaced `steps.<step>` (absent).
pub fn undo_of(step: &str, visit: u32) -> ContextUndo {
    ContextUndo {
        step_id: Some(step.into()),
        visit,
        prior: vec![Prior {
            path: vec!["steps".into(), step.into()],
            value: None,
        }],
    }
}

pub fn approval_for(
    e: &Execution,
    required: u32,
    expires_at: Option<Timestamp>,
) -> ApprovalRequest {
    ApprovalRequest {
        id: Uuid::now_v7(),
        execution_id: e.id,
        step_id: "gate".into(),
        visit: 1,
        entity_type: Some("order".into()),
        entity_id: Some("o-1".into()),
        approver_roles: vec!["manager".into()],
        approver_users: Vec::new(),
        required,
        status: ApprovalStatus::Pending,
        reason: Some("big order".into()),
        data: json!({}),
        decisions: Vec::new(),
        requested_by: e.requested_by.clone(),
        allow_self_approval: false,
        requested_at: t0(),
        expires_at,
        decided_at: None,
    }
}

pub(crate) fn gate(reason: PauseReason, deadline: Option<Timestamp>) -> Gate {
    Gate {
        reason,
        step_id: "gate".into(),
        visit: 1,
        paused_at: t0(),
        deadline,
        event: (reason == PauseReason::Event).then(|| "payment.received".to_owned()),
        event_match: None,
        approval_id: None,
        note: None,
        branches: None,
        correlation: None,
    }
}

/// A running execution stopped at an approval gate; returns it (as stored) and the request.
pub async fn paused_at_approval(
    store: &Arc<dyn Store>,
    w: &Workflow,
    required: u32,
    deadline: Option<Timestamp>,
) -> (Execution, ApprovalRequest) {
    let e = running(store, w, "w1").await;
    let approval = approval_for(&e, required, deadline);
    let mut g = gate(PauseReason::Approval, deadline);
    g.approval_id = Some(approval.id);
    store
        .commit_step(commit(
            &e,
            "w1",
            e.version,
            Transition::Gate {
                gate: g,
                approval: Some(Box::new(approval.clone())),
            },
        ))
        .await
        .unwrap();
    (store.get_execution(e.id).await.unwrap(), approval)
}

/// A running execution stopped at a wait for `payment.received`.
pub async fn waiting(
    store: &Arc<dyn Store>,
    w: &Workflow,
    deadline: Option<Timestamp>,
) -> Execution {
    let e = running(store, w, "w1").await;
    store
        .commit_step(commit(
            &e,
            "w1",
            e.version,
            Transition::Gate {
                gate: gate(PauseReason::Event, deadline),
                approval: None,
            },
        ))
        .await
        .unwrap();
    store.get_execution(e.id).await.unwrap()
}

/// A holder of the approver role of [`paused_at_approval`]'s requests.
pub fn manager(who: &str) -> Principal {
    Principal {
        subject: who.to_owned(),
        roles: vec!["manager".into()],
    }
}

/// `who` decides `approval` as `decider` at `t0()`, claiming under `api` for 30 s.
pub async fn decide_as(
    store: &Arc<dyn Store>,
    approval: Uuid,
    who: &str,
    kind: DecisionKind,
    decider: &Principal,
) -> crate::Result<crate::Decided> {
    store
        .decide(
            approval,
            decision(who, kind),
            decider,
            &lease("api", t0() + secs(30)),
            t0(),
            None,
        )
        .await
}

pub fn decision(who: &str, kind: DecisionKind) -> Decision {
    Decision {
        decided_by: who.to_owned(),
        decision: kind,
        reason: Some("ok".into()),
        data: json!({"note": who}),
        decided_at: t0(),
        channel: None,
        delegate: None,
    }
}

pub fn event(event_type: &str, event_id: Option<&str>, at: Timestamp) -> Event {
    Event {
        id: Uuid::now_v7(),
        event_id: event_id.map(str::to_owned),
        event_type: event_type.to_owned(),
        payload: json!({"amount": 10}),
        source: Some("kit".into()),
        correlation_id: None,
        submitted_by: Some("shop".into()),
        received_at: at,
        started: Vec::new(),
        resumed: Vec::new(),
    }
}
