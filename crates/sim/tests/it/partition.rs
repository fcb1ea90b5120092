//! The database stops answering the worker loop's calls — a connection black-holed by a
//! network partition or a failover — and answers again on new calls: the loop abandons
//! the pass it is stuck in and carries on, instead of waiting the quarter of an hour TCP
//! takes to give up.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tollgate_model::{ExecutionResult, ExecutionStatus};
use tollgate_resumer::{Worker, WorkerOptions};
use tollgate_sim::fuse::Fuse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_the_database_never_answers_is_abandoned() {
    let fuse = Fuse::counting();
    let doc = json!({
        "workflow_id": "big", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [{"id": "a", "type": "approval",
                   "approval": {"approvers": {"role": "m"}, "timeout": "1h", "on_timeout": "approve"},
                   "on_approve": "ok"},
                  {"id": "ok", "type": "action", "action": "allow"}]});
    let crate::Started {
        durable,
        engine,
        clock,
        execution: paused,
        ..
    } = crate::started(fuse.clone(), &doc, "order.created").await;
    assert_eq!(paused.status, ExecutionStatus::Paused);
    let execution = paused.id;

    // The network goes: the loop's first pass is swallowed.
    fuse.black_hole(true);
    let worker = Worker::new(
        engine.clone(),
        WorkerOptions {
            poll_interval: Duration::from_millis(20),
            pass_timeout: Duration::from_millis(300),
            ..WorkerOptions::default()
        },
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let swallowed = fuse.calls();
    // It comes back (new connections work; the swallowed call never answers), and the
    // approval's deadline passes: the loop must get to it.
    fuse.black_hole(false);
    clock.advance(Duration::from_secs(2 * 3600));
    let began = Instant::now();
    loop {
        let now = durable.get_execution(execution).await.unwrap();
        if now.status == ExecutionStatus::Completed {
            assert_eq!(now.result, Some(ExecutionResult::Allowed));
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the loop is still stuck in the pass the database never answered ({} calls since, {:?})",
            fuse.calls() - swallowed,
            now.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
}
