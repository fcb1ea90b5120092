//! The backend contract test kit: the behaviour every [`Store`] must show, as one async
//! function per rule, and [`contract_tests!`](crate::contract_tests) to run them all as
//! separate tests against a backend.
//!
//! ```text
//! tollgate_store::contract_tests!(|| async { std::sync::Arc::new(MyStore::fresh().await) as std::sync::Arc<dyn tollgate_store::Store> });
//! ```
//!
//! The factory is called once per test and must return an empty store that no other test
//! uses (its own database or schema).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    missing_docs
)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chrono::{TimeDelta, TimeZone, Utc};
use serde_json::{json, Value};
use tollgate_model::records::{
    snapshot_id, ApiKey, ApprovalRequest, ApprovalStatus, Cursor, Decision, DecisionKind, Event,
    Execution, ExecutionError, Gate, Lease, Notification, Principal, ResumeOutcome, ResumeRequest,
    ResumeTrigger, StepRecord, StepStatus, Timestamp, Wake, Workflow,
};
use tollgate_model::{
    ErrorKind, ExecutionResult, ExecutionStatus, PauseReason, WorkflowDefinition,
};
use uuid::Uuid;

use crate::{
    ApprovalFilter, Effect, Error, EventInsert, ExecutionFilter, LeaseClaim, NotificationFilter,
    PageRequest, ScheduleFilter, Starting, StepCommit, Store, Transition, WorkflowFilter,
};
use tollgate_model::schedule::{CatchUp, Schedule, TickStatus};

/// Generates one `#[tokio::test]` per contract rule, each with a fresh store from
/// `$factory` (an async closure returning `Arc<dyn Store>`).
#[macro_export]
macro_rules! contract_tests {
    ($factory:expr) => {
        $crate::contract_tests!(@cases $factory;
            workflows_create_get_list_and_conflict,
            workflow_replace_keeps_old_snapshots,
            workflows_for_event_pick_highest_enabled_version,
            executions_create_get_and_conflict,
            step_commits_are_compare_and_set,
            concurrent_commits_keep_their_own_compare_and_set,
            effects_apply_once_with_the_commit,
            quorum_decisions_claim_the_execution_once,
            concurrent_decisions_claim_once,
            rejection_decides_and_stale_gates_refuse,
            decisions_are_authorised_in_their_transaction,
            decisions_store_their_continuation,
            due_gates_are_claimed_once_across_claimers,
            expired_leases_are_reclaimed_and_old_owner_fenced,
            released_lease_waits_until_its_time,
            overdue_executions_time_out_unless_held,
            manual_pause_resume_and_cancel,
            waits_claim_events_once,
            events_are_idempotent_by_event_id,
            early_events_are_paged_without_a_cap,
            decisions_after_the_deadline_are_refused,
            a_retried_event_write_answers_with_the_stored_event,
            pauses_keep_a_stored_wake,
            undelivered_events_are_listed_until_marked,
            direct_deliveries_store_nothing_when_refused,
            waits_refuse_events_from_before_they_started,
            execution_lists_use_keyset_pagination_and_filters,
            approval_lists_filter_by_decider,
            api_keys_are_unique_findable_and_revocable,
            finishing_closes_open_approvals,
            resume_request_audit_is_kept_in_order,
            foreign_cursors_are_refused,
            counts_by_status_match_the_rows,
            step_records_keep_json_null,
            trigger_schedules_follow_their_workflow,
            due_schedules_fire_each_tick_once_across_claimers,
            ticks_start_once_and_orphans_are_reclaimed,
            paused_schedules_fire_nothing_and_catch_up_is_bounded,
            schedule_crud_and_tick_history,
            events_start_their_executions_atomically,
            events_store_executions_already_at_their_gate,
            concurrent_repeats_of_an_event_store_it_once,
            console_sessions_live_until_they_expire
        );
    };
    (@cases $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store: ::std::sync::Arc<dyn $crate::Store> = ($factory)().await;
                $crate::testkit::$name(store).await;
            }
        )*
    };
}

// ---------------------------------------------------------------- fixtures

/// A fixed "now" for the kit: stores never read the clock, so tests choose time.
pub fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).single().unwrap()
}

fn secs(n: i64) -> TimeDelta {
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
        effects: Vec::new(),
        transition,
        lease_expires_at: t0() + secs(30),
        now: t0(),
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

fn gate(reason: PauseReason, deadline: Option<Timestamp>) -> Gate {
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

// ---------------------------------------------------------------- workflows

pub async fn workflows_create_get_list_and_conflict(store: Arc<dyn Store>) {
    let a = workflow(&store, "orders", "1.0.0", "order.created").await;
    let b = workflow(&store, "orders", "2.0.0", "order.created").await;
    let c = workflow(&store, "quotes", "1", "quote.created").await;
    assert_eq!(store.get_workflow(a.id).await.unwrap(), a);

    let dup = Workflow {
        id: Uuid::now_v7(),
        ..a.clone()
    };
    assert!(
        store.create_workflow(dup).await.unwrap_err().is_conflict(),
        "same workflow_id+version"
    );

    let first = store
        .list_workflows(&WorkflowFilter::default(), &PageRequest::first(2))
        .await
        .unwrap();
    assert_eq!(
        first.items.iter().map(|w| w.id).collect::<Vec<_>>(),
        [a.id, b.id]
    );
    let cursor = first.next_cursor.expect("a second page");
    let second = store
        .list_workflows(&WorkflowFilter::default(), &PageRequest::after(2, cursor))
        .await
        .unwrap();
    assert_eq!(
        second.items.iter().map(|w| w.id).collect::<Vec<_>>(),
        [c.id]
    );
    assert_eq!(second.next_cursor, None);

    let by_key = WorkflowFilter {
        workflow_id: Some("orders".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_workflows(&by_key, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    store.set_workflow_enabled(c.id, false, t0()).await.unwrap();
    let enabled = WorkflowFilter {
        enabled: Some(true),
        tag: Some("kit".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_workflows(&enabled, &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let tagged = WorkflowFilter {
        tag: Some("nope".into()),
        ..Default::default()
    };
    assert!(store
        .list_workflows(&tagged, &PageRequest::first(10))
        .await
        .unwrap()
        .items
        .is_empty());

    store.delete_workflow(a.id).await.unwrap();
    assert!(store.get_workflow(a.id).await.unwrap_err().is_not_found());
    assert!(store
        .delete_workflow(a.id)
        .await
        .unwrap_err()
        .is_not_found());
}

pub async fn workflow_replace_keeps_old_snapshots(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let other = workflow(&store, "orders", "2", "order.created").await;
    let e = running(&store, &w, "w1").await;

    let mut changed = (*definition("orders", "1", "order.updated")).clone();
    changed.name = "Orders, revised".into();
    let replaced = store
        .replace_workflow(w.id, Arc::new(changed), t0() + secs(5))
        .await
        .unwrap();
    assert_ne!(replaced.snapshot_id, w.snapshot_id);
    assert_eq!(replaced.definition.name, "Orders, revised");
    assert_eq!(replaced.updated_at, t0() + secs(5));

    // The running execution still reads the definition it started with.
    let pinned = store
        .get_snapshot(&store.get_execution(e.id).await.unwrap().snapshot_id)
        .await
        .unwrap();
    assert_eq!(*pinned, *w.definition);
    assert_eq!(
        *store.get_snapshot(&replaced.snapshot_id).await.unwrap(),
        *replaced.definition
    );

    let clash = definition("orders", "2", "x");
    assert!(
        store
            .replace_workflow(w.id, clash, t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "version 2 belongs to {}",
        other.id
    );
    assert!(store
        .replace_workflow(Uuid::now_v7(), definition("z", "1", "x"), t0())
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .get_snapshot("no-such-snapshot")
        .await
        .unwrap_err()
        .is_not_found());

    // Deleting the workflow leaves its executions and snapshots readable.
    store.delete_workflow(w.id).await.unwrap();
    let still = store.get_execution(e.id).await.unwrap();
    assert!(store.get_snapshot(&still.snapshot_id).await.is_ok());
}

pub async fn workflows_for_event_pick_highest_enabled_version(store: Arc<dyn Store>) {
    let v1 = workflow(&store, "orders", "1.9.0", "order.*").await;
    let v2 = workflow(&store, "orders", "1.10.0", "order.*").await;
    let other = workflow(&store, "audit", "1", "order.created").await;
    let _unrelated = workflow(&store, "quotes", "1", "quote.created").await;

    let mut ids: Vec<Uuid> = store
        .workflows_for_event("order.created")
        .await
        .unwrap()
        .iter()
        .map(|w| w.id)
        .collect();
    ids.sort();
    let mut expected = vec![v2.id, other.id];
    expected.sort();
    assert_eq!(ids, expected, "1.10.0 beats 1.9.0");

    store
        .set_workflow_enabled(v2.id, false, t0())
        .await
        .unwrap();
    let found = store.workflows_for_event("order.shipped").await.unwrap();
    assert_eq!(
        found.iter().map(|w| w.id).collect::<Vec<_>>(),
        [v1.id],
        "the highest *enabled* version"
    );
    assert!(!store.get_workflow(v2.id).await.unwrap().enabled);
    assert!(store
        .workflows_for_event("invoice.paid")
        .await
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------- executions and steps

pub async fn executions_create_get_and_conflict(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    assert_eq!(store.get_execution(e.id).await.unwrap(), e);
    assert!(store
        .create_execution(e.clone())
        .await
        .unwrap_err()
        .is_conflict());
    let orphan = Execution {
        id: Uuid::now_v7(),
        snapshot_id: "missing".into(),
        ..e
    };
    assert!(store
        .create_execution(orphan)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .get_execution(Uuid::now_v7())
        .await
        .unwrap_err()
        .is_not_found());
}

pub async fn step_commits_are_compare_and_set(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    let mut record = step_record(e.id, "charge", StepStatus::Running);

    assert!(
        store
            .begin_step(e.id, "w1", e.version + 1, record.clone(), t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "stale version"
    );
    assert!(
        store
            .begin_step(e.id, "w2", e.version, record.clone(), t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "not the owner"
    );
    let v2 = store
        .begin_step(e.id, "w1", e.version, record.clone(), t0())
        .await
        .unwrap();
    assert_eq!(v2, e.version + 1);
    assert_eq!(store.list_steps(e.id).await.unwrap(), [record.clone()]);

    record.status = StepStatus::Completed;
    record.output = json!({"charged": true});
    let mut c = commit(&e, "w1", v2, Transition::Continue);
    c.records = vec![
        record.clone(),
        step_record(e.id, "next", StepStatus::Completed),
    ];
    c.context = json!({"order": {"id": "o-1"}, "charged": true});
    c.cursor = Some(Cursor::new("done", 1));
    c.visits = BTreeMap::from([("charge".to_owned(), 1)]);
    c.result = Some(ExecutionResult::Allowed);
    c.lease_expires_at = t0() + secs(60);

    // A commit at the old version changes nothing.
    let mut stale = c.clone();
    stale.expected_version = e.version;
    stale.context = json!({"clobbered": true});
    assert!(store.commit_step(stale).await.unwrap_err().is_conflict());
    assert_eq!(store.get_execution(e.id).await.unwrap().context, e.context);

    let v3 = store.commit_step(c.clone()).await.unwrap().version;
    assert_eq!(v3, v2 + 1);
    let after = store.get_execution(e.id).await.unwrap();
    assert_eq!(after.version, v3);
    assert_eq!(after.context, c.context);
    assert_eq!(after.cursor, c.cursor);
    assert_eq!(after.visits, c.visits);
    assert_eq!(after.steps_run, c.steps_run);
    assert_eq!(after.result, Some(ExecutionResult::Allowed));
    assert_eq!(after.lease.as_ref().unwrap().expires_at, t0() + secs(60));
    let steps = store.list_steps(e.id).await.unwrap();
    assert_eq!(
        steps.len(),
        2,
        "the running record was replaced, not duplicated"
    );
    assert_eq!(steps[0], record);

    // Committing the same version twice: the second is a lost race.
    assert!(store.commit_step(c).await.unwrap_err().is_conflict());

    let mut done = commit(
        &after,
        "w1",
        v3,
        Transition::Finish {
            status: ExecutionStatus::Completed,
            error: None,
        },
    );
    done.now = t0() + secs(2);
    store.commit_step(done).await.unwrap();
    let ended = store.get_execution(e.id).await.unwrap();
    assert_eq!(ended.status, ExecutionStatus::Completed);
    assert_eq!(ended.completed_at, Some(t0() + secs(2)));
    assert_eq!(ended.lease, None);
    let again = commit(&ended, "w1", ended.version, Transition::Continue);
    assert!(
        store.commit_step(again).await.unwrap_err().is_conflict(),
        "terminal is final"
    );
}

/// Many commits at once (backends may fold them into one batch): each keeps its own
/// compare-and-set, and a refused commit's step rows never land.
pub async fn concurrent_commits_keep_their_own_compare_and_set(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let mut executions = Vec::new();
    for i in 0..20 {
        executions.push(running(&store, &w, &format!("w{i}")).await);
    }
    let mut tasks = Vec::new();
    for (i, e) in executions.iter().enumerate() {
        for stale in [false, true] {
            let store = store.clone();
            let e = e.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("w{i}");
                let version = if stale { e.version - 1 } else { e.version };
                let mut c = commit(&e, &owner, version, Transition::Continue);
                c.records = vec![step_record(
                    e.id,
                    if stale { "stale" } else { "fresh" },
                    StepStatus::Completed,
                )];
                (e.id, stale, store.commit_step(c).await)
            }));
        }
    }
    for task in tasks {
        let (id, stale, result) = task.await.unwrap();
        match (stale, result) {
            (false, Ok(committed)) => assert_eq!(committed.version, 2, "{id}"),
            (true, Err(err)) => assert!(err.is_conflict(), "{id}: {err}"),
            (stale, other) => panic!("{id} stale={stale}: {other:?}"),
        }
    }
    for e in &executions {
        let steps: Vec<String> = store
            .list_steps(e.id)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.step_id)
            .collect();
        assert_eq!(steps, ["fresh"], "only the matching commit's rows land");
        assert_eq!(store.get_execution(e.id).await.unwrap().version, 2);
    }
}

pub async fn effects_apply_once_with_the_commit(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    assert!(store
        .get_record("customer", "c-1")
        .await
        .unwrap_err()
        .is_not_found());
    let note = Notification {
        id: Uuid::now_v7(),
        execution_id: e.id,
        step_id: "notify".into(),
        recipients: vec!["ops@example.com".into()],
        message: "hello".into(),
        channel: "recorded".into(),
        status: "recorded".into(),
        created_at: t0(),
    };
    let mut c = commit(&e, "w1", e.version, Transition::Continue);
    c.effects = vec![
        Effect::UpsertRecord {
            entity: "customer".into(),
            entity_id: "c-1".into(),
            data: json!({"a": 1, "b": 1}),
            merge: false,
        },
        Effect::UpsertRecord {
            entity: "customer".into(),
            entity_id: "c-1".into(),
            data: json!({"b": 2, "c": 3}),
            merge: true,
        },
        Effect::Notify(note.clone()),
        Effect::Notify(note.clone()),
    ];
    let v = store.commit_step(c.clone()).await.unwrap().version;
    let record = store.get_record("customer", "c-1").await.unwrap();
    assert_eq!(record.data, json!({"a": 1, "b": 2, "c": 3}));
    assert_eq!(record.version, 2);

    // A failed (stale) commit applies none of its effects.
    assert!(store
        .commit_step(c.clone())
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(
        store.get_record("customer", "c-1").await.unwrap().version,
        2
    );

    let mut replace = commit(&e, "w1", v, Transition::Continue);
    replace.effects = vec![Effect::UpsertRecord {
        entity: "customer".into(),
        entity_id: "c-1".into(),
        data: json!({"z": 0}),
        merge: false,
    }];
    store.commit_step(replace).await.unwrap();
    let record = store.get_record("customer", "c-1").await.unwrap();
    assert_eq!((record.data, record.version), (json!({"z": 0}), 3));

    let filter = NotificationFilter {
        execution_id: Some(e.id),
    };
    let notes = store
        .list_notifications(&filter, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(
        notes.items,
        std::slice::from_ref(&note),
        "same id → one notification"
    );
    let delivered = Notification {
        status: "sent".into(),
        ..note
    };
    store.put_notification(delivered.clone()).await.unwrap();
    let notes = store
        .list_notifications(&NotificationFilter::default(), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(notes.items, [delivered]);
}

// ---------------------------------------------------------------- approvals

pub async fn quorum_decisions_claim_the_execution_once(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 2, None).await;
    assert_eq!(e.status, ExecutionStatus::Paused);
    assert_eq!(e.lease, None);
    assert_eq!(store.get_approval(approval.id).await.unwrap(), approval);

    let first = store
        .decide(
            approval.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0() + secs(30)),
            t0(),
        )
        .await
        .unwrap();
    assert!(!first.claimed);
    assert_eq!(first.approval.status, ApprovalStatus::Pending);
    assert_eq!(first.execution.status, ExecutionStatus::Paused);
    assert!(
        store
            .decide(
                approval.id,
                decision("ann", DecisionKind::Approve),
                &manager("ann"),
                &lease("api", t0()),
                t0()
            )
            .await
            .unwrap_err()
            .is_conflict(),
        "same approver twice"
    );

    let second = store
        .decide(
            approval.id,
            decision("bob", DecisionKind::Approve),
            &manager("bob"),
            &lease("api", t0() + secs(30)),
            t0() + secs(1),
        )
        .await
        .unwrap();
    assert!(second.claimed);
    assert_eq!(second.approval.status, ApprovalStatus::Approved);
    assert_eq!(second.approval.decisions.len(), 2);
    let resumed = store.get_execution(e.id).await.unwrap();
    assert_eq!(resumed, second.execution);
    assert_eq!(resumed.status, ExecutionStatus::Running);
    assert_eq!(
        resumed.lease.as_ref().and_then(|l| l.owner.as_deref()),
        Some("api")
    );
    assert_eq!(resumed.resume_count, 1);
    assert_eq!(resumed.last_resumed_at, Some(t0() + secs(1)));
    assert!(resumed.version > e.version);
    match resumed.wake {
        Some(Wake::Approval {
            outcome,
            ref decided_by,
            ref data,
            ..
        }) => {
            assert_eq!(outcome, ApprovalStatus::Approved);
            assert_eq!(decided_by.as_deref(), Some("bob"));
            assert_eq!(*data, json!({"note": "bob"}));
        }
        ref other => panic!("wake {other:?}"),
    }
    assert!(
        store
            .decide(
                approval.id,
                decision("cat", DecisionKind::Approve),
                &manager("cat"),
                &lease("api", t0()),
                t0()
            )
            .await
            .unwrap_err()
            .is_conflict(),
        "decided"
    );
    let audit = store.list_resume_requests(e.id).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].trigger,
            audit[0].outcome,
            audit[0].actor.as_deref()
        ),
        (ResumeTrigger::Approval, ResumeOutcome::Resumed, Some("bob"))
    );
    assert!(store
        .get_approval(Uuid::now_v7())
        .await
        .unwrap_err()
        .is_not_found());
}

pub async fn concurrent_decisions_claim_once(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 1, None).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let kind = if i % 2 == 0 {
                DecisionKind::Approve
            } else {
                DecisionKind::Reject
            };
            store
                .decide(
                    approval.id,
                    decision(&format!("m{i}"), kind),
                    &manager(&format!("m{i}")),
                    &lease(&format!("api-{i}"), t0() + secs(30)),
                    t0(),
                )
                .await
        }));
    }
    let mut claimed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(d) => {
                assert!(d.claimed);
                claimed += 1;
            }
            Err(err) => assert!(err.is_conflict(), "{err}"),
        }
    }
    assert_eq!(claimed, 1, "exactly one decision claims the execution");
    let after = store.get_execution(e.id).await.unwrap();
    assert_eq!(after.resume_count, 1);
    assert_eq!(
        store
            .get_approval(approval.id)
            .await
            .unwrap()
            .decisions
            .len(),
        1
    );
    assert_eq!(store.list_resume_requests(e.id).await.unwrap().len(), 1);
}

pub async fn decisions_are_authorised_in_their_transaction(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 1, None).await;
    let refusal = |err: Error| match err {
        Error::Refused {
            execution_id,
            forbidden,
            message,
        } => (execution_id, forbidden, message),
        other => panic!("expected a refusal, got {other}"),
    };
    // Not an approver: refused as forbidden, naming the execution, nothing changed.
    let viewer = Principal {
        subject: "vic".into(),
        roles: vec!["viewer".into()],
    };
    let err = decide_as(&store, approval.id, "vic", DecisionKind::Approve, &viewer)
        .await
        .unwrap_err();
    assert!(!err.is_conflict());
    let (execution_id, forbidden, message) = refusal(err);
    assert_eq!(execution_id, e.id);
    assert!(forbidden, "{message}");
    assert!(message.contains("role manager"), "{message}");
    // The requester may not approve its own request.
    let err = decide_as(
        &store,
        approval.id,
        "shop",
        DecisionKind::Approve,
        &manager("shop"),
    )
    .await
    .unwrap_err();
    assert!(refusal(err).1);
    // A decision signed by someone else than its decider is refused outright.
    assert!(matches!(
        decide_as(
            &store,
            approval.id,
            "ann",
            DecisionKind::Approve,
            &manager("bob")
        )
        .await,
        Err(Error::Invalid(_))
    ));
    let unchanged = store.get_approval(approval.id).await.unwrap();
    assert_eq!(unchanged.status, ApprovalStatus::Pending);
    assert!(unchanged.decisions.is_empty());
    assert_eq!(store.get_execution(e.id).await.unwrap(), e);
    assert!(store.list_resume_requests(e.id).await.unwrap().is_empty());
    // An administrator may decide any request.
    let admin = Principal {
        subject: "root".into(),
        roles: vec!["admin".into()],
    };
    let decided = decide_as(&store, approval.id, "root", DecisionKind::Approve, &admin)
        .await
        .unwrap();
    assert!(decided.claimed);
    // A second decision on the settled request is a state refusal (409), not forbidden.
    let err = decide_as(
        &store,
        approval.id,
        "ann",
        DecisionKind::Approve,
        &manager("ann"),
    )
    .await
    .unwrap_err();
    assert!(err.is_conflict());
    assert!(!refusal(err).1);
}

/// A continuation that moves the claimed execution on with `transition` the way a worker's
/// commit would, with one step record (and the transition's approval request).
fn continue_with(transition: Transition) -> crate::Continuation {
    Arc::new(move |claimed: &Execution| {
        let mut next = claimed.clone();
        let mut step = commit(claimed, "api", claimed.version, transition.clone());
        step.records = vec![step_record(claimed.id, "after", StepStatus::Completed)];
        step.lease_expires_at = t0() + secs(30);
        let records = step.records.clone();
        let writes = crate::rules::apply_commit(&mut next, step).ok()?;
        Some(Starting {
            execution: next,
            records,
            approval: writes.approval,
        })
    })
}

pub async fn decisions_store_their_continuation(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let audits = |id| {
        let store = store.clone();
        async move { store.list_resume_requests(id).await.unwrap().len() }
    };

    // On to a second approval gate, in the decision's own transaction.
    let (e, first) = paused_at_approval(&store, &w, 1, None).await;
    let mut second = approval_for(&e, 1, Some(t0() + secs(3600)));
    second.step_id = "second".into();
    let mut at_second = gate(PauseReason::Approval, Some(t0() + secs(3600)));
    at_second.step_id = "second".into();
    at_second.approval_id = Some(second.id);
    let decided = store
        .decide_then(
            first.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0() + secs(30)),
            t0(),
            continue_with(Transition::Gate {
                gate: at_second,
                approval: Some(Box::new(second.clone())),
            }),
        )
        .await
        .unwrap();
    assert!(
        decided.continued,
        "every backend of this workspace continues"
    );
    assert!(decided.claimed);
    assert_eq!(decided.approval.status, ApprovalStatus::Approved);
    let stored = store.get_execution(e.id).await.unwrap();
    assert_eq!(stored, decided.execution, "the answer is the stored row");
    assert_eq!(stored.status, ExecutionStatus::Paused);
    assert_eq!(stored.version, e.version + 2, "claimed, then moved on");
    assert_eq!(stored.resume_count, 1);
    assert!(stored.lease.is_none() && stored.wake.is_none());
    assert_eq!(
        stored.gate.as_ref().and_then(|g| g.approval_id),
        Some(second.id)
    );
    assert_eq!(store.get_approval(second.id).await.unwrap(), second);
    let steps = store.list_steps(e.id).await.unwrap();
    assert_eq!(
        steps.iter().map(|r| r.step_id.as_str()).collect::<Vec<_>>(),
        ["after"]
    );
    assert_eq!(audits(e.id).await, 1);
    // The new request is decidable like any other, and this time the execution
    // ends with the decision.
    let ended = store
        .decide_then(
            second.id,
            decision("bob", DecisionKind::Reject),
            &manager("bob"),
            &lease("api", t0() + secs(30)),
            t0(),
            continue_with(Transition::Finish {
                status: ExecutionStatus::Completed,
                error: None,
            }),
        )
        .await
        .unwrap();
    assert!(ended.continued);
    let stored = store.get_execution(e.id).await.unwrap();
    assert_eq!(stored, ended.execution);
    assert_eq!(stored.status, ExecutionStatus::Completed);
    assert!(stored.lease.is_none() && stored.gate.is_none() && stored.completed_at.is_some());
    assert_eq!(audits(e.id).await, 2);
    assert_eq!(
        store.get_approval(second.id).await.unwrap().status,
        ApprovalStatus::Rejected
    );

    // A continuation that does not follow the claim (another execution, or no step
    // further) is not stored: the claim is.
    for bad in [
        Arc::new(|claimed: &Execution| {
            let mut other = claimed.clone();
            other.id = Uuid::now_v7();
            other.version += 1;
            Some(Starting::from(other))
        }) as crate::Continuation,
        Arc::new(|claimed: &Execution| Some(Starting::from(claimed.clone()))),
        Arc::new(|_: &Execution| None),
    ] {
        let (e, a) = paused_at_approval(&store, &w, 1, None).await;
        let decided = store
            .decide_then(
                a.id,
                decision("ann", DecisionKind::Approve),
                &manager("ann"),
                &lease("api", t0() + secs(30)),
                t0(),
                bad,
            )
            .await
            .unwrap();
        assert!(decided.claimed && !decided.continued);
        let stored = store.get_execution(e.id).await.unwrap();
        assert_eq!(stored, decided.execution);
        assert_eq!(
            (stored.status, stored.version),
            (ExecutionStatus::Running, e.version + 1)
        );
        assert!(store.list_steps(e.id).await.unwrap().is_empty());
    }

    // A decision short of the quorum claims nothing, so nothing continues.
    let (e, a) = paused_at_approval(&store, &w, 2, None).await;
    let partial = store
        .decide_then(
            a.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0() + secs(30)),
            t0(),
            continue_with(Transition::Finish {
                status: ExecutionStatus::Completed,
                error: None,
            }),
        )
        .await
        .unwrap();
    assert!(!partial.claimed && !partial.continued);
    assert_eq!(store.get_execution(e.id).await.unwrap(), e);
}

pub async fn rejection_decides_and_stale_gates_refuse(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 3, None).await;
    store
        .decide(
            approval.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0()),
            t0(),
        )
        .await
        .unwrap();
    let rejected = store
        .decide(
            approval.id,
            decision("bob", DecisionKind::Reject),
            &manager("bob"),
            &lease("api", t0() + secs(30)),
            t0(),
        )
        .await
        .unwrap();
    assert!(rejected.claimed);
    assert_eq!(rejected.approval.status, ApprovalStatus::Rejected);
    assert!(matches!(
        rejected.execution.wake,
        Some(Wake::Approval {
            outcome: ApprovalStatus::Rejected,
            ..
        })
    ));

    // A request whose execution was cancelled refuses decisions and changes nothing.
    let (e2, a2) = paused_at_approval(&store, &w, 1, None).await;
    store
        .cancel_execution(e2.id, Some("ops"), None, t0())
        .await
        .unwrap();
    assert!(store
        .decide(
            a2.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0()),
            t0()
        )
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(
        store.get_approval(a2.id).await.unwrap().status,
        ApprovalStatus::Cancelled
    );
    assert_eq!(
        store.get_execution(e.id).await.unwrap().status,
        ExecutionStatus::Running
    );
}

// ---------------------------------------------------------------- timers and leases

pub async fn due_gates_are_claimed_once_across_claimers(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let mut approvals = Vec::new();
    let mut expected = HashSet::new();
    for i in 0..12 {
        let (e, a) = paused_at_approval(&store, &w, 1, Some(t0() + secs(i))).await;
        approvals.push(a.id);
        expected.insert(e.id);
        let e = waiting(&store, &w, Some(t0() + secs(i))).await;
        expected.insert(e.id);
    }
    let (not_due, _) = paused_at_approval(&store, &w, 1, Some(t0() + secs(3600))).await;
    let no_deadline = waiting(&store, &w, None).await;

    let now = t0() + secs(60);
    let mut workers = Vec::new();
    for worker in ["a", "b", "c"] {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_due_gates(now, &lease(worker, now + secs(30)), 5)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch);
            }
        }));
    }
    let mut seen = HashSet::new();
    for worker in workers {
        for e in worker.await.unwrap() {
            assert!(seen.insert(e.id), "{} claimed twice", e.id);
            assert_eq!(e.status, ExecutionStatus::Running);
            match e.gate.as_ref().map(|g| g.reason) {
                Some(PauseReason::Approval) => assert!(matches!(
                    e.wake,
                    Some(Wake::Approval {
                        outcome: ApprovalStatus::Expired,
                        ..
                    })
                )),
                Some(PauseReason::Event) => {
                    assert!(matches!(e.wake, Some(Wake::WaitTimeout { .. })));
                }
                other => panic!("gate {other:?}"),
            }
            let audit = store.list_resume_requests(e.id).await.unwrap();
            assert_eq!(audit.len(), 1);
            assert_eq!(audit[0].trigger, ResumeTrigger::Timer);
        }
    }
    assert_eq!(seen, expected);
    for id in approvals {
        assert_eq!(
            store.get_approval(id).await.unwrap().status,
            ApprovalStatus::Expired
        );
    }
    assert_eq!(
        store.get_execution(not_due.id).await.unwrap().status,
        ExecutionStatus::Paused
    );
    assert_eq!(
        store.get_execution(no_deadline.id).await.unwrap().status,
        ExecutionStatus::Waiting
    );
}

pub async fn expired_leases_are_reclaimed_and_old_owner_fenced(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    assert!(store
        .claim_expired_leases(t0() + secs(29), &lease("w2", t0() + secs(90)), 10)
        .await
        .unwrap()
        .is_empty());
    store
        .renew_lease(e.id, "w1", t0() + secs(40))
        .await
        .unwrap();
    assert!(store
        .renew_lease(e.id, "w2", t0() + secs(40))
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store
        .claim_expired_leases(t0() + secs(39), &lease("w2", t0() + secs(90)), 10)
        .await
        .unwrap()
        .is_empty());

    let claimed = store
        .claim_expired_leases(t0() + secs(41), &lease("w2", t0() + secs(90)), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, e.id);
    assert_eq!(
        claimed[0].lease.as_ref().and_then(|l| l.owner.as_deref()),
        Some("w2")
    );
    assert_eq!(claimed[0].cursor, e.cursor, "continues from its cursor");

    // The dead worker comes back: every write it tries is refused.
    assert!(store
        .commit_step(commit(&e, "w1", e.version, Transition::Continue))
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store
        .renew_lease(e.id, "w1", t0() + secs(99))
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store
        .begin_step(
            e.id,
            "w1",
            claimed[0].version,
            step_record(e.id, "x", StepStatus::Running),
            t0()
        )
        .await
        .unwrap_err()
        .is_conflict());
    store
        .commit_step(commit(
            &claimed[0],
            "w2",
            claimed[0].version,
            Transition::Continue,
        ))
        .await
        .unwrap();
}

pub async fn released_lease_waits_until_its_time(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    let v = store
        .commit_step(commit(
            &e,
            "w1",
            e.version,
            Transition::Release {
                at: t0() + secs(10),
            },
        ))
        .await
        .unwrap()
        .version;
    let released = store.get_execution(e.id).await.unwrap();
    assert_eq!(
        (released.status, released.version),
        (ExecutionStatus::Running, v)
    );
    assert_eq!(
        released.lease,
        Some(Lease {
            owner: None,
            expires_at: t0() + secs(10)
        })
    );
    assert!(store
        .claim_expired_leases(t0() + secs(9), &lease("w2", t0() + secs(60)), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .claim_expired_leases(t0() + secs(10), &lease("w2", t0() + secs(60)), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let other = running(&store, &w, "w3").await;
    store.release_lease(other.id, "w3", t0()).await.unwrap();
    assert!(
        store
            .release_lease(other.id, "w3", t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "no longer the owner"
    );
    assert_eq!(
        store
            .claim_expired_leases(t0(), &lease("w4", t0() + secs(60)), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn overdue_executions_time_out_unless_held(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (gated, approval) = paused_at_approval(&store, &w, 1, None).await;
    let held = running(&store, &w, "w1").await;
    // Executions with a workflow deadline (set at creation by the engine).
    let mut with_deadline = running(&store, &w, "w1").await;
    with_deadline.id = Uuid::now_v7();
    with_deadline.deadline = Some(t0() + secs(10));
    let live = store.create_execution(with_deadline.clone()).await.unwrap();
    let mut gated_d = with_deadline.clone();
    gated_d.id = Uuid::now_v7();
    let gated_d = store.create_execution(gated_d).await.unwrap();
    let a = approval_for(&gated_d, 1, None);
    let mut g = gate(PauseReason::Approval, None);
    g.approval_id = Some(a.id);
    store
        .commit_step(commit(
            &gated_d,
            "w1",
            gated_d.version,
            Transition::Gate {
                gate: g,
                approval: Some(Box::new(a.clone())),
            },
        ))
        .await
        .unwrap();

    assert!(store
        .time_out_overdue(t0() + secs(9), 10)
        .await
        .unwrap()
        .is_empty());
    let ended = store.time_out_overdue(t0() + secs(11), 10).await.unwrap();
    assert_eq!(
        ended.iter().map(|e| e.id).collect::<Vec<_>>(),
        [gated_d.id],
        "the live lease protects the running one"
    );
    let ended = store.get_execution(gated_d.id).await.unwrap();
    assert_eq!(ended.status, ExecutionStatus::TimedOut);
    assert_eq!(
        ended.error.as_ref().map(|e| e.kind),
        Some(ErrorKind::TimedOut)
    );
    assert_eq!(
        store.get_approval(a.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
    assert_eq!(
        store.list_resume_requests(gated_d.id).await.unwrap()[0].trigger,
        ResumeTrigger::Timer
    );

    // Once its lease lapses, the running one times out too.
    let ended = store.time_out_overdue(t0() + secs(31), 10).await.unwrap();
    assert_eq!(ended.iter().map(|e| e.id).collect::<Vec<_>>(), [live.id]);
    // Executions without a deadline are untouched.
    assert_eq!(
        store.get_execution(gated.id).await.unwrap().status,
        ExecutionStatus::Paused
    );
    assert_eq!(
        store.get_approval(approval.id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    assert_eq!(
        store.get_execution(held.id).await.unwrap().status,
        ExecutionStatus::Running
    );
}

// ---------------------------------------------------------------- manual control

pub async fn manual_pause_resume_and_cancel(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    let requested = store
        .request_pause(e.id, Some("ops"), Some("check"), t0())
        .await
        .unwrap();
    assert_eq!(
        (requested.status, requested.pause_requested),
        (ExecutionStatus::Running, true)
    );
    assert_eq!(
        requested.version, e.version,
        "a pause request does not fence the worker"
    );
    // The worker's next commit succeeds and tells it a pause is wanted.
    let step_done = store
        .commit_step(commit(&e, "w1", e.version, Transition::Continue))
        .await
        .unwrap();
    assert!(step_done.pause_requested);
    let requested = store.get_execution(e.id).await.unwrap();

    // The worker notices at the step boundary and stops at a manual gate.
    let mut g = gate(PauseReason::Manual, None);
    g.note = Some("check".into());
    store
        .commit_step(commit(
            &requested,
            "w1",
            requested.version,
            Transition::Gate {
                gate: g,
                approval: None,
            },
        ))
        .await
        .unwrap();
    let paused = store.get_execution(e.id).await.unwrap();
    assert_eq!(
        (paused.status, paused.pause_requested),
        (ExecutionStatus::Paused, false)
    );
    assert!(
        store
            .request_pause(e.id, None, None, t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "not running"
    );

    let resumed = store
        .resume_manual(
            e.id,
            Some("ops"),
            json!({"ok": true}),
            &lease("api", t0() + secs(30)),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(resumed.status, ExecutionStatus::Running);
    assert_eq!(
        resumed.wake,
        Some(Wake::Manual {
            data: json!({"ok": true}),
            actor: Some("ops".into())
        })
    );
    assert!(
        store
            .resume_manual(e.id, None, Value::Null, &lease("api", t0()), t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "running"
    );

    // An execution no worker holds pauses at once.
    let idle = running(&store, &w, "w1").await;
    store.release_lease(idle.id, "w1", t0()).await.unwrap();
    let paused_now = store
        .request_pause(idle.id, None, None, t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(paused_now.status, ExecutionStatus::Paused);
    assert_eq!(
        paused_now
            .gate
            .as_ref()
            .map(|g| (g.reason, g.step_id.as_str())),
        Some((PauseReason::Manual, "gate"))
    );

    // Approval gates refuse manual resume.
    let (at_gate, approval) = paused_at_approval(&store, &w, 1, None).await;
    assert!(store
        .resume_manual(at_gate.id, None, Value::Null, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());

    let cancelled = store
        .cancel_execution(at_gate.id, Some("ops"), Some("customer withdrew"), t0())
        .await
        .unwrap();
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    assert_eq!(
        cancelled.error,
        Some(ExecutionError {
            kind: ErrorKind::Cancelled,
            message: "customer withdrew".into()
        })
    );
    assert_eq!(
        store.get_approval(approval.id).await.unwrap().status,
        ApprovalStatus::Cancelled
    );
    assert!(store
        .cancel_execution(at_gate.id, None, None, t0())
        .await
        .unwrap_err()
        .is_conflict());

    // A running execution can be cancelled; its worker's next commit is refused.
    let busy = running(&store, &w, "w1").await;
    store
        .cancel_execution(busy.id, None, None, t0())
        .await
        .unwrap();
    assert!(store
        .commit_step(commit(&busy, "w1", busy.version, Transition::Continue))
        .await
        .unwrap_err()
        .is_conflict());
}

pub async fn waits_claim_events_once(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = waiting(&store, &w, None).await;
    let other = waiting(&store, &w, None).await;
    assert_eq!(e.status, ExecutionStatus::Waiting);
    let listed: Vec<Uuid> = store
        .waiting_for_event("payment.received", None, 10)
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(listed, [e.id, other.id]);
    assert_eq!(
        store
            .waiting_for_event("payment.received", Some(e.id), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store
        .waiting_for_event("nothing", None, 10)
        .await
        .unwrap()
        .is_empty());

    let wrong = event("refund.issued", None, t0());
    assert!(store
        .claim_wait(e.id, None, &wrong, None, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());
    let paid = event("payment.received", None, t0());
    assert!(
        store
            .claim_wait(
                e.id,
                Some(e.version + 7),
                &paid,
                None,
                &lease("api", t0()),
                t0()
            )
            .await
            .unwrap_err()
            .is_conflict(),
        "stale"
    );
    let mut addressed = paid.clone();
    addressed.correlation_id = Some(other.id);
    assert!(
        store
            .claim_wait(e.id, None, &addressed, None, &lease("api", t0()), t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "addressed elsewhere"
    );

    let claimed = store
        .claim_wait(
            e.id,
            Some(e.version),
            &paid,
            Some("shop"),
            &lease("api", t0() + secs(30)),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(claimed.status, ExecutionStatus::Running);
    assert_eq!(claimed.consumed_events, [paid.id]);
    assert!(
        matches!(claimed.wake, Some(Wake::Event { ref event_type, .. }) if event_type == "payment.received")
    );
    assert!(
        store
            .claim_wait(e.id, None, &paid, None, &lease("api", t0()), t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "claimed once"
    );
    assert_eq!(
        store.list_resume_requests(e.id).await.unwrap()[0].trigger,
        ResumeTrigger::Event
    );
}

pub async fn events_are_idempotent_by_event_id(store: Arc<dyn Store>) {
    let first = event("order.created", Some("ord-42"), t0());
    let EventInsert::Inserted(stored) = store.insert_event(first.clone()).await.unwrap() else {
        panic!("inserted")
    };
    assert_eq!(stored, first);
    let again = event("order.created", Some("ord-42"), t0() + secs(5));
    let EventInsert::Duplicate(dup) = store.insert_event(again).await.unwrap() else {
        panic!("duplicate")
    };
    assert_eq!(dup.id, first.id);

    let started = vec![Uuid::now_v7()];
    let updated = store
        .set_event_outcome(first.id, started.clone(), Vec::new())
        .await
        .unwrap();
    assert_eq!(updated.started, started);
    assert_eq!(store.get_event(first.id).await.unwrap(), updated);
    assert!(store
        .get_event(Uuid::now_v7())
        .await
        .unwrap_err()
        .is_not_found());

    // Events without event_id are never deduplicated.
    for _ in 0..2 {
        assert!(matches!(
            store
                .insert_event(event("order.created", None, t0()))
                .await
                .unwrap(),
            EventInsert::Inserted(_)
        ));
    }

    // Candidates for a wait: type, time and addressee.
    let exec = Uuid::now_v7();
    let mut mine = event("payment.received", None, t0() + secs(10));
    mine.correlation_id = Some(exec);
    let mut theirs = event("payment.received", None, t0() + secs(11));
    theirs.correlation_id = Some(Uuid::now_v7());
    let early = event("payment.received", None, t0() - secs(10));
    let open = event("payment.received", None, t0() + secs(12));
    for e in [&mine, &theirs, &early, &open] {
        store.insert_event((*e).clone()).await.unwrap();
    }
    let found: Vec<Uuid> = store
        .events_for_wait("payment.received", t0(), exec, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(found, [mine.id, open.id]);
}

/// A decision after the request's deadline is refused (409) even before the worker has
/// expired it, and changes nothing; the deadline then resumes the execution once.
pub async fn decisions_after_the_deadline_are_refused(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let deadline = t0() + secs(60);
    let (e, approval) = paused_at_approval(&store, &w, 1, Some(deadline)).await;
    let late = store
        .decide(
            approval.id,
            decision("mia", DecisionKind::Approve),
            &manager("mia"),
            &lease("api", deadline + secs(30)),
            deadline,
        )
        .await
        .unwrap_err();
    assert!(late.is_conflict(), "{late:?}");
    assert!(late.to_string().contains("expired"), "{late}");
    assert_eq!(store.get_approval(approval.id).await.unwrap(), approval);
    assert_eq!(store.get_execution(e.id).await.unwrap(), e);
    // Just before it, the same decision is taken.
    let (e2, approval2) = paused_at_approval(&store, &w, 1, Some(deadline)).await;
    let decided = store
        .decide(
            approval2.id,
            decision("mia", DecisionKind::Approve),
            &manager("mia"),
            &lease("api", deadline + secs(30)),
            deadline - TimeDelta::microseconds(1),
        )
        .await
        .unwrap();
    assert!(decided.claimed);
    assert_eq!(decided.execution.id, e2.id);
    let due = store
        .claim_due_gates(deadline, &lease("w2", deadline + secs(30)), 10)
        .await
        .unwrap();
    assert_eq!(due.iter().map(|x| x.id).collect::<Vec<_>>(), [e.id]);
    assert_eq!(
        store.get_approval(approval.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
}

/// Pausing an execution whose decision is stored but not yet acted on (its claimer
/// died) keeps the decision: the execution stays `running` with the pause requested,
/// and whoever takes it over finds the decision's wake signal intact.
pub async fn pauses_keep_a_stored_wake(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 1, None).await;
    let decided = decide_as(
        &store,
        approval.id,
        "mia",
        DecisionKind::Approve,
        &manager("mia"),
    )
    .await
    .unwrap();
    assert!(decided.claimed);
    // The decider's lease (30 s) lapses without a commit: it died.
    let later = t0() + secs(31);
    let paused = store
        .request_pause(e.id, Some("ops"), Some("stuck?"), later)
        .await
        .unwrap();
    assert_eq!(paused.status, ExecutionStatus::Running);
    assert!(paused.pause_requested);
    assert!(
        matches!(paused.wake, Some(Wake::Approval { approval_id, .. }) if approval_id == approval.id),
        "{:?}",
        paused.wake
    );
    assert!(
        store
            .resume_manual(e.id, Some("ops"), json!({}), &lease("ops", later), later)
            .await
            .unwrap_err()
            .is_conflict(),
        "not manually paused, so nothing to resume over the decision"
    );
    let taken = store
        .claim_expired_leases(later, &lease("w2", later + secs(30)), 10)
        .await
        .unwrap();
    assert_eq!(
        taken.len(),
        1,
        "{:?}",
        store.get_execution(e.id).await.unwrap()
    );
    assert!(taken[0].pause_requested);
    assert_eq!(taken[0].wake, decided.execution.wake);
}

/// The same event written twice (same id: a retry after a commit whose outcome its
/// caller could not know) answers with the stored event — not a key error — and stores
/// nothing twice, with or without an `event_id`.
pub async fn a_retried_event_write_answers_with_the_stored_event(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    for key in [None, Some("ord-7")] {
        let mut e = event("order.created", key, t0());
        let start = new_execution(&w, "api");
        e.started = vec![start.id];
        let starts = vec![Starting::from(start.clone())];
        let first = store
            .insert_event_starting(e.clone(), starts.clone())
            .await
            .unwrap();
        assert!(matches!(first, EventInsert::Inserted(ref x) if x.id == e.id));
        let again = store.insert_event_starting(e.clone(), starts).await;
        assert!(
            matches!(again, Ok(EventInsert::Inserted(ref x)) if x.id == e.id),
            "{again:?}"
        );
        assert_eq!(store.get_execution(start.id).await.unwrap(), start);
    }
}

/// Early-event look-ups page by (`received_at`, id): every candidate is reachable, however
/// many came before it — including events received in the same instant.
pub async fn early_events_are_paged_without_a_cap(store: Arc<dyn Store>) {
    let exec = Uuid::now_v7();
    let mut all = Vec::new();
    for i in 0..7 {
        // Pairs received in the same instant: the id breaks the tie.
        let e = event("doc.signed", None, t0() + secs(i / 2));
        store.insert_event(e.clone()).await.unwrap();
        all.push((e.received_at, e.id));
    }
    all.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .events_for_wait("doc.signed", t0(), exec, after, 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|e| (e.received_at, e.id)));
        match page.last() {
            Some(last) if page.len() == 3 => after = Some((last.received_at, last.id)),
            _ => break,
        }
    }
    assert_eq!(seen, all, "every event once, oldest first");
}

/// Events are stored pending delivery; the sweep's query finds them by age and marking
/// removes them from it. A direct delivery is delivered when stored.
pub async fn undelivered_events_are_listed_until_marked(store: Arc<dyn Store>) {
    let a = event("order.paid", Some("pay-1"), t0());
    let b = event("order.paid", None, t0() + secs(5));
    store.insert_event(a.clone()).await.unwrap();
    store
        .insert_event_starting(b.clone(), Vec::new())
        .await
        .unwrap();
    let ids = |events: Vec<Event>| events.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.undelivered_events(t0() + secs(5), 10).await.unwrap()),
        [a.id, b.id]
    );
    assert_eq!(
        ids(store.undelivered_events(t0() + secs(4), 10).await.unwrap()),
        [a.id],
        "only those received by the given time"
    );
    assert_eq!(
        ids(store.undelivered_events(t0() + secs(5), 1).await.unwrap()),
        [a.id]
    );
    // A repeat of an `event_id` stores nothing new.
    store
        .insert_event(event("order.paid", Some("pay-1"), t0() + secs(6)))
        .await
        .unwrap();
    store
        .mark_events_delivered(&[a.id, Uuid::now_v7()])
        .await
        .unwrap();
    assert_eq!(
        ids(store.undelivered_events(t0() + secs(60), 10).await.unwrap()),
        [b.id]
    );
    store.mark_events_delivered(&[b.id]).await.unwrap();
    store.mark_events_delivered(&[]).await.unwrap();
    assert!(store
        .undelivered_events(t0() + secs(60), 10)
        .await
        .unwrap()
        .is_empty());
}

/// A direct delivery stores the event and claims its addressee in one transaction; a
/// refusal stores nothing, and a repeated `event_id` changes nothing.
pub async fn direct_deliveries_store_nothing_when_refused(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = waiting(&store, &w, None).await;
    let addressed = |event_type: &str, key: Option<&str>| {
        let mut ev = event(event_type, key, t0() + secs(1));
        ev.correlation_id = Some(e.id);
        ev
    };
    // Wrong type: refused, nothing stored (not even the event).
    let wrong = addressed("refund.issued", Some("d-1"));
    assert!(store
        .deliver_event(wrong.clone(), None, &lease("api", t0() + secs(30)), t0())
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store.get_event(wrong.id).await.unwrap_err().is_not_found());
    // Stale version: refused too.
    let stale = addressed("payment.received", Some("d-1"));
    assert!(store
        .deliver_event(
            stale.clone(),
            Some(e.version + 3),
            &lease("api", t0() + secs(30)),
            t0()
        )
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store.get_event(stale.id).await.unwrap_err().is_not_found());
    // No addressee: invalid.
    assert!(matches!(
        store
            .deliver_event(
                event("payment.received", None, t0()),
                None,
                &lease("api", t0()),
                t0()
            )
            .await,
        Err(Error::Invalid(_))
    ));
    assert!(store
        .deliver_event(
            {
                let mut ev = event("payment.received", None, t0());
                ev.correlation_id = Some(Uuid::now_v7());
                ev
            },
            None,
            &lease("api", t0()),
            t0()
        )
        .await
        .unwrap_err()
        .is_not_found());

    // The same key, now right: stored and claimed together.
    let good = addressed("payment.received", Some("d-1"));
    let crate::Delivery::Claimed {
        event: stored,
        execution,
    } = store
        .deliver_event(
            good.clone(),
            Some(e.version),
            &lease("api", t0() + secs(30)),
            t0() + secs(1),
        )
        .await
        .unwrap()
    else {
        panic!("claimed")
    };
    assert_eq!(stored.resumed, [e.id]);
    assert_eq!(execution.status, ExecutionStatus::Running);
    assert_eq!(execution.consumed_events, [good.id]);
    assert_eq!(store.get_execution(e.id).await.unwrap(), *execution);
    assert_eq!(store.get_event(good.id).await.unwrap(), stored);
    assert!(
        store
            .undelivered_events(t0() + secs(60), 10)
            .await
            .unwrap()
            .is_empty(),
        "a direct delivery is delivered when stored"
    );
    assert_eq!(
        store.list_resume_requests(e.id).await.unwrap().len(),
        1,
        "one audit row, for the accepted delivery"
    );
    // A resend with the same key: the first event, nothing changed.
    let again = addressed("payment.received", Some("d-1"));
    let crate::Delivery::Duplicate(first) = store
        .deliver_event(
            again.clone(),
            None,
            &lease("other", t0() + secs(30)),
            t0() + secs(2),
        )
        .await
        .unwrap()
    else {
        panic!("duplicate")
    };
    assert_eq!(first, stored);
    assert_eq!(store.get_execution(e.id).await.unwrap(), *execution);
    assert!(store.get_event(again.id).await.unwrap_err().is_not_found());
}

/// An event that arrived before an execution started, or that started it, never
/// resumes it.
pub async fn waits_refuse_events_from_before_they_started(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = waiting(&store, &w, None).await;
    let before = event("payment.received", None, t0() - secs(1));
    assert!(store
        .claim_wait(e.id, None, &before, None, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());
    let mut starter = event("payment.received", None, t0());
    starter.started = vec![e.id];
    assert!(store
        .claim_wait(e.id, None, &starter, None, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(
        store.get_execution(e.id).await.unwrap().status,
        ExecutionStatus::Waiting
    );
}

// ---------------------------------------------------------------- lists

pub async fn execution_lists_use_keyset_pagination_and_filters(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let q = workflow(&store, "quotes", "1", "quote.created").await;
    let mut all = Vec::new();
    for _ in 0..23 {
        all.push(running(&store, &w, "w1").await.id);
    }
    all.reverse(); // newest first
    let mut seen = Vec::new();
    let mut page = PageRequest::first(10);
    loop {
        let got = store
            .list_executions(&ExecutionFilter::default(), &page)
            .await
            .unwrap();
        seen.extend(got.items.iter().map(|e| e.id));
        match got.next_cursor {
            Some(c) => page = PageRequest::after(10, c),
            None => break,
        }
    }
    assert_eq!(seen, all);

    let (paused, _) = paused_at_approval(&store, &q, 1, None).await;
    let waited = waiting(&store, &q, None).await;
    let by = |f: ExecutionFilter| {
        let store = store.clone();
        async move {
            store
                .list_executions(&f, &PageRequest::first(100))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by(ExecutionFilter {
            status: Some(ExecutionStatus::Paused),
            ..Default::default()
        })
        .await,
        [paused.id]
    );
    assert_eq!(
        by(ExecutionFilter {
            workflow_key: Some("quotes".into()),
            ..Default::default()
        })
        .await,
        [waited.id, paused.id]
    );
    assert_eq!(
        by(ExecutionFilter {
            workflow_id: Some(q.id),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        by(ExecutionFilter {
            paused_reason: Some(PauseReason::Event),
            ..Default::default()
        })
        .await,
        [waited.id]
    );
    assert_eq!(
        by(ExecutionFilter {
            approver_role: Some("manager".into()),
            ..Default::default()
        })
        .await,
        [paused.id]
    );
    assert!(by(ExecutionFilter {
        approver_role: Some("cfo".into()),
        ..Default::default()
    })
    .await
    .is_empty());

    // Gated executions, oldest pause first, paged.
    let first = store.list_gated(&PageRequest::first(1)).await.unwrap();
    assert_eq!(
        first.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        [paused.id]
    );
    let second = store
        .list_gated(&PageRequest::after(1, first.next_cursor.unwrap()))
        .await
        .unwrap();
    assert_eq!(
        second.items.iter().map(|e| e.id).collect::<Vec<_>>(),
        [waited.id]
    );
    assert_eq!(second.next_cursor, None);
}

pub async fn approval_lists_filter_by_decider(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (_, a1) = paused_at_approval(&store, &w, 2, None).await;
    let (_, a2) = paused_at_approval(&store, &w, 1, None).await;
    store
        .decide(
            a2.id,
            decision("bob", DecisionKind::Reject),
            &manager("bob"),
            &lease("api", t0()),
            t0(),
        )
        .await
        .unwrap();

    let list = |f: ApprovalFilter| {
        let store = store.clone();
        async move {
            store
                .list_approvals(&f, &PageRequest::first(10))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(ApprovalFilter::default()).await,
        [a2.id, a1.id],
        "newest first"
    );
    assert_eq!(
        list(ApprovalFilter {
            status: Some(ApprovalStatus::Pending),
            ..Default::default()
        })
        .await,
        [a1.id]
    );
    assert_eq!(
        list(ApprovalFilter {
            role: Some("manager".into()),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        list(ApprovalFilter {
            execution_id: Some(a1.execution_id),
            ..Default::default()
        })
        .await,
        [a1.id]
    );

    let ann = manager("ann");
    let outsider = Principal {
        subject: "zed".into(),
        roles: vec!["fraud_analyst".into()],
    };
    let requester = Principal {
        subject: "shop".into(),
        roles: vec!["manager".into()],
    };
    assert_eq!(
        list(ApprovalFilter {
            decidable_by: Some(ann.clone()),
            ..Default::default()
        })
        .await,
        [a1.id]
    );
    assert!(list(ApprovalFilter {
        decidable_by: Some(outsider),
        ..Default::default()
    })
    .await
    .is_empty());
    assert!(
        list(ApprovalFilter {
            decidable_by: Some(requester),
            ..Default::default()
        })
        .await
        .is_empty(),
        "no self-approval"
    );
    store
        .decide(
            a1.id,
            decision("ann", DecisionKind::Approve),
            &ann,
            &lease("api", t0()),
            t0(),
        )
        .await
        .unwrap();
    assert!(
        list(ApprovalFilter {
            decidable_by: Some(ann),
            ..Default::default()
        })
        .await
        .is_empty(),
        "already approved by ann"
    );

    let page = store
        .list_approvals(&ApprovalFilter::default(), &PageRequest::first(1))
        .await
        .unwrap();
    let rest = store
        .list_approvals(
            &ApprovalFilter::default(),
            &PageRequest::after(1, page.next_cursor.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.iter().map(|a| a.id).collect::<Vec<_>>(), [a1.id]);
}

pub async fn api_keys_are_unique_findable_and_revocable(store: Arc<dyn Store>) {
    let key = ApiKey {
        id: Uuid::now_v7(),
        name: "billing".into(),
        roles: vec!["service".into()],
        key_hash: "ab".repeat(32),
        created_at: t0(),
    };
    assert_eq!(store.create_api_key(key.clone()).await.unwrap(), key);
    let clash = ApiKey {
        id: Uuid::now_v7(),
        key_hash: "cd".repeat(32),
        ..key.clone()
    };
    let err = store.create_api_key(clash).await.unwrap_err();
    assert!(err.is_conflict());
    // In the API's words, never the database's (`UNIQUE constraint failed: …`,
    // `duplicate key value violates …`).
    let message = err.to_string();
    assert!(message.contains("API key"), "{message}");
    assert!(
        !message.contains("UNIQUE") && !message.contains("duplicate key"),
        "{message}"
    );
    let second = ApiKey {
        id: Uuid::now_v7(),
        name: "ops".into(),
        roles: vec!["operator".into()],
        key_hash: "ef".repeat(32),
        created_at: t0(),
    };
    store.create_api_key(second.clone()).await.unwrap();
    assert_eq!(
        store.find_api_key(&key.key_hash).await.unwrap(),
        Some(key.clone())
    );
    assert_eq!(store.find_api_key("00").await.unwrap(), None);
    let listed = store.list_api_keys(&PageRequest::first(10)).await.unwrap();
    assert_eq!(listed.items, [key.clone(), second]);
    store.delete_api_key(key.id).await.unwrap();
    assert_eq!(store.find_api_key(&key.key_hash).await.unwrap(), None);
    assert!(store
        .delete_api_key(key.id)
        .await
        .unwrap_err()
        .is_not_found());
}

pub async fn finishing_closes_open_approvals(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    // An execution resumed by a timer whose approval was expired, then failing: nothing stays pending.
    let (e, a) = paused_at_approval(&store, &w, 1, Some(t0())).await;
    let claimed = store
        .claim_due_gates(t0(), &lease("w2", t0() + secs(30)), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        store.get_approval(a.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
    let failed = commit(
        &claimed[0],
        "w2",
        claimed[0].version,
        Transition::Finish {
            status: ExecutionStatus::Failed,
            error: Some(ExecutionError {
                kind: ErrorKind::StepFailed,
                message: "boom".into(),
            }),
        },
    );
    store.commit_step(failed).await.unwrap();
    let ended = store.get_execution(e.id).await.unwrap();
    assert_eq!(
        (ended.status, ended.gate.clone(), ended.wake.clone()),
        (ExecutionStatus::Failed, None, None)
    );

    // A Finish with a non-terminal status is refused.
    let r = running(&store, &w, "w1").await;
    let bogus = commit(
        &r,
        "w1",
        r.version,
        Transition::Finish {
            status: ExecutionStatus::Waiting,
            error: None,
        },
    );
    assert!(store.commit_step(bogus).await.is_err());
}

pub async fn resume_request_audit_is_kept_in_order(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, a) = paused_at_approval(&store, &w, 1, None).await;
    let refused = ResumeRequest {
        id: Uuid::now_v7(),
        execution_id: e.id,
        trigger: ResumeTrigger::Manual,
        actor: Some("ops".into()),
        data: json!({}),
        requested_at: t0(),
        executed_at: None,
        outcome: ResumeOutcome::Refused,
        error: Some("paused at an approval gate".into()),
    };
    store.record_resume_request(refused.clone()).await.unwrap();
    store
        .decide(
            a.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0()),
            t0() + secs(1),
        )
        .await
        .unwrap();
    let audit = store.list_resume_requests(e.id).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0], refused);
    assert_eq!(audit[1].outcome, ResumeOutcome::Resumed);
    assert!(store
        .list_resume_requests(Uuid::now_v7())
        .await
        .unwrap_err()
        .is_not_found());
}

pub async fn foreign_cursors_are_refused(store: Arc<dyn Store>) {
    let bad = PageRequest::after(10, "not-a-cursor");
    assert!(matches!(
        store
            .list_executions(&ExecutionFilter::default(), &bad)
            .await,
        Err(crate::Error::Invalid(_))
    ));
    assert!(matches!(
        store.list_gated(&bad).await,
        Err(crate::Error::Invalid(_))
    ));
    assert!(matches!(
        store.list_workflows(&WorkflowFilter::default(), &bad).await,
        Err(crate::Error::Invalid(_))
    ));
    assert!(matches!(
        store.list_approvals(&ApprovalFilter::default(), &bad).await,
        Err(crate::Error::Invalid(_))
    ));
    store.ping().await.unwrap();
}

/// `count_by_status` counts every execution once, under its current status;
/// `count_in_flight` the same for the non-terminal statuses only.
pub async fn counts_by_status_match_the_rows(store: Arc<dyn Store>) {
    assert!(store.count_by_status().await.unwrap().is_empty());
    assert!(store.count_in_flight().await.unwrap().is_empty());
    let w = workflow(&store, "orders", "1", "order.created").await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(running(&store, &w, "w1").await);
    }
    paused_at_approval(&store, &w, 1, None).await;
    paused_at_approval(&store, &w, 1, None).await;
    waiting(&store, &w, None).await;
    store
        .cancel_execution(runs[0].id, Some("ops"), None, t0())
        .await
        .unwrap();
    let sorted = |mut counts: Vec<(ExecutionStatus, u64)>| {
        counts.sort_by_key(|(status, _)| status.as_str());
        counts
    };
    assert_eq!(
        sorted(store.count_by_status().await.unwrap()),
        vec![
            (ExecutionStatus::Cancelled, 1),
            (ExecutionStatus::Paused, 2),
            (ExecutionStatus::Running, 3),
            (ExecutionStatus::Waiting, 1)
        ]
    );
    assert_eq!(
        sorted(store.count_in_flight().await.unwrap()),
        vec![
            (ExecutionStatus::Paused, 2),
            (ExecutionStatus::Running, 3),
            (ExecutionStatus::Waiting, 1)
        ]
    );
}

/// A step without input or output (JSON `null`) is stored and read back as such, on
/// every commit path (begin, grouped continue, finish).
pub async fn step_records_keep_json_null(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    let mut begun = step_record(e.id, "a", StepStatus::Running);
    begun.input = Value::Null;
    begun.output = Value::Null;
    let version = store
        .begin_step(e.id, "w1", e.version, begun.clone(), t0())
        .await
        .unwrap();
    let mut done = begun.clone();
    done.status = StepStatus::Completed;
    done.completed_at = Some(t0());
    let mut next = step_record(e.id, "b", StepStatus::Completed);
    next.input = Value::Null;
    next.output = Value::Null;
    let mut c = commit(&e, "w1", version, Transition::Continue);
    c.records = vec![done, next];
    let committed = store.commit_step(c).await.unwrap();
    let mut last = step_record(e.id, "c", StepStatus::Completed);
    last.input = Value::Null;
    let mut c = commit(
        &e,
        "w1",
        committed.version,
        Transition::Finish {
            status: ExecutionStatus::Completed,
            error: None,
        },
    );
    c.records = vec![last];
    store.commit_step(c).await.unwrap();
    let steps = store.list_steps(e.id).await.unwrap();
    assert_eq!(steps.len(), 3);
    assert!(steps.iter().all(|s| s.input.is_null()), "{steps:?}");
    assert!(steps[..2].iter().all(|s| s.output.is_null()), "{steps:?}");
}

// ---------------------------------------------------------------- schedules

async fn workflow_from(store: &Arc<dyn Store>, doc: Value) -> Workflow {
    let definition = Arc::new(tollgate_model::load(&doc).unwrap().definition);
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

fn scheduled_doc(workflow_id: &str, cron: &str, timezone: Option<&str>) -> Value {
    let mut trigger = json!({"type": "schedule", "cron": cron});
    if let Some(tz) = timezone {
        trigger["timezone"] = json!(tz);
    }
    json!({"workflow_id": workflow_id, "version": "1", "trigger": trigger,
           "steps": [{"id": "done", "type": "action", "action": "allow"}]})
}

/// A manual schedule on `w`: every minute, due at `t0()`.
pub fn minute_schedule(w: &Workflow, catch_up: CatchUp) -> Schedule {
    Schedule {
        id: Uuid::now_v7(),
        workflow_id: w.id,
        cron: "0 * * * * *".into(),
        timezone: "UTC".into(),
        enabled: true,
        catch_up,
        from_trigger: false,
        next_fire_at: Some(t0()),
        last_fired_at: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

/// A workflow's own `schedule` trigger has a schedule that follows the definition, and
/// deleting the workflow deletes every schedule of it.
pub async fn trigger_schedules_follow_their_workflow(store: Arc<dyn Store>) {
    let w = workflow_from(
        &store,
        scheduled_doc("report", "0 */6 * * *", Some("Europe/Berlin")),
    )
    .await;
    let id = crate::rules::trigger_schedule_id(w.id);
    let s = store.get_schedule(id).await.unwrap();
    assert!(s.from_trigger && s.enabled);
    assert_eq!(
        (s.cron.as_str(), s.timezone.as_str()),
        ("0 */6 * * *", "Europe/Berlin")
    );
    // 12:00 UTC is 13:00 in Berlin; the next 6-hourly tick is 18:00 Berlin = 17:00 UTC.
    assert_eq!(s.next_fire_at, Some(t0() + secs(5 * 3600)));

    let changed = Arc::new(
        tollgate_model::load(&scheduled_doc("report", "@daily", None))
            .unwrap()
            .definition,
    );
    store
        .replace_workflow(w.id, changed, t0() + secs(60))
        .await
        .unwrap();
    let s = store.get_schedule(id).await.unwrap();
    assert_eq!((s.cron.as_str(), s.timezone.as_str()), ("@daily", "UTC"));
    assert_eq!(s.next_fire_at, Some(t0() + secs(12 * 3600)));

    let manual = store
        .create_schedule(minute_schedule(&w, CatchUp::Skip))
        .await
        .unwrap();
    let evented = definition("report", "1", "report.requested");
    store
        .replace_workflow(w.id, evented, t0() + secs(120))
        .await
        .unwrap();
    assert!(store.get_schedule(id).await.unwrap_err().is_not_found());
    assert!(
        store.get_schedule(manual.id).await.is_ok(),
        "manual schedules stay"
    );

    // Enabling a workflow whose trigger is a schedule brings the trigger schedule back.
    let again = Arc::new(
        tollgate_model::load(&scheduled_doc("report", "@hourly", None))
            .unwrap()
            .definition,
    );
    store.replace_workflow(w.id, again, t0()).await.unwrap();
    store.delete_schedule(id).await.unwrap();
    store.set_workflow_enabled(w.id, false, t0()).await.unwrap();
    store.set_workflow_enabled(w.id, true, t0()).await.unwrap();
    assert_eq!(store.get_schedule(id).await.unwrap().cron, "@hourly");

    store.delete_workflow(w.id).await.unwrap();
    assert!(store.get_schedule(id).await.unwrap_err().is_not_found());
    assert!(store
        .get_schedule(manual.id)
        .await
        .unwrap_err()
        .is_not_found());
    let none = store
        .create_schedule(minute_schedule(&w, CatchUp::Skip))
        .await
        .unwrap_err();
    assert!(none.is_not_found());
}

/// Two claimers racing over due schedules claim every tick exactly once, and the
/// schedules move past `now`.
pub async fn due_schedules_fire_each_tick_once_across_claimers(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    for _ in 0..20 {
        store
            .create_schedule(minute_schedule(&w, CatchUp::Skip))
            .await
            .unwrap();
    }
    let now = t0() + secs(1);
    let mut handles = Vec::new();
    for owner in ["w1", "w2"] {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store
                    .claim_ticks(now, &lease(owner, now + secs(30)), 3)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(
                    batch
                        .into_iter()
                        .map(|c| (c.tick.schedule_id, c.tick.tick_time)),
                );
            }
            got
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let unique: std::collections::BTreeSet<_> = all.iter().copied().collect();
    assert_eq!(all.len(), 20, "each schedule's tick claimed once");
    assert_eq!(unique.len(), 20);
    assert!(all.iter().all(|(_, t)| *t == t0()));
    let page = store
        .list_schedules(&ScheduleFilter::default(), &PageRequest::first(100))
        .await
        .unwrap();
    assert!(page
        .items
        .iter()
        .all(|s| s.next_fire_at == Some(t0() + secs(60)) && s.last_fired_at == Some(t0())));
    assert!(store
        .claim_ticks(now, &lease("w3", now + secs(30)), 100)
        .await
        .unwrap()
        .is_empty());
}

/// A tick starts one execution, only by its holder; a claimer that died before starting
/// leaves a tick that another worker reclaims after the lease.
pub async fn ticks_start_once_and_orphans_are_reclaimed(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let schedule = store
        .create_schedule(minute_schedule(&w, CatchUp::Skip))
        .await
        .unwrap();
    let claimed = store
        .claim_ticks(t0(), &lease("w1", t0() + secs(30)), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].schedule.id, schedule.id);
    let tick = claimed[0].tick.clone();
    assert_eq!(tick.status, TickStatus::Pending);
    assert!(store
        .start_tick(tick.id, "w2", new_execution(&w, "w2"), t0())
        .await
        .unwrap_err()
        .is_conflict());
    // w1 dies; before its lease ends nobody else gets the tick.
    assert!(store
        .claim_ticks(t0() + secs(10), &lease("w2", t0() + secs(40)), 10)
        .await
        .unwrap()
        .is_empty());
    let later = t0() + secs(31);
    let reclaimed = store
        .claim_ticks(later, &lease("w2", later + secs(30)), 10)
        .await
        .unwrap();
    assert!(
        reclaimed.iter().any(|c| c.tick.id == tick.id),
        "{reclaimed:?}"
    );
    // The old holder is fenced off; the new one starts it exactly once.
    let lost = new_execution(&w, "w1");
    assert!(store
        .start_tick(tick.id, "w1", lost.clone(), later)
        .await
        .unwrap_err()
        .is_conflict());
    assert!(
        store
            .get_execution(lost.id)
            .await
            .unwrap_err()
            .is_not_found(),
        "a refused start stores nothing"
    );
    let execution = new_execution(&w, "w2");
    let started = store
        .start_tick(tick.id, "w2", execution.clone(), later)
        .await
        .unwrap();
    assert_eq!(started.id, execution.id);
    assert!(store.get_execution(execution.id).await.is_ok());
    assert!(store
        .start_tick(tick.id, "w2", new_execution(&w, "w2"), later)
        .await
        .unwrap_err()
        .is_conflict());
    let ticks = store
        .list_ticks(schedule.id, &PageRequest::first(10))
        .await
        .unwrap();
    let view = ticks.items.iter().find(|v| v.tick.id == tick.id).unwrap();
    assert_eq!(view.tick.status, TickStatus::Started);
    assert_eq!(view.tick.execution_id, Some(execution.id));
    assert_eq!(view.outcome, Some(ExecutionStatus::Running));

    // A tick whose workflow vanished is marked failed by its holder.
    let next = store
        .claim_ticks(t0() + secs(61), &lease("w2", t0() + secs(90)), 10)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert!(store
        .fail_tick(next[0].tick.id, "w1", "gone", t0())
        .await
        .unwrap_err()
        .is_conflict());
    store
        .fail_tick(next[0].tick.id, "w2", "workflow deleted", t0() + secs(61))
        .await
        .unwrap();
    let ticks = store
        .list_ticks(schedule.id, &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(ticks.items[0].tick.status, TickStatus::Failed);
    assert_eq!(
        ticks.items[0].tick.error.as_deref(),
        Some("workflow deleted")
    );
}

/// Paused schedules and schedules of disabled workflows fire nothing; `all` catches up on
/// missed ticks, `skip` collapses them.
pub async fn paused_schedules_fire_nothing_and_catch_up_is_bounded(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let mut paused = minute_schedule(&w, CatchUp::Skip);
    paused.enabled = false;
    store.create_schedule(paused).await.unwrap();
    let skip = store
        .create_schedule(minute_schedule(&w, CatchUp::Skip))
        .await
        .unwrap();
    let all = store
        .create_schedule(minute_schedule(&w, CatchUp::All))
        .await
        .unwrap();
    assert_eq!(store.next_fire_at().await.unwrap(), Some(t0()));
    store.set_workflow_enabled(w.id, false, t0()).await.unwrap();
    assert_eq!(
        store.next_fire_at().await.unwrap(),
        None,
        "a disabled workflow schedules nothing"
    );
    let now = t0() + secs(150);
    assert!(store
        .claim_ticks(now, &lease("w1", now + secs(30)), 10)
        .await
        .unwrap()
        .is_empty());
    store.set_workflow_enabled(w.id, true, t0()).await.unwrap();
    let claimed = store
        .claim_ticks(now, &lease("w1", now + secs(30)), 10)
        .await
        .unwrap();
    let of = |id: Uuid| -> Vec<Timestamp> {
        let mut t: Vec<_> = claimed
            .iter()
            .filter(|c| c.schedule.id == id)
            .map(|c| c.tick.tick_time)
            .collect();
        t.sort();
        t
    };
    assert_eq!(of(skip.id), vec![t0() + secs(120)]);
    assert_eq!(of(all.id), vec![t0(), t0() + secs(60), t0() + secs(120)]);
    assert_eq!(claimed.len(), 4);
    assert_eq!(
        store.get_schedule(all.id).await.unwrap().next_fire_at,
        Some(t0() + secs(180))
    );
    assert_eq!(store.next_fire_at().await.unwrap(), Some(t0() + secs(180)));
}

/// Create, read, list, update and delete; tick history pages newest first.
pub async fn schedule_crud_and_tick_history(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let q = workflow(&store, "quotes", "1", "quote.created").await;
    let mut s = store
        .create_schedule(minute_schedule(&w, CatchUp::Skip))
        .await
        .unwrap();
    store
        .create_schedule(minute_schedule(&q, CatchUp::Skip))
        .await
        .unwrap();
    assert!(store
        .create_schedule(s.clone())
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(store.get_schedule(s.id).await.unwrap(), s);
    let mine = store
        .list_schedules(
            &ScheduleFilter {
                workflow_id: Some(w.id),
            },
            &PageRequest::first(10),
        )
        .await
        .unwrap();
    assert_eq!(mine.items, vec![s.clone()]);
    let first = store
        .list_schedules(&ScheduleFilter::default(), &PageRequest::first(1))
        .await
        .unwrap();
    let second = store
        .list_schedules(
            &ScheduleFilter::default(),
            &PageRequest::after(1, first.next_cursor.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(first.items.len() + second.items.len(), 2);
    assert_ne!(first.items[0].id, second.items[0].id);

    // Five ticks, one a minute.
    for minute in 0..5 {
        let now = t0() + secs(60 * minute);
        let claimed = store
            .claim_ticks(now, &lease("w1", now + secs(30)), 10)
            .await
            .unwrap();
        for c in claimed.iter().filter(|c| c.schedule.id == s.id) {
            store
                .start_tick(c.tick.id, "w1", new_execution(&w, "w1"), now)
                .await
                .unwrap();
        }
    }
    let page = store
        .list_ticks(s.id, &PageRequest::first(3))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    assert_eq!(
        page.items[0].tick.tick_time,
        t0() + secs(240),
        "newest first"
    );
    let rest = store
        .list_ticks(s.id, &PageRequest::after(3, page.next_cursor.unwrap()))
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert_eq!(rest.items[1].tick.tick_time, t0());
    assert!(rest.next_cursor.is_none());
    assert!(matches!(
        store
            .list_ticks(s.id, &PageRequest::after(3, "nonsense"))
            .await,
        Err(crate::Error::Invalid(_))
    ));

    s.cron = "@hourly".into();
    s.timezone = "Asia/Tokyo".into();
    s.enabled = false;
    s.catch_up = CatchUp::All;
    s.next_fire_at = Some(t0() + secs(3600));
    s.updated_at = t0() + secs(300);
    let updated = store.update_schedule(s.clone()).await.unwrap();
    assert_eq!(
        (
            updated.cron.as_str(),
            updated.timezone.as_str(),
            updated.enabled,
            updated.catch_up
        ),
        ("@hourly", "Asia/Tokyo", false, CatchUp::All)
    );
    assert_eq!(updated.next_fire_at, s.next_fire_at);
    assert_eq!(
        updated.last_fired_at,
        Some(t0() + secs(240)),
        "history is kept"
    );
    store.delete_schedule(s.id).await.unwrap();
    assert!(store
        .delete_schedule(s.id)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .list_ticks(s.id, &PageRequest::first(10))
        .await
        .unwrap()
        .items
        .is_empty());
    let mut ghost = s.clone();
    ghost.id = Uuid::now_v7();
    assert!(store
        .update_schedule(ghost)
        .await
        .unwrap_err()
        .is_not_found());
}

/// An event and the executions it starts are stored together; a repeated `event_id`
/// stores none of the new executions.
pub async fn events_start_their_executions_atomically(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (a, b) = (new_execution(&w, "api"), new_execution(&w, "api"));
    let mut first = event("order.created", Some("o-1"), t0());
    first.started = vec![a.id, b.id];
    let EventInsert::Inserted(stored) = store
        .insert_event_starting(first.clone(), vec![a.clone().into(), b.clone().into()])
        .await
        .unwrap()
    else {
        panic!("first insert")
    };
    assert_eq!(stored.started, vec![a.id, b.id]);
    assert_eq!(store.get_execution(a.id).await.unwrap().id, a.id);
    assert_eq!(store.get_execution(b.id).await.unwrap().id, b.id);
    assert_eq!(
        store.get_event(first.id).await.unwrap().started,
        vec![a.id, b.id]
    );

    let c = new_execution(&w, "api");
    let mut again = event("order.created", Some("o-1"), t0() + secs(1));
    again.started = vec![c.id];
    let EventInsert::Duplicate(dup) = store
        .insert_event_starting(again, vec![c.clone().into()])
        .await
        .unwrap()
    else {
        panic!("a repeated event_id is a duplicate")
    };
    assert_eq!(dup.id, first.id);
    assert!(
        store.get_execution(c.id).await.unwrap_err().is_not_found(),
        "nothing of a duplicate is stored"
    );

    // An execution id that exists refuses the whole event.
    let mut clash = event("order.created", Some("o-2"), t0());
    clash.started = vec![a.id];
    assert!(store
        .insert_event_starting(clash.clone(), vec![a.clone().into()])
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store.get_event(clash.id).await.unwrap_err().is_not_found());
}

/// An execution that already ran its first steps before it was stored (the engine runs
/// side-effect-free steps ahead of the event's transaction) is stored as it stands — at
/// its approval gate with its request, or ended — with its step records; a duplicate
/// event stores none of it.
pub async fn events_store_executions_already_at_their_gate(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let ahead = |e: Execution, transition: Transition| -> Starting {
        let mut e = e;
        let mut step = commit(&e, "api", e.version, transition);
        step.records = vec![
            step_record(e.id, "check", StepStatus::Completed),
            step_record(e.id, "gate", StepStatus::Paused),
        ];
        let writes = crate::rules::apply_commit(&mut e, step).unwrap();
        Starting {
            execution: e,
            records: writes.records,
            approval: writes.approval,
        }
    };
    let fresh = new_execution(&w, "api");
    let approval = approval_for(&fresh, 1, Some(t0() + secs(60)));
    let mut g = gate(PauseReason::Approval, Some(t0() + secs(60)));
    g.approval_id = Some(approval.id);
    let paused = ahead(
        fresh,
        Transition::Gate {
            gate: g,
            approval: Some(Box::new(approval.clone())),
        },
    );
    let ended = ahead(
        new_execution(&w, "api"),
        Transition::Finish {
            status: ExecutionStatus::Completed,
            error: None,
        },
    );
    let mut first = event("order.created", Some("o-ahead"), t0());
    first.started = vec![paused.execution.id, ended.execution.id];
    assert!(matches!(
        store
            .insert_event_starting(first, vec![paused.clone(), ended.clone()])
            .await
            .unwrap(),
        EventInsert::Inserted(_)
    ));
    for start in [&paused, &ended] {
        let id = start.execution.id;
        assert_eq!(store.get_execution(id).await.unwrap(), start.execution);
        let steps: Vec<_> = store
            .list_steps(id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.step_id, r.status))
            .collect();
        assert_eq!(
            steps,
            vec![
                ("check".to_owned(), StepStatus::Completed),
                ("gate".to_owned(), StepStatus::Paused)
            ]
        );
    }
    assert_eq!(
        store
            .get_execution(paused.execution.id)
            .await
            .unwrap()
            .status,
        ExecutionStatus::Paused
    );
    assert_eq!(store.get_approval(approval.id).await.unwrap(), approval);
    // It is due like any other paused execution.
    let due = store
        .claim_due_gates(t0() + secs(61), &lease("w2", t0() + secs(120)), 10)
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![paused.execution.id]
    );

    // A duplicate stores nothing of what it carries.
    let fresh = new_execution(&w, "api");
    let late = approval_for(&fresh, 1, None);
    let mut g = gate(PauseReason::Approval, None);
    g.approval_id = Some(late.id);
    let again_start = ahead(
        fresh,
        Transition::Gate {
            gate: g,
            approval: Some(Box::new(late.clone())),
        },
    );
    let mut again = event("order.created", Some("o-ahead"), t0() + secs(1));
    again.started = vec![again_start.execution.id];
    assert!(matches!(
        store
            .insert_event_starting(again, vec![again_start.clone()])
            .await
            .unwrap(),
        EventInsert::Duplicate(_)
    ));
    assert!(store
        .get_execution(again_start.execution.id)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .get_approval(late.id)
        .await
        .unwrap_err()
        .is_not_found());
    // Its steps: none (or, where the store says so, no such execution).
    assert!(store
        .list_steps(again_start.execution.id)
        .await
        .map_or(true, |steps| steps.is_empty()));
}

/// Twenty concurrent deliveries of one `event_id` (which a store may fold into one
/// batch): one is stored with its execution, every other answer is that first event, and
/// none of their executions exists.
pub async fn concurrent_repeats_of_an_event_store_it_once(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let execution = new_execution(&w, "api");
        tasks.push(tokio::spawn(async move {
            let mut e = event("order.created", Some("o-race"), t0() + secs(i));
            e.started = vec![execution.id];
            let answer = store
                .insert_event_starting(e.clone(), vec![execution.clone().into()])
                .await
                .unwrap();
            (e, execution, answer)
        }));
    }
    let mut firsts = HashSet::new();
    let mut stored = 0;
    for task in tasks {
        let (sent, execution, answer) = task.await.unwrap();
        match answer {
            EventInsert::Inserted(e) => {
                assert_eq!(e.id, sent.id);
                firsts.insert(e.id);
                assert_eq!(
                    store.get_execution(execution.id).await.unwrap().id,
                    execution.id
                );
                stored += 1;
            }
            EventInsert::Duplicate(first) => {
                firsts.insert(first.id);
                assert!(store
                    .get_execution(execution.id)
                    .await
                    .unwrap_err()
                    .is_not_found());
            }
        }
    }
    assert_eq!(stored, 1, "exactly one delivery is stored");
    assert_eq!(firsts.len(), 1, "every answer is the one stored event");
}

/// Console sessions: found until they expire or are deleted; creating one sweeps expired
/// ones; ids are unique.
pub async fn console_sessions_live_until_they_expire(store: Arc<dyn Store>) {
    let session = |id: &str, expires: Timestamp| tollgate_model::records::ConsoleSession {
        id_hash: id.to_owned(),
        key_hash: "key".into(),
        csrf: format!("csrf-{id}"),
        created_at: t0(),
        expires_at: expires,
    };
    store
        .create_session(session("a", t0() + secs(60)), t0())
        .await
        .unwrap();
    store
        .create_session(session("b", t0() + secs(3600)), t0())
        .await
        .unwrap();
    assert!(store
        .create_session(session("a", t0() + secs(60)), t0())
        .await
        .is_err());
    assert_eq!(
        store.get_session("a", t0()).await.unwrap(),
        Some(session("a", t0() + secs(60)))
    );
    assert_eq!(
        store.get_session("a", t0() + secs(60)).await.unwrap(),
        None,
        "expired at its time"
    );
    assert_eq!(store.get_session("nope", t0()).await.unwrap(), None);
    store.delete_session("b").await.unwrap();
    assert_eq!(store.get_session("b", t0()).await.unwrap(), None);
    store.delete_session("b").await.unwrap();
    // A later sign-in sweeps the expired `a`, so its id can be used again.
    store
        .create_session(session("c", t0() + secs(7200)), t0() + secs(120))
        .await
        .unwrap();
    store
        .create_session(session("a", t0() + secs(7200)), t0() + secs(120))
        .await
        .unwrap();
}
