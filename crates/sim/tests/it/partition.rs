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

/// A pass abandoned after it started an execution still leaves that execution to the
/// loop: a stop waits for it, as for any execution in flight. (Before, the abandoned
/// pass took the task's handle with it, and the loop returned with the execution still
/// in its webhook.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_started_by_an_abandoned_pass_are_waited_for() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(1500)))
        .mount(&slow)
        .await;
    let fuse = Fuse::counting();
    let doc = json!({
        "workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
        "steps": [{"id": "w", "type": "wait", "wait": {"event": "never", "timeout": "1m", "on_timeout": "call"}},
                  {"id": "call", "type": "action", "action": "allow",
                   "execute": [{"type": "webhook", "url": format!("{}/slow", slow.uri())}]}]});
    let crate::Started {
        durable,
        engine,
        clock,
        execution: waiting,
        ..
    } = crate::started(fuse.clone(), &doc, "go").await;
    assert_eq!(waiting.status, ExecutionStatus::Waiting);
    // The pass claims the due wait and starts it, then its next claim never answers.
    fuse.black_hole_call("claim_expired_leases");
    clock.advance(Duration::from_secs(120));
    let worker = Worker::new(
        engine.clone(),
        WorkerOptions {
            poll_interval: Duration::from_millis(20),
            pass_timeout: Duration::from_millis(200),
            ..WorkerOptions::default()
        },
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    let began = Instant::now();
    while slow.received_requests().await.unwrap().is_empty() {
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the webhook was never called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the pass bound: that pass has been abandoned.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        durable.get_execution(waiting.id).await.unwrap().status,
        ExecutionStatus::Completed,
        "the loop returned with the execution it started still running"
    );
}
