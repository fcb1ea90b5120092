//! Rows a release cannot read: quarantine, rows of a newer release, unreadable workflows.
//!
//! The first rule runs on every backend. The others damage rows with SQL, so they take
//! the backend's way of running a statement (`sql`) and run on the SQL backends only;
//! the statements are written to mean the same on SQLite and PostgreSQL.

use std::future::Future;
use std::sync::Arc;

use serde_json::json;
use tollgate_model::records::{ApprovalStatus, Execution};
use tollgate_model::ErrorKind;
use tollgate_model::ExecutionStatus;
use uuid::Uuid;

use super::fixtures::{lease, new_execution, paused_at_approval, running, t0, waiting, workflow};
use crate::{Error, PageRequest, Store, STORED_FORMAT};

fn first_page() -> PageRequest {
    PageRequest {
        limit: 50,
        cursor: None,
    }
}

fn assert_quarantined(e: &Execution, detail: &str) {
    assert_eq!(e.status, ExecutionStatus::Failed, "{e:?}");
    let error = e
        .error
        .as_ref()
        .expect("a quarantined execution has an error");
    assert_eq!(error.kind, ErrorKind::Interrupted);
    assert!(error.message.contains("quarantined"), "{}", error.message);
    assert!(error.message.contains(detail), "{}", error.message);
    assert!(e.lease.is_none() && e.gate.is_none() && e.wake.is_none());
    assert!(e.completed_at.is_some());
}

pub async fn quarantine_keeps_the_row_and_ends_the_execution(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 1, None).await;
    let now = t0() + chrono::TimeDelta::seconds(5);

    let ended = store
        .quarantine_execution(e.id, "cursor: bad shape", now)
        .await
        .unwrap();
    assert_quarantined(&ended, "cursor: bad shape");
    assert!(ended.version > e.version);
    assert_eq!(store.get_execution(e.id).await.unwrap(), ended);
    assert_eq!(
        store.get_approval(approval.id).await.unwrap().status,
        ApprovalStatus::Cancelled
    );

    let listed = store.list_quarantined(&first_page()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let q = &listed.items[0];
    assert_eq!(q.execution_id, e.id);
    assert_eq!(q.detail, "cursor: bad shape");
    assert_eq!(q.quarantined_at, now);
    assert_eq!(q.original["id"], json!(e.id.to_string()), "{}", q.original);
    assert_eq!(q.original["status"], json!("paused"), "{}", q.original);

    // A second quarantine keeps the first record (the row it kept is the original).
    store
        .quarantine_execution(e.id, "again", now)
        .await
        .unwrap();
    let listed = store.list_quarantined(&first_page()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].detail, "cursor: bad shape");

    assert!(store
        .quarantine_execution(Uuid::now_v7(), "x", now)
        .await
        .unwrap_err()
        .is_not_found());
}

/// Damages one column of an execution so that it no longer decodes: a cursor of the
/// wrong shape (valid JSON on both backends).
fn damage(id: Uuid) -> String {
    format!("UPDATE executions SET cursor = '{{\"not_a_cursor\": true}}' WHERE id = '{id}'")
}

/// One damaged row among good ones in each worker query: the damaged one is quarantined
/// and the query hands out the others, so timers, lease recovery and event delivery go
/// on. (Before, the first undecodable row failed the whole query on every pass, and in
/// a claim left the rest leased and unadvanced.)
pub async fn unreadable_executions_are_quarantined_and_the_pass_goes_on<F, Fut>(
    store: Arc<dyn Store>,
    sql: F,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let s = chrono::TimeDelta::seconds;
    let w = workflow(&store, "orders", "1", "order.created").await;
    // Workflow deadline passed, lease expired (ended by `time_out_overdue`).
    let mut overdue = Vec::new();
    for _ in 0..2 {
        let mut e = new_execution(&w, "gone");
        e.deadline = Some(t0() + s(1));
        overdue.push(store.create_execution(e).await.unwrap().id);
    }
    // Lease expired (`claim_expired_leases`).
    let expired = [
        running(&store, &w, "gone").await.id,
        running(&store, &w, "gone").await.id,
    ];
    // Gate deadline passed (`claim_due_gates`).
    let due = [
        waiting(&store, &w, Some(t0() + s(2))).await.id,
        paused_at_approval(&store, &w, 1, Some(t0() + s(2)))
            .await
            .0
            .id,
    ];
    // Waiting for an event with no deadline (`waiting_for_keys`, `waiting_for_event`).
    let waits = [
        waiting(&store, &w, None).await.id,
        waiting(&store, &w, None).await.id,
    ];
    let damaged = [overdue[0], expired[0], due[0], waits[0]];
    for id in damaged {
        sql(damage(id)).await;
    }
    assert!(matches!(
        store.get_execution(damaged[0]).await,
        Err(Error::Unreadable(_))
    ));

    let now = t0() + s(60);
    let ended = store.time_out_overdue(now, 10).await.unwrap();
    assert_eq!(ids(&ended), [overdue[1]]);
    let claim = lease("w2", now + s(30));
    let leases = store.claim_expired_leases(now, &claim, 10).await.unwrap();
    let claimed_leases = ids(&leases);
    assert!(claimed_leases.contains(&expired[1]), "{claimed_leases:?}");
    assert!(!claimed_leases.contains(&expired[0]));
    let gates = store.claim_due_gates(now, &claim, 10).await.unwrap();
    assert_eq!(ids(&gates), [due[1]]);
    // The probe by correlation key meets the damaged wait (it has no key) first.
    let by_key = store
        .waiting_for_keys("payment.received", &[], None, 10, now)
        .await
        .unwrap();
    assert_eq!(ids(&by_key), [waits[1]]);
    assert_quarantined(&store.get_execution(waits[0]).await.unwrap(), "cursor");
    let waiting_now = store
        .waiting_for_event("payment.received", None, 10, now)
        .await
        .unwrap();
    assert_eq!(ids(&waiting_now), [waits[1]]);

    for id in damaged {
        let e = store.get_execution(id).await.unwrap();
        assert_quarantined(&e, "cursor");
    }
    let listed = store.list_quarantined(&first_page()).await.unwrap();
    let mut listed_ids: Vec<Uuid> = listed.items.iter().map(|q| q.execution_id).collect();
    listed_ids.sort();
    let mut expected = damaged.to_vec();
    expected.sort();
    assert_eq!(listed_ids, expected);
    // What was stored is kept as it was, the damage included.
    let kept = listed
        .items
        .iter()
        .find(|q| q.execution_id == waits[0])
        .unwrap();
    assert!(
        kept.original["cursor"].to_string().contains("not_a_cursor"),
        "{}",
        kept.original
    );
    assert!(
        kept.original["status"] == json!("waiting"),
        "{}",
        kept.original
    );
    // The quarantined rows are ended: the next pass has nothing left to do with them.
    assert!(store.time_out_overdue(now, 10).await.unwrap().is_empty());
    assert!(store
        .claim_due_gates(now, &claim, 10)
        .await
        .unwrap()
        .is_empty());
}

/// Rows written by a newer release (a higher stored format) are left alone: not claimed,
/// not changed, not quarantined — even when they fail to decode here — while a read that
/// can decode them still shows them.
pub async fn rows_of_a_newer_release_are_left_alone<F, Fut>(store: Arc<dyn Store>, sql: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let s = chrono::TimeDelta::seconds;
    let newer = STORED_FORMAT + 1;
    let w = workflow(&store, "orders", "1", "order.created").await;
    let expired = running(&store, &w, "gone").await;
    let due = waiting(&store, &w, Some(t0() + s(2))).await;
    let waits = waiting(&store, &w, None).await;
    for e in [&expired, &due, &waits] {
        sql(format!(
            "INSERT INTO execution_formats (execution_id, format) VALUES ('{}', {newer})",
            e.id
        ))
        .await;
    }
    // One of them also in a layout this release cannot decode.
    sql(damage(waits.id)).await;

    let now = t0() + s(60);
    let claim = lease("old", now + s(30));
    assert!(store
        .claim_expired_leases(now, &claim, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claim_due_gates(now, &claim, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .waiting_for_event("payment.received", None, 10, now)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .list_quarantined(&first_page())
        .await
        .unwrap()
        .items
        .is_empty());

    // Readable: shown as stored. Changing it is refused, and changes nothing.
    assert_eq!(store.get_execution(due.id).await.unwrap(), due);
    let refused = store
        .cancel_execution(due.id, Some("ops"), None, now)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::NewerFormat { format, .. } if format == newer),
        "{refused:?}"
    );
    assert!(refused.is_conflict());
    assert_eq!(store.get_execution(due.id).await.unwrap(), due);
    assert!(matches!(
        store.quarantine_execution(due.id, "x", now).await,
        Err(Error::NewerFormat { .. })
    ));
    // Unreadable here: said to be a newer release's, not damaged.
    assert!(matches!(
        store.get_execution(waits.id).await,
        Err(Error::NewerFormat { .. })
    ));
}

/// A workflow whose stored definition cannot be read, or whose snapshot a newer release
/// wrote, is left out of the event lookup; the others still start. (Before, one such
/// workflow failed the lookup, so every event of every workflow failed.)
pub async fn unreadable_workflows_do_not_stop_other_workflows<F, Fut>(store: Arc<dyn Store>, sql: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let good = workflow(&store, "orders", "1", "order.created").await;
    let broken = workflow(&store, "refunds", "1", "order.created").await;
    let newer = workflow(&store, "audits", "1", "order.created").await;
    let mut names: Vec<String> = store
        .workflows_for_event("order.created")
        .await
        .unwrap()
        .iter()
        .map(|w| w.workflow_id().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["audits", "orders", "refunds"]);

    sql(format!(
        "UPDATE workflows SET definition = '{{\"workflow_id\": 5}}' WHERE id = '{}'",
        broken.id
    ))
    .await;
    sql(format!(
        "UPDATE snapshots SET format = {} WHERE id = '{}'",
        STORED_FORMAT + 1,
        newer.snapshot_id
    ))
    .await;

    let started = store.workflows_for_event("order.created").await.unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0].id, good.id);
    assert!(matches!(
        store.get_snapshot(&newer.snapshot_id).await,
        Err(Error::NewerFormat { .. })
    ));
    assert!(store.get_snapshot(&good.snapshot_id).await.is_ok());
}

fn ids(executions: &[Execution]) -> Vec<Uuid> {
    executions.iter().map(|e| e.id).collect()
}
