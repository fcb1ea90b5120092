//! History retention ([`ExecutionStore::purge_ended`](crate::ExecutionStore::purge_ended)).

use std::sync::Arc;

use chrono::TimeDelta;
use serde_json::json;
use tollgate_model::records::{
    Execution, Notification, ResumeOutcome, ResumeRequest, ResumeTrigger, StepStatus, Timestamp,
    Workflow,
};
use tollgate_model::ExecutionStatus;
use uuid::Uuid;

use super::fixtures::{commit, event, paused_at_approval, running, step_record, t0, workflow};
use crate::{NotificationFilter, PageRequest, Purge, Store, Transition};

fn days(n: i64) -> TimeDelta {
    TimeDelta::days(n)
}

/// An execution of `w` that ended (`status`) at `at`, with a step record, an audit row,
/// a notification, and the events `consumed`.
async fn ended(
    store: &Arc<dyn Store>,
    w: &Workflow,
    status: ExecutionStatus,
    at: Timestamp,
    consumed: Vec<Uuid>,
) -> Execution {
    let e = running(store, w, "w1").await;
    let mut c = commit(
        &e,
        "w1",
        e.version,
        Transition::Finish {
            status,
            error: None,
        },
    );
    c.now = at;
    c.records = vec![step_record(e.id, "gate", StepStatus::Completed)];
    c.consumed_events = consumed;
    if status != ExecutionStatus::Completed {
        c.transition = Transition::Finish {
            status,
            error: Some(tollgate_model::records::ExecutionError {
                kind: tollgate_model::ErrorKind::StepFailed,
                message: "boom".into(),
            }),
        };
    }
    store.commit_step(c).await.unwrap();
    store
        .record_resume_request(ResumeRequest {
            id: Uuid::now_v7(),
            execution_id: e.id,
            trigger: ResumeTrigger::Manual,
            actor: Some("ops".into()),
            data: json!({}),
            requested_at: at,
            executed_at: Some(at),
            outcome: ResumeOutcome::Resumed,
            error: None,
        })
        .await
        .unwrap();
    store
        .put_notification(Notification {
            id: Uuid::now_v7(),
            execution_id: e.id,
            step_id: "gate".into(),
            recipients: vec!["ops@example.com".into()],
            message: "done".into(),
            channel: "recorded".into(),
            status: "recorded".into(),
            next_attempt_at: None,
            ..Notification::queued(e.id, "gate", "notify", "recorded", at)
        })
        .await
        .unwrap();
    store.get_execution(e.id).await.unwrap()
}

async fn notifications_of(store: &Arc<dyn Store>, id: Uuid) -> usize {
    store
        .list_notifications(
            &NotificationFilter {
                execution_id: Some(id),
            },
            &PageRequest::first(10),
        )
        .await
        .unwrap()
        .items
        .len()
}

pub async fn purges_delete_ended_executions_whole_by_their_workflows_cutoff(store: Arc<dyn Store>) {
    let orders = workflow(&store, "orders", "1", "order.created").await;
    let refunds = workflow(&store, "refunds", "1", "refund.requested").await;
    let old_event = event("payment.settled", Some("pay-1"), t0() - days(1));
    let new_event = event("payment.settled", Some("pay-2"), t0() + days(5));
    store.insert_event(old_event.clone()).await.unwrap();
    store.insert_event(new_event.clone()).await.unwrap();

    let old = ended(
        &store,
        &orders,
        ExecutionStatus::Completed,
        t0(),
        vec![old_event.id, new_event.id],
    )
    .await;
    let recent = ended(
        &store,
        &orders,
        ExecutionStatus::Failed,
        t0() + days(2),
        vec![],
    )
    .await;
    let kept_longer = ended(&store, &refunds, ExecutionStatus::Completed, t0(), vec![]).await;
    let live = running(&store, &orders, "w1").await;
    let (gated, approval) = paused_at_approval(&store, &orders, 1, None).await;

    // Nothing to do without a policy.
    assert!(store
        .purge_ended(&Purge::default(), 100)
        .await
        .unwrap()
        .is_empty());

    // orders keep 1 day (the default), refunds a day less than their age.
    let purge = Purge {
        default_before: Some(t0() + days(1)),
        per_workflow: vec![("refunds".into(), t0() - days(1))],
        only: None,
    };
    // What a purge would take, read first (to archive it), deletes nothing.
    let listed = store.purgeable(&purge, 100).await.unwrap();
    assert_eq!(
        listed.iter().map(|p| p.execution_id).collect::<Vec<_>>(),
        [old.id]
    );
    assert!(store.get_execution(old.id).await.is_ok());
    // Restricted to other executions, it takes nothing.
    let elsewhere = Purge {
        only: Some(vec![recent.id, live.id]),
        ..purge.clone()
    };
    assert!(store.purge_ended(&elsewhere, 100).await.unwrap().is_empty());
    assert!(store.get_execution(old.id).await.is_ok());
    let purged = store.purge_ended(&purge, 100).await.unwrap();
    assert_eq!(
        purged
            .iter()
            .map(|p| (p.execution_id, p.workflow_key.as_str(), p.ended_at))
            .collect::<Vec<_>>(),
        [(old.id, "orders", t0())]
    );
    assert!(store
        .get_execution(old.id)
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .list_steps(old.id)
        .await
        .map_or_else(|e| e.is_not_found(), |steps| steps.is_empty()));
    assert!(store
        .list_resume_requests(old.id)
        .await
        .map_or_else(|e| e.is_not_found(), |rows| rows.is_empty()));
    assert_eq!(notifications_of(&store, old.id).await, 0);
    assert!(
        store
            .get_event(old_event.id)
            .await
            .unwrap_err()
            .is_not_found(),
        "an event it consumed, older than the cutoff, goes with it"
    );
    assert_eq!(
        store.get_event(new_event.id).await.unwrap().id,
        new_event.id,
        "an event younger than the cutoff stays"
    );
    for e in [&recent, &kept_longer] {
        assert_eq!(&store.get_execution(e.id).await.unwrap(), e);
        assert_eq!(store.list_steps(e.id).await.unwrap().len(), 1);
        assert_eq!(store.list_resume_requests(e.id).await.unwrap().len(), 1);
        assert_eq!(notifications_of(&store, e.id).await, 1);
    }

    // Oldest end first, `limit` at a time; unfinished executions are never touched.
    let everything = Purge {
        default_before: Some(t0() + days(30)),
        per_workflow: Vec::new(),
        only: None,
    };
    let first = store.purge_ended(&everything, 1).await.unwrap();
    assert_eq!(
        first.iter().map(|p| p.execution_id).collect::<Vec<_>>(),
        [kept_longer.id]
    );
    let second = store.purge_ended(&everything, 10).await.unwrap();
    assert_eq!(
        second.iter().map(|p| p.execution_id).collect::<Vec<_>>(),
        [recent.id]
    );
    assert!(store.purge_ended(&everything, 10).await.unwrap().is_empty());
    assert_eq!(
        store.get_execution(live.id).await.unwrap().status,
        ExecutionStatus::Running
    );
    assert_eq!(
        store.get_execution(gated.id).await.unwrap().status,
        ExecutionStatus::Paused
    );
    assert_eq!(
        store.get_approval(approval.id).await.unwrap().id,
        approval.id
    );
}
