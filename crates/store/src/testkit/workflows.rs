//! [`WorkflowStore`](crate::WorkflowStore): definitions, versions and their snapshots.

use std::sync::Arc;

use tollgate_model::records::Workflow;
use uuid::Uuid;

use super::fixtures::{definition, running, secs, t0, workflow};
use crate::{PageRequest, Store, WorkflowFilter};

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
