//! History retention in the worker loop, on the test clock (docs/operations.md,
//! "History retention").

use std::time::Duration;

use serde_json::json;
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
