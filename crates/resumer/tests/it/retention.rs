//! History retention in the worker loop, on the test clock (docs/operations.md,
//! "History retention").

use std::time::Duration;

use serde_json::json;
use tollgate_model::records::DecisionKind;
use tollgate_model::ExecutionStatus;
use tollgate_resumer::{ArchiveDir, RetentionOptions, Worker, WorkerOptions};

use crate::Harness;

const DAY: u64 = 24 * 3600;

#[tokio::test]
async fn ended_executions_are_deleted_in_batches_once_their_retention_passed() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "orders", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [{"id": "check", "type": "condition", "condition": {"field": "total", "operator": "gt", "value": 100}, "on_true": "approve", "on_false": "done"},
                  {"id": "approve", "type": "approval", "approval": {"approvers": {"role": "sales"}}, "on_approve": "done"},
                  {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    // Its own retention: a year, whatever the server's default says.
    h.deploy(json!({"workflow_id": "audits", "version": "1", "retention": "365d", "trigger": {"type": "event", "event": "audit.done"},
        "steps": [{"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let worker = Worker::new(
        h.engine.clone(),
        WorkerOptions {
            retention: RetentionOptions {
                default: Some(Duration::from_secs(30 * DAY)),
                batch: 2,
                interval: Duration::from_secs(60),
                archive: None,
                events: None,
            },
            ..WorkerOptions::default()
        },
    );
    let mut small = Vec::new();
    for _ in 0..3 {
        small.push(h.start("order.created", json!({"total": 5})).await);
    }
    let audit = h.start("audit.done", json!({})).await;
    let big = h.start("order.created", json!({"total": 500})).await;
    assert_eq!(big.status, ExecutionStatus::Paused);

    h.advance(29 * DAY);
    assert_eq!(worker.tick().await.unwrap().purged, 0, "not yet 30 days");
    h.advance(2 * DAY);
    assert_eq!(worker.tick().await.unwrap().purged, 2, "one batch");
    assert_eq!(
        worker.tick().await.unwrap().purged,
        1,
        "a full batch is followed by the next one at once"
    );
    for e in &small {
        assert!(h
            .store
            .get_execution(e.id)
            .await
            .unwrap_err()
            .is_not_found());
    }
    assert_eq!(
        h.store.get_execution(big.id).await.unwrap().status,
        ExecutionStatus::Paused,
        "a paused execution is never deleted, however old"
    );
    assert_eq!(
        h.store.get_execution(audit.id).await.unwrap().status,
        ExecutionStatus::Completed,
        "its workflow keeps it a year"
    );

    // The paused one ends now; it is deleted 30 days after its end, not its start.
    let done = h
        .decide(
            &big,
            "sam",
            &["sales"],
            tollgate_model::records::DecisionKind::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    h.advance(29 * DAY);
    assert_eq!(worker.tick().await.unwrap().purged, 0);
    h.advance(2 * DAY);
    assert_eq!(worker.tick().await.unwrap().purged, 1);
    assert!(h
        .store
        .get_execution(big.id)
        .await
        .unwrap_err()
        .is_not_found());

    h.advance(305 * DAY);
    assert_eq!(worker.tick().await.unwrap().purged, 1, "the year is over");
    assert!(h
        .store
        .get_execution(audit.id)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn without_a_retention_nothing_is_deleted() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "orders", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [{"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let e = h.start("order.created", json!({})).await;
    h.advance(3650 * DAY);
    assert_eq!(h.worker.tick().await.unwrap().purged, 0);
    assert_eq!(
        h.store.get_execution(e.id).await.unwrap().status,
        ExecutionStatus::Completed
    );
}

fn retention_with(h: &Harness, archive: &std::path::Path) -> Worker {
    Worker::new(
        h.engine.clone(),
        WorkerOptions {
            retention: RetentionOptions {
                default: Some(Duration::from_secs(DAY)),
                batch: 10,
                interval: Duration::from_secs(60),
                archive: Some(ArchiveDir::new(archive)),
                events: None,
            },
            ..WorkerOptions::default()
        },
    )
}

/// Every line of every archive file under `root`.
fn archived(root: &std::path::Path) -> Vec<serde_json::Value> {
    use std::io::BufRead;
    let mut lines = Vec::new();
    for day in std::fs::read_dir(root).unwrap() {
        let day = day.unwrap().path();
        for file in std::fs::read_dir(&day).unwrap() {
            let file = file.unwrap().path();
            assert!(
                file.to_string_lossy().ends_with(".jsonl.gz"),
                "{}",
                file.display()
            );
            let gz = flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap());
            for line in std::io::BufReader::new(gz).lines() {
                lines.push(serde_json::from_str(&line.unwrap()).unwrap());
            }
        }
    }
    lines
}

#[tokio::test]
async fn what_is_deleted_is_archived_first_by_the_day_it_ended() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "orders", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [{"id": "tell", "type": "execute", "execute": [{"type": "notify", "recipients": ["ops"], "message": "order {{n}}"}], "next": "done"},
                  {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(h.start("order.created", json!({"n": n})).await.id);
    }
    let dir = tempfile::tempdir().unwrap();
    let worker = retention_with(&h, dir.path());
    h.advance(2 * DAY);
    assert_eq!(worker.tick().await.unwrap().purged, 3);
    let lines = archived(dir.path());
    assert_eq!(lines.len(), 3);
    let day = crate::start_time().format("%Y-%m-%d").to_string();
    assert!(
        dir.path().join(&day).is_dir(),
        "filed under the day they ended"
    );
    for line in &lines {
        let id = line["execution"]["id"].as_str().unwrap();
        assert!(ids.iter().any(|i| i.to_string() == id));
        assert_eq!(line["steps"].as_array().unwrap().len(), 2);
        assert_eq!(line["notifications"].as_array().unwrap().len(), 1);
        assert!(line["resume_requests"].is_array() && line["approvals"].is_array());
    }
    for id in ids {
        assert!(h.store.get_execution(id).await.unwrap_err().is_not_found());
    }
}

/// An approval's comment thread is archived with its execution.
#[tokio::test]
async fn an_archived_execution_keeps_its_approvals_comments() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "orders", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [{"id": "gate", "type": "approval", "approval": {"approvers": {"role": "m"}}, "on_approve": "done", "on_reject": "done"},
                  {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let paused = h.start("order.created", json!({})).await;
    let approval_id = paused.gate.as_ref().and_then(|g| g.approval_id).unwrap();
    h.store
        .add_comment(&tollgate_model::records::ApprovalComment {
            id: uuid::Uuid::now_v7(),
            approval_id,
            author: "ann".into(),
            body: "is this customer new?".into(),
            created_at: crate::start_time(),
        })
        .await
        .unwrap();
    h.decide(&paused, "ann", &["m"], DecisionKind::Approve, None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let worker = retention_with(&h, dir.path());
    h.advance(2 * DAY);
    assert_eq!(worker.tick().await.unwrap().purged, 1);
    let lines = archived(dir.path());
    assert_eq!(lines[0]["comments"][0]["body"], "is this customer new?");
    assert_eq!(
        lines[0]["comments"][0]["approval_id"],
        approval_id.to_string()
    );
}

/// An archive that cannot be written deletes nothing: history is never lost to a full
/// disk or a wrong path.
#[tokio::test]
async fn nothing_is_deleted_when_the_archive_cannot_be_written() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "orders", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [{"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let e = h.start("order.created", json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    let worker = retention_with(&h, &not_a_dir);
    h.advance(2 * DAY);
    assert_eq!(worker.tick().await.unwrap().purged, 0);
    assert_eq!(
        h.store.get_execution(e.id).await.unwrap().status,
        ExecutionStatus::Completed
    );
}

/// An order that is approved, then waits for its payment — which may already be there —
/// looking back `window` for it when given.
fn paid_orders(workflow_id: &str, trigger: &str, window: Option<&str>) -> serde_json::Value {
    let mut wait = json!({"event": "payment.settled",
        "match": {"field": "event.order_id", "operator": "eq", "value": "{{order_id}}"}});
    if let Some(window) = window {
        wait["early_events"] = json!(window);
    }
    json!({"workflow_id": workflow_id, "version": "1", "trigger": {"type": "event", "event": trigger},
        "steps": [{"id": "approve", "type": "approval", "approval": {"approvers": {"role": "sales"}}, "on_approve": "pay"},
                  {"id": "pay", "type": "wait", "wait": wait, "next": "done"},
                  {"id": "done", "type": "action", "action": "allow"}]})
}

fn event_retention(h: &Harness, keep: Duration) -> Worker {
    Worker::new(
        h.engine.clone(),
        WorkerOptions {
            retention: RetentionOptions {
                events: Some(keep),
                ..RetentionOptions::default()
            },
            ..WorkerOptions::default()
        },
    )
}

/// Events nobody took go after `--event-retention`; events that started an execution
/// or that a wait took (also one it found as an early event) stay with their
/// executions; a wait step's `early_events` keeps its type longer.
#[tokio::test]
async fn untaken_events_are_deleted_once_their_retention_passed() {
    let h = Harness::new();
    h.deploy(paid_orders("orders", "order.created", None)).await;
    h.deploy(json!({"workflow_id": "shipping", "version": "1", "trigger": {"type": "event", "event": "ship.requested"},
        "steps": [{"id": "sent", "type": "wait", "wait": {"event": "shipment.sent", "early_events": "30d"}, "next": "done"},
                  {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let worker = event_retention(&h, Duration::from_secs(7 * DAY));

    let order = h
        .start("order.created", json!({"order_id": "o-1", "total": 500}))
        .await;
    assert_eq!(order.status, ExecutionStatus::Paused);
    let paid = h.send("payment.settled", json!({"order_id": "o-1"})).await;
    let stray = h
        .send("payment.settled", json!({"order_id": "nobody"}))
        .await;
    let shipped = h.send("shipment.sent", json!({})).await;
    h.advance(3600);
    let order = h
        .decide(&order, "sam", &["sales"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        order.status,
        ExecutionStatus::Completed,
        "took the early payment"
    );
    assert_eq!(
        h.store.get_event(paid.event.id).await.unwrap().resumed,
        vec![order.id],
        "an event a wait found early is listed as taken"
    );

    h.advance(6 * DAY);
    assert_eq!(
        worker.tick().await.unwrap().events_purged,
        0,
        "not yet 7 days"
    );
    h.advance(DAY);
    assert_eq!(worker.tick().await.unwrap().events_purged, 1);
    assert!(h
        .store
        .get_event(stray.event.id)
        .await
        .unwrap_err()
        .is_not_found());
    for kept in [&paid.event, &shipped.event] {
        h.store.get_event(kept.id).await.unwrap();
    }
    let trigger = h.store.get_execution(order.id).await.unwrap().context["trigger"]["event_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    h.store.get_event(trigger).await.unwrap();

    h.advance(23 * DAY);
    assert_eq!(
        worker.tick().await.unwrap().events_purged,
        1,
        "the type a wait keeps 30 days goes after 30 days"
    );
    assert!(h
        .store
        .get_event(shipped.event.id)
        .await
        .unwrap_err()
        .is_not_found());
    h.store.get_event(paid.event.id).await.unwrap();
}

/// `early_events` bounds how far back a wait looks for an event that came before it.
#[tokio::test]
async fn a_wait_takes_early_events_only_within_its_window() {
    let h = Harness::new();
    h.deploy(paid_orders("short", "short.created", Some("1h")))
        .await;
    h.deploy(paid_orders("long", "long.created", Some("3h")))
        .await;
    let short = h.start("short.created", json!({"order_id": "s-1"})).await;
    let long = h.start("long.created", json!({"order_id": "l-1"})).await;
    h.send("payment.settled", json!({"order_id": "s-1"})).await;
    h.send("payment.settled", json!({"order_id": "l-1"})).await;
    h.advance(2 * 3600);
    let short = h
        .decide(&short, "sam", &["sales"], DecisionKind::Approve, None)
        .await
        .unwrap();
    let long = h
        .decide(&long, "sam", &["sales"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        short.status,
        ExecutionStatus::Waiting,
        "the payment came 2h before the wait; it looks back 1h"
    );
    assert_eq!(long.status, ExecutionStatus::Completed, "it looks back 3h");
}

/// The worker keys stored events for the shapes of the definitions' waits; a wait
/// entered later finds its early event among more than a thousand of its type by that
/// key, and one that arrived after keying reached finds its event too.
#[tokio::test]
async fn an_early_event_is_found_by_its_key_among_thousands() {
    let h = Harness::new();
    h.deploy(paid_orders("orders", "order.created", None)).await;
    let first = h.start("order.created", json!({"order_id": "o-600"})).await;
    let second = h
        .start("order.created", json!({"order_id": "o-late"}))
        .await;
    for i in 0..1_200 {
        h.send("payment.settled", json!({"order_id": format!("o-{i}")}))
            .await;
    }
    h.advance(60);
    let report = h.worker.tick().await.unwrap();
    assert_eq!(report.events_keyed, 1_200, "every stored event of the type");
    let shapes = h.store.event_shapes(Some("payment.settled")).await.unwrap();
    assert_eq!(shapes.len(), 1);
    assert_eq!(shapes[0].fields, ["event.order_id"]);
    let keyed_through = shapes[0].keyed_through.expect("keyed");
    // Not keyed yet: it arrived after keying reached.
    let late = h
        .send("payment.settled", json!({"order_id": "o-late"}))
        .await;

    let first = h
        .decide(&first, "sam", &["sales"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(first.status, ExecutionStatus::Completed);
    let took = &first.context["events"]["pay"]["order_id"];
    assert_eq!(took, "o-600");
    let consumed = h
        .store
        .get_execution(first.id)
        .await
        .unwrap()
        .consumed_events[0];
    let gate_key = tollgate_engine::correlation::key_of_match(
        &json!({"field": "event.order_id", "operator": "eq", "value": "o-600"}),
    )
    .unwrap();
    let found = h
        .store
        .keyed_events_for_wait(
            "payment.settled",
            &gate_key.shape,
            &gate_key.hash,
            crate::start_time(),
            first.id,
            None,
            keyed_through,
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|e| e.id).collect::<Vec<_>>(),
        [consumed],
        "one probe finds exactly the event it took"
    );

    let second = h
        .decide(&second, "sam", &["sales"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(second.status, ExecutionStatus::Completed);
    assert_eq!(
        h.store
            .get_execution(second.id)
            .await
            .unwrap()
            .consumed_events,
        [late.event.id]
    );
}
