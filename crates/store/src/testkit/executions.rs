//! [`ExecutionStore`](crate::ExecutionStore): creation, compare-and-set step commits and
//! their effects, lists and counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};
use tollgate_model::records::{Cursor, Execution, Notification, StepStatus};
use tollgate_model::{ExecutionResult, ExecutionStatus, PauseReason};
use uuid::Uuid;

use super::fixtures::{
    commit, paused_at_approval, running, secs, step_record, t0, waiting, workflow,
};
use crate::{
    ApprovalFilter, Effect, ExecutionFilter, NotificationFilter, PageRequest, Store, Transition,
    WorkflowFilter,
};

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

/// Step begins side by side — as a batching backend writes them together — each keep
/// their own compare-and-set: every matching begin bumps its own execution once and
/// writes its record, and a stale or foreign one for the same execution, racing the
/// right one, writes nothing.
pub async fn concurrent_step_begins_keep_each_their_compare_and_set(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let mut executions = Vec::new();
    for _ in 0..4 {
        executions.push(running(&store, &w, "w1").await);
    }
    let first = executions[0].clone();
    let mut begins = Vec::new();
    for e in &executions {
        begins.push((
            e.id,
            "w1",
            e.version,
            step_record(e.id, "charge", StepStatus::Running),
        ));
    }
    let stale = step_record(first.id, "stale", StepStatus::Running);
    begins.push((first.id, "w1", first.version + 10, stale));
    begins.push((
        first.id,
        "w2",
        first.version,
        step_record(first.id, "foreign", StepStatus::Running),
    ));
    let outcomes =
        futures_util::future::join_all(begins.iter().map(|(id, owner, version, record)| {
            let store = store.clone();
            let record = record.clone();
            async move { store.begin_step(*id, owner, *version, record, t0()).await }
        }))
        .await;
    for (e, outcome) in executions.iter().zip(&outcomes) {
        assert_eq!(outcome.as_ref().ok(), Some(&(e.version + 1)), "{outcome:?}");
        let steps = store.list_steps(e.id).await.unwrap();
        assert_eq!(steps.len(), 1);
        assert_eq!(steps[0].step_id, "charge");
        assert_eq!(
            store.get_execution(e.id).await.unwrap().version,
            e.version + 1
        );
    }
    for outcome in &outcomes[4..] {
        assert!(
            outcome.as_ref().is_err_and(crate::Error::is_conflict),
            "{outcome:?}"
        );
    }
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
        next_attempt_at: None,
        ..Notification::queued(e.id, "notify", "notify", "recorded", t0())
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
