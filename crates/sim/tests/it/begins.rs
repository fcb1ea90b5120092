//! A side effect that follows a run ahead of storage (the side-effect-free steps after a
//! decision, or an event's first steps) is recorded `running` in that same write: the
//! step acts without a `begin_step` of its own, and still only while its worker holds
//! the execution.

use std::time::Duration;

use serde_json::json;
use tollgate_model::records::{DecisionKind, Principal, StepStatus};
use tollgate_model::{ExecutionResult, ExecutionStatus};
use tollgate_resumer::ApprovalService;
use tollgate_sim::fuse::Fuse;

const WAIT: Duration = Duration::from_secs(10);

async fn receiver() -> wiremock::MockServer {
    let remote = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_body_json(json!({"paid": true})))
        .mount(&remote)
        .await;
    remote
}

/// An approval, then a webhook (`pay`), then the end; `timeout` is the workflow's.
fn approve_then_pay(url: &str, timeout: Option<&str>) -> serde_json::Value {
    let mut doc = json!({"workflow_id": "refund", "version": "1",
        "trigger": {"type": "event", "event": "go"},
        "steps": [{"id": "gate", "type": "approval", "approval": {"approvers": {"role": "m"}},
                   "on_approve": "pay", "on_reject": "no"},
                  {"id": "pay", "type": "action", "action": "allow",
                   "execute": [{"type": "webhook", "url": url, "method": "POST"}]},
                  {"id": "no", "type": "action", "action": "block"}]});
    if let Some(timeout) = timeout {
        doc["timeout"] = json!(timeout);
    }
    doc
}

fn manager() -> Principal {
    Principal {
        subject: "ann".into(),
        roles: vec!["m".into()],
    }
}

/// A manager approves the request `paused` waits on; the execution is advanced in a
/// task of the test's runtime.
async fn approve(
    engine: &tollgate_engine::Engine,
    paused: &tollgate_model::records::Execution,
) -> tollgate_resumer::Decided {
    let approval_id = paused.gate.as_ref().and_then(|g| g.approval_id).unwrap();
    ApprovalService::new(engine.clone())
        .decide(
            approval_id,
            &manager(),
            DecisionKind::Approve,
            None,
            json!({}),
        )
        .await
        .unwrap()
}

/// The store calls the process made from the `from`-th on.
fn calls_since(fuse: &Fuse, from: usize) -> Vec<&'static str> {
    fuse.names().into_iter().skip(from).collect()
}

#[tokio::test]
async fn a_side_effect_after_a_decision_is_begun_by_the_decisions_write() {
    let remote = receiver().await;
    let fuse = Fuse::counting();
    let doc = approve_then_pay(&format!("{}/pay", remote.uri()), None);
    let crate::Started {
        durable,
        engine,
        execution: paused,
        ..
    } = crate::started(fuse.clone(), &doc, "go").await;
    assert_eq!(paused.status, ExecutionStatus::Paused);
    let from = fuse.calls();
    let decided = approve(&engine, &paused).await;
    // Stored with the decision: `pay` running, at its first attempt.
    let stored = durable.list_steps(paused.id).await.unwrap();
    let pay = stored.iter().find(|r| r.step_id == "pay").unwrap();
    assert_eq!((pay.status, pay.attempt), (StepStatus::Running, 1));
    let began_at = pay.started_at;

    let done = decided.progress.settled(&engine, WAIT).await.unwrap();
    assert_eq!(
        (done.status, done.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed))
    );
    let calls = calls_since(&fuse, from);
    assert!(
        !calls.contains(&"begin_step"),
        "the webhook's begin was written on its own: {calls:?}"
    );
    let sent = remote.received_requests().await.unwrap();
    assert_eq!(sent.len(), 1, "one call");
    // The record was completed in place: one record for `pay`, begun when the decision
    // stored it.
    let stored = durable.list_steps(paused.id).await.unwrap();
    let pays: Vec<_> = stored.iter().filter(|r| r.step_id == "pay").collect();
    assert_eq!(pays.len(), 1, "{pays:?}");
    assert_eq!(pays[0].status, StepStatus::Completed);
    assert_eq!(pays[0].started_at, began_at);
    assert!(pays[0].completed_at.is_some());
}

#[tokio::test]
async fn a_workflow_starting_with_a_side_effect_is_begun_with_its_event() {
    let remote = receiver().await;
    let fuse = Fuse::counting();
    let doc = json!({"workflow_id": "notify", "version": "1",
        "trigger": {"type": "event", "event": "go"},
        "steps": [{"id": "tell", "type": "action", "action": "allow",
                   "execute": [{"type": "webhook", "url": format!("{}/tell", remote.uri()), "method": "POST"}]}]});
    let crate::Started {
        durable,
        execution: done,
        ..
    } = crate::started(fuse.clone(), &doc, "go").await;
    assert_eq!(done.status, ExecutionStatus::Completed);
    let calls = fuse.names();
    assert!(
        !calls.contains(&"begin_step"),
        "the webhook's begin was written on its own: {calls:?}"
    );
    assert_eq!(remote.received_requests().await.unwrap().len(), 1);
    let stored = durable.list_steps(done.id).await.unwrap();
    let statuses: Vec<_> = stored
        .iter()
        .map(|r| (r.step_id.as_str(), r.status))
        .collect();
    assert_eq!(statuses, [("tell", StepStatus::Completed)]);
}

/// The workflow's deadline passes between the decision that stored `pay`'s begin and
/// the worker that would act on it: the execution times out without calling, and `pay`
/// is not left `running` for ever — it was skipped.
#[tokio::test]
async fn a_step_begun_with_a_decision_is_skipped_when_the_deadline_comes_first() {
    let remote = receiver().await;
    let fuse = Fuse::counting();
    let doc = approve_then_pay(&format!("{}/pay", remote.uri()), Some("1h"));
    let crate::Started {
        durable,
        engine,
        clock,
        execution: paused,
        ..
    } = crate::started(fuse.clone(), &doc, "go").await;
    let decided = approve(&engine, &paused).await;
    // This test's runtime has one thread: the task advancing the execution has not run
    // yet. The deadline passes before it does.
    let stored = durable.list_steps(paused.id).await.unwrap();
    assert!(stored
        .iter()
        .any(|r| r.step_id == "pay" && r.status == StepStatus::Running));
    clock.advance(Duration::from_secs(2 * 3600));
    let ended = decided.progress.settled(&engine, WAIT).await.unwrap();
    assert_eq!(ended.status, ExecutionStatus::TimedOut);
    assert!(remote.received_requests().await.unwrap().is_empty());
    let stored = durable.list_steps(paused.id).await.unwrap();
    let pay: Vec<_> = stored.iter().filter(|r| r.step_id == "pay").collect();
    assert_eq!(pay.len(), 1);
    assert_eq!(pay[0].status, StepStatus::Skipped, "{pay:?}");
    assert!(pay[0].completed_at.is_some());
}
