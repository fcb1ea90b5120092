//! Every gate rule of docs/execution-semantics.md: approvals, waits, manual control, deadlines, pinning.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_model::records::{
    ApprovalStatus, DecisionKind, Principal, ResumeOutcome, ResumeTrigger, StepStatus,
};
use tollgate_model::{ErrorKind, ExecutionResult, ExecutionStatus, PauseReason};
use tollgate_resumer::Error;

use crate::Harness;

fn approval_flow(approval: Value) -> Value {
    json!({
        "workflow_id": "approve", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "gate", "type": "approval", "approval": approval, "on_approve": "ship", "on_reject": "refuse"},
            {"id": "ship", "type": "action", "action": "allow"},
            {"id": "refuse", "type": "action", "action": "block"},
            {"id": "escalate", "type": "action", "action": {"type": "block", "reason": "escalated"}}
        ]
    })
}

fn who(subject: &str, roles: &[&str]) -> Principal {
    Principal {
        subject: subject.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn quorum_counts_distinct_approvers() {
    let h = Harness::new();
    h.deploy(approval_flow(
        json!({"approvers": {"role": "manager"}, "required": 2}),
    ))
    .await;
    let paused = h.start("order.created", json!({"order": {"id": 1}})).await;
    let first = h
        .decide(&paused, "ann", &["manager"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(first.status, ExecutionStatus::Paused, "1 of 2");
    let again = h
        .decide(&paused, "ann", &["manager"], DecisionKind::Approve, None)
        .await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    let done = h
        .decide(&paused, "bob", &["manager"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed))
    );
    // Every voter is in the context, not only the one who completed the quorum.
    let voters: Vec<&str> = done.context["approvals"]["gate"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decided_by"].as_str().unwrap())
        .collect();
    assert_eq!(voters, ["ann", "bob"]);
    assert_eq!(done.context["approvals"]["gate"]["decided_by"], "bob");
    // A decision on a decided request is a 409, never a second resume.
    let late = h
        .decide(
            &paused,
            "cat",
            &["manager"],
            DecisionKind::Reject,
            Some("late"),
        )
        .await;
    assert!(matches!(late, Err(Error::Conflict(_))));
    let after = h.store.get_execution(paused.id).await.unwrap();
    assert_eq!(after.resume_count, 1);
    let audit = h.store.list_resume_requests(paused.id).await.unwrap();
    let outcomes: Vec<ResumeOutcome> = audit.iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            ResumeOutcome::Refused,
            ResumeOutcome::Resumed,
            ResumeOutcome::Refused
        ],
        "refused attempts are audited"
    );
}

#[tokio::test]
async fn fifty_concurrent_decisions_resume_exactly_once() {
    let h = Arc::new(Harness::new());
    h.deploy(approval_flow(json!({"approvers": {"role": "manager"}})))
        .await;
    let paused = h.start("order.created", json!({})).await;
    let approval_id = paused.gate.as_ref().and_then(|g| g.approval_id).unwrap();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            let kind = if i % 3 == 0 {
                DecisionKind::Reject
            } else {
                DecisionKind::Approve
            };
            h.approvals
                .decide(
                    approval_id,
                    &who(&format!("m{i}"), &["manager"]),
                    kind,
                    Some("r".into()),
                    json!({}),
                )
                .await
        }));
    }
    let mut wins = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(decided) => wins.push(decided),
            Err(Error::Conflict(_)) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(wins.len(), 1);
    let done = wins
        .remove(0)
        .progress
        .settled(&h.engine, WAIT)
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.resume_count, 1);
    let resumed = h
        .store
        .list_resume_requests(paused.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.outcome == ResumeOutcome::Resumed)
        .count();
    assert_eq!(resumed, 1);
    let steps = h.steps(&done).await;
    assert_eq!(
        steps
            .iter()
            .filter(|(s, _)| s == "ship" || s == "refuse")
            .count(),
        1,
        "one branch ran, once"
    );
}

#[tokio::test]
async fn deciders_need_the_role_and_may_not_approve_their_own_request() {
    let h = Harness::new();
    h.deploy(approval_flow(
        json!({"approvers": {"roles": ["manager", "director"]}}),
    ))
    .await;
    let paused = h.start("order.created", json!({})).await;
    let outsider = h
        .decide(
            &paused,
            "zed",
            &["fraud_analyst"],
            DecisionKind::Approve,
            None,
        )
        .await;
    assert!(matches!(outsider, Err(Error::Forbidden(_))), "{outsider:?}");
    let requester = h
        .decide(&paused, "shop", &["admin"], DecisionKind::Approve, None)
        .await;
    assert!(
        matches!(requester, Err(Error::Forbidden(ref m)) if m.contains("requested")),
        "{requester:?}"
    );
    let no_reason = h
        .decide(&paused, "dee", &["director"], DecisionKind::Reject, None)
        .await;
    assert!(matches!(no_reason, Err(Error::Invalid(_))));
    let done = h
        .decide(&paused, "root", &["admin"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);

    let h = Harness::new();
    h.deploy(approval_flow(json!({"approvers": {"users": ["shop", "ann"]}, "required": "all", "allow_self_approval": true}))).await;
    let paused = h.start("order.created", json!({})).await;
    assert_eq!(
        h.store
            .get_approval(paused.gate.as_ref().unwrap().approval_id.unwrap())
            .await
            .unwrap()
            .required,
        2
    );
    assert_eq!(
        h.decide(&paused, "shop", &[], DecisionKind::Approve, None)
            .await
            .unwrap()
            .status,
        ExecutionStatus::Paused
    );
    assert!(matches!(
        h.decide(&paused, "bob", &["manager"], DecisionKind::Approve, None)
            .await,
        Err(Error::Forbidden(_))
    ));
    assert_eq!(
        h.decide(&paused, "ann", &[], DecisionKind::Approve, None)
            .await
            .unwrap()
            .status,
        ExecutionStatus::Completed
    );
}

async fn expire(on_timeout: &str) -> (Harness, tollgate_model::records::Execution) {
    let h = Harness::new();
    h.deploy(approval_flow(
        json!({"approvers": {"role": "manager"}, "timeout": "1h", "on_timeout": on_timeout}),
    ))
    .await;
    let paused = h.start("order.created", json!({})).await;
    h.advance(3599);
    assert_eq!(h.worker.tick().await.unwrap().gates, 0, "not yet due");
    h.advance(1);
    assert_eq!(h.worker.tick().await.unwrap().gates, 1);
    let ended = h.store.get_execution(paused.id).await.unwrap();
    let approval = h
        .store
        .get_approval(paused.gate.as_ref().unwrap().approval_id.unwrap())
        .await
        .unwrap();
    assert_eq!(
        approval.status,
        ApprovalStatus::Expired,
        "expired whatever on_timeout does next"
    );
    let audit = h.store.list_resume_requests(paused.id).await.unwrap();
    assert_eq!(audit.last().map(|r| r.trigger), Some(ResumeTrigger::Timer));
    (h, ended)
}

#[tokio::test]
async fn approval_deadlines_follow_on_timeout() {
    let (_, rejected) = expire("reject").await;
    assert_eq!(
        (rejected.status, rejected.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Blocked))
    );
    assert_eq!(rejected.context["approval"]["status"], "expired");
    let (_, approved) = expire("approve").await;
    assert_eq!(
        (approved.status, approved.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed))
    );
    let (_, failed) = expire("fail").await;
    assert_eq!(failed.status, ExecutionStatus::TimedOut);
    assert_eq!(failed.error.map(|e| e.kind), Some(ErrorKind::TimedOut));
    let (h, escalated) = expire("escalate").await;
    assert_eq!(escalated.result, Some(ExecutionResult::Blocked));
    assert_eq!(
        h.steps(&escalated).await.last().map(|(s, _)| s.clone()),
        Some("escalate".into())
    );
    // An expired request refuses decisions.
    let expired = h
        .store
        .list_approvals(
            &tollgate_store::ApprovalFilter {
                execution_id: Some(escalated.id),
                ..Default::default()
            },
            &tollgate_store::PageRequest::first(5),
        )
        .await
        .unwrap();
    let late = h
        .approvals
        .decide(
            expired.items[0].id,
            &who("ann", &["manager"]),
            DecisionKind::Approve,
            None,
            json!({}),
        )
        .await;
    assert!(
        matches!(late, Err(Error::Conflict(ref m)) if m.contains("expired")),
        "{late:?}"
    );
}

fn wait_flow() -> Value {
    json!({
        "workflow_id": "payments", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "hold", "type": "approval", "approval": {"approvers": {"role": "ops"}}, "on_approve": "await_payment"},
            {"id": "await_payment", "type": "wait",
             "wait": {"event": "payment.received", "timeout": "2h", "on_timeout": "chase",
                      "match": {"field": "event.order_id", "operator": "eq", "value": "{{order.id}}"}},
             "next": "ship"},
            {"id": "ship", "type": "action", "action": "allow"},
            {"id": "chase", "type": "action", "action": {"type": "block", "reason": "unpaid"}}
        ]
    })
}

async fn to_wait(h: &Harness, order: &str) -> tollgate_model::records::Execution {
    let paused = h
        .start("order.created", json!({"order": {"id": order}}))
        .await;
    h.decide(&paused, "ops1", &["ops"], DecisionKind::Approve, None)
        .await
        .unwrap()
}

#[tokio::test]
async fn waits_match_resolved_at_entry_and_ignore_other_events() {
    let h = Harness::new();
    h.deploy(wait_flow()).await;
    let waiting = to_wait(&h, "A-1").await;
    assert_eq!(waiting.status, ExecutionStatus::Waiting);
    let gate = waiting.gate.clone().unwrap();
    assert_eq!(gate.reason, PauseReason::Event);
    assert_eq!(
        gate.event_match.as_ref().unwrap()["value"],
        "A-1",
        "template resolved and stored at entry"
    );

    let other = h.send("payment.received", json!({"order_id": "B-2"})).await;
    assert!(other.resumed.is_empty(), "a non-matching event is ignored");
    assert_eq!(
        h.store.get_execution(waiting.id).await.unwrap().status,
        ExecutionStatus::Waiting
    );

    let mut paid = h
        .send("payment.received", json!({"order_id": "A-1", "amount": 10}))
        .await;
    assert_eq!(paid.resumed.len(), 1);
    let done = paid
        .resumed
        .remove(0)
        .settled(&h.engine, WAIT)
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed))
    );
    assert_eq!(done.context["events"]["await_payment"]["amount"], 10);
    assert_eq!(
        done.context["event"]["order_id"], "A-1",
        "the event replaces `event`"
    );
    assert_eq!(
        h.store.get_event(paid.event.id).await.unwrap().resumed,
        [done.id]
    );
}

#[tokio::test]
async fn an_early_event_is_not_lost() {
    let h = Harness::new();
    h.deploy(wait_flow()).await;
    let paused = h
        .start("order.created", json!({"order": {"id": "E-1"}}))
        .await;
    h.advance(5);
    // The payment arrives while the execution still waits for its approval.
    let early = h.send("payment.received", json!({"order_id": "E-1"})).await;
    assert!(early.resumed.is_empty());
    h.advance(5);
    let done = h
        .decide(&paused, "ops1", &["ops"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed)),
        "the wait found the stored event"
    );
    assert_eq!(done.consumed_events, [early.event.id]);
    // An event from before the execution started does not count.
    let h2 = Harness::new();
    h2.deploy(wait_flow()).await;
    h2.send("payment.received", json!({"order_id": "E-2"}))
        .await;
    h2.advance(1);
    let waiting = to_wait(&h2, "E-2").await;
    assert_eq!(waiting.status, ExecutionStatus::Waiting);
}

#[tokio::test]
async fn wait_deadlines_route_or_time_out() {
    let h = Harness::new();
    h.deploy(wait_flow()).await;
    let waiting = to_wait(&h, "T-1").await;
    h.advance(2 * 3600);
    assert_eq!(h.worker.tick().await.unwrap().gates, 1);
    let chased = h.store.get_execution(waiting.id).await.unwrap();
    assert_eq!(
        (chased.status, chased.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Blocked))
    );

    let h = Harness::new();
    h.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "w", "type": "wait", "wait": {"event": "never", "timeout": "1m"}, "next": "x"},
                              {"id": "x", "type": "action", "action": "allow"}]}))
        .await;
    let waiting = h.start("go", json!({})).await;
    h.advance(60);
    h.worker.tick().await.unwrap();
    let timed_out = h.store.get_execution(waiting.id).await.unwrap();
    assert_eq!(timed_out.status, ExecutionStatus::TimedOut);
    assert_eq!(timed_out.error.map(|e| e.kind), Some(ErrorKind::TimedOut));
}

#[tokio::test]
async fn direct_delivery_and_correlated_events() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "w", "type": "wait", "wait": {"event": "doc.signed"}, "next": "x"},
                              {"id": "x", "type": "action", "action": "allow"}]}))
        .await;
    let a = h.start("go", json!({})).await;
    let b = h.start("go", json!({})).await;
    let wrong = h
        .events
        .deliver_to(a.id, "doc.rejected", json!({}), None, Some("ops"))
        .await;
    assert!(
        matches!(wrong, Err(Error::Conflict(ref m)) if m.contains("doc.signed")),
        "{wrong:?}"
    );
    let done = h
        .events
        .deliver_to(a.id, "doc.signed", json!({"by": "x"}), None, Some("ops"))
        .await
        .unwrap()
        .progress
        .settled(&h.engine, WAIT)
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert!(
        matches!(
            h.events
                .deliver_to(a.id, "doc.signed", json!({}), None, None)
                .await,
            Err(Error::Conflict(_))
        ),
        "no longer waiting"
    );
    assert_eq!(
        h.store.get_execution(b.id).await.unwrap().status,
        ExecutionStatus::Waiting,
        "only the addressee resumed"
    );

    let correlated = h
        .events
        .ingest(tollgate_resumer::NewEvent {
            event_type: "doc.signed".into(),
            payload: json!({}),
            correlation_id: Some(b.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(correlated.resumed.len(), 1);
    let audit = h.store.list_resume_requests(a.id).await.unwrap();
    assert_eq!(
        audit.iter().map(|r| r.outcome).collect::<Vec<_>>(),
        [
            ResumeOutcome::Refused,
            ResumeOutcome::Resumed,
            ResumeOutcome::Refused
        ]
    );
}

#[tokio::test]
async fn repeated_event_ids_change_nothing() {
    let h = Harness::new();
    h.deploy(approval_flow(json!({"approvers": {"role": "manager"}})))
        .await;
    let send = || {
        h.events.ingest(tollgate_resumer::NewEvent {
            event_type: "order.created".into(),
            payload: json!({}),
            event_id: Some("ord-42".into()),
            ..Default::default()
        })
    };
    let first = send().await.unwrap();
    let second = send().await.unwrap();
    assert!(!first.duplicate && second.duplicate);
    assert_eq!(second.event.id, first.event.id);
    assert_eq!(second.event.started.len(), 1);
    assert!(second.started.is_empty());
}

/// A webhook receiver that answers `200` after 300 ms: long enough to act on an execution
/// while its call is in flight.
async fn slow_receiver() -> wiremock::MockServer {
    let slow = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200).set_delay(Duration::from_millis(300)))
        .mount(&slow)
        .await;
    slow
}

#[tokio::test]
async fn manual_pause_resume_and_cancel() {
    let slow = slow_receiver().await;
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": format!("{}/x", slow.uri())}], "next": "decide"},
                              {"id": "decide", "type": "condition", "condition": {"field": "proceed", "operator": "eq", "value": true}, "on_true": "yes", "on_false": "no"},
                              {"id": "yes", "type": "action", "action": "allow"},
                              {"id": "no", "type": "action", "action": "block"}]}))
        .await;
    let mut ingested = h.send("go", json!({})).await;
    let running = ingested.started.remove(0);
    let id = running.execution.id;
    // Ask for a pause while the webhook is in flight: it takes effect at the next boundary.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = h
        .control
        .pause(id, Some("ops"), Some("check"))
        .await
        .unwrap();
    assert!(asked.pause_requested);
    let paused = running.settled(&h.engine, WAIT).await.unwrap();
    assert_eq!(paused.status, ExecutionStatus::Paused);
    let gate = paused.gate.clone().unwrap();
    assert_eq!(
        (gate.reason, gate.step_id.as_str()),
        (PauseReason::Manual, "decide")
    );
    assert!(matches!(
        h.control.pause(id, None, None).await,
        Err(Error::Conflict(_))
    ));

    let done = h
        .control
        .resume(id, Some("ops"), json!({"proceed": true}))
        .await
        .unwrap()
        .settled(&h.engine, WAIT)
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed)),
        "resume data merged into the context"
    );
    assert_eq!(
        h.steps(&done)
            .await
            .iter()
            .filter(|(s, _)| s == "call")
            .count(),
        1
    );
    assert!(
        matches!(
            h.control.cancel(id, None, None).await,
            Err(Error::Conflict(_))
        ),
        "terminal is final"
    );
}

/// A side effect's completion rides on the commit of the gate after it; a pause asked
/// for during the call still stops the execution before that gate — no approval request
/// is opened — and the gate is reached after the resume.
#[tokio::test]
async fn a_pause_during_a_side_effect_stops_before_the_gate_after_it() {
    let slow = slow_receiver().await;
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": format!("{}/x", slow.uri())}], "next": "tag"},
                              {"id": "tag", "type": "action", "action": "allow", "next": "approve"},
                              {"id": "approve", "type": "approval", "approval": {"approvers": {"role": "manager"}},
                               "on_approve": "yes", "on_reject": "no"},
                              {"id": "yes", "type": "action", "action": "allow"},
                              {"id": "no", "type": "action", "action": "block"}]}))
        .await;
    let mut ingested = h.send("go", json!({})).await;
    let running = ingested.started.remove(0);
    let id = running.execution.id;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.control.pause(id, Some("ops"), None).await.unwrap();
    let paused = running.settled(&h.engine, WAIT).await.unwrap();
    h.assert_stored(&paused).await;
    let gate = paused.gate.clone().unwrap();
    assert_eq!(
        (paused.status, gate.reason, gate.step_id.as_str()),
        (ExecutionStatus::Paused, PauseReason::Manual, "tag"),
        "paused at the boundary right after the call"
    );
    assert_eq!(
        h.steps(&paused).await,
        vec![("call".to_owned(), StepStatus::Completed)],
        "the steps run past the boundary were not stored"
    );
    assert_eq!(h.store.count_pending_approvals().await.unwrap(), 0);
    assert_eq!(paused.steps_run, 1);

    let at_gate = h
        .control
        .resume(id, Some("ops"), json!({}))
        .await
        .unwrap()
        .settled(&h.engine, WAIT)
        .await
        .unwrap();
    assert_eq!(
        (
            at_gate.status,
            at_gate.gate.as_ref().map(|g| g.step_id.as_str())
        ),
        (ExecutionStatus::Paused, Some("approve"))
    );
    assert_eq!(h.store.count_pending_approvals().await.unwrap(), 1);
    assert_eq!(
        slow.received_requests().await.unwrap().len(),
        1,
        "called once"
    );
}

#[tokio::test]
async fn cancel_expires_open_approvals_and_manual_resume_of_a_gate_is_refused() {
    let h = Harness::new();
    h.deploy(approval_flow(json!({"approvers": {"role": "manager"}})))
        .await;
    let paused = h.start("order.created", json!({})).await;
    let refused = h.control.resume(paused.id, Some("ops"), json!({})).await;
    assert!(
        matches!(refused, Err(Error::Conflict(ref m)) if m.contains("decide the approval")),
        "{refused:?}"
    );
    let audit = h.store.list_resume_requests(paused.id).await.unwrap();
    assert_eq!(
        (audit[0].trigger, audit[0].outcome),
        (ResumeTrigger::Manual, ResumeOutcome::Refused)
    );

    let cancelled = h
        .control
        .cancel(paused.id, Some("ops"), Some("customer withdrew"))
        .await
        .unwrap();
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    assert_eq!(cancelled.error.map(|e| e.kind), Some(ErrorKind::Cancelled));
    let approval = h
        .store
        .get_approval(paused.gate.as_ref().unwrap().approval_id.unwrap())
        .await
        .unwrap();
    assert_eq!(approval.status, ApprovalStatus::Cancelled);
    assert!(matches!(
        h.decide(&paused, "ann", &["manager"], DecisionKind::Approve, None)
            .await,
        Err(Error::Conflict(_))
    ));
}

#[tokio::test]
async fn paused_executions_keep_the_definition_they_started_with() {
    let h = Harness::new();
    let workflow = h
        .deploy(approval_flow(json!({"approvers": {"role": "manager"}})))
        .await;
    let paused = h.start("order.created", json!({})).await;
    // The workflow is edited while the execution waits: approval now leads to "refuse".
    let mut edited = approval_flow(json!({"approvers": {"role": "manager"}}));
    edited["steps"][0]["on_approve"] = json!("refuse");
    let edited = Arc::new(tollgate_model::load(&edited).unwrap().definition);
    h.store
        .replace_workflow(workflow.id, edited, h.engine.clock().now())
        .await
        .unwrap();
    let done = h
        .decide(&paused, "ann", &["manager"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        done.result,
        Some(ExecutionResult::Allowed),
        "the pinned definition still says ship"
    );
    let fresh = h.start("order.created", json!({})).await;
    let fresh = h
        .decide(&fresh, "ann", &["manager"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        fresh.result,
        Some(ExecutionResult::Blocked),
        "new executions use the edit"
    );
}

#[tokio::test]
async fn workflow_deadline_times_out_a_paused_execution() {
    let h = Harness::new();
    let mut doc = approval_flow(json!({"approvers": {"role": "manager"}}));
    doc["timeout"] = json!("1d");
    h.deploy(doc).await;
    let paused = h.start("order.created", json!({})).await;
    assert_eq!(
        paused.deadline,
        Some(crate::start_time() + chrono::TimeDelta::days(1))
    );
    h.advance(86_400);
    assert_eq!(h.worker.tick().await.unwrap().timed_out, 1);
    let ended = h.store.get_execution(paused.id).await.unwrap();
    assert_eq!(ended.status, ExecutionStatus::TimedOut);
    let approval = h
        .store
        .get_approval(paused.gate.as_ref().unwrap().approval_id.unwrap())
        .await
        .unwrap();
    assert_eq!(approval.status, ApprovalStatus::Expired);
}

/// A decision that settles its gate is stored together with the side-effect-free steps
/// after it: the execution is already at its next gate, or ended, when `decide` returns
/// — before any background task could have run on this single-threaded runtime.
#[tokio::test]
async fn a_decision_is_stored_with_the_steps_after_it() {
    let h = Harness::new();
    h.deploy(json!({
        "workflow_id": "two", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "first", "type": "approval", "approval": {"approvers": {"role": "manager"}}, "on_approve": "check", "on_reject": "refuse"},
            {"id": "check", "type": "condition", "condition": {"field": "total", "operator": "gt", "value": 100}, "on_true": "second", "on_false": "ship"},
            {"id": "second", "type": "approval", "approval": {"approvers": {"role": "finance"}}, "on_approve": "ship", "on_reject": "refuse"},
            {"id": "ship", "type": "action", "action": "allow"},
            {"id": "refuse", "type": "action", "action": "block"}
        ]
    }))
    .await;
    let paused = h.start("order.created", json!({"total": 500})).await;
    let first = paused.gate.as_ref().and_then(|g| g.approval_id).unwrap();
    let decided = h
        .approvals
        .decide(
            first,
            &who("ann", &["manager"]),
            DecisionKind::Approve,
            None,
            json!({}),
        )
        .await
        .unwrap();
    assert_eq!(decided.approval.status, ApprovalStatus::Approved);
    // At the second gate, with its request, in the decision's own write.
    let stored = h.store.get_execution(paused.id).await.unwrap();
    assert_eq!(stored.status, ExecutionStatus::Paused);
    let gate = stored.gate.clone().unwrap();
    assert_eq!(gate.step_id, "second");
    let second = h
        .store
        .get_approval(gate.approval_id.unwrap())
        .await
        .unwrap();
    assert_eq!(
        (second.status, second.approver_roles.clone()),
        (ApprovalStatus::Pending, vec!["finance".to_owned()])
    );
    assert_eq!(
        h.steps(&stored)
            .await
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["first", "check", "second"],
        "the first gate's decision, the condition, and the second gate entered"
    );
    assert_eq!(stored.context["approvals"]["first"]["decided_by"], "ann");
    let settled = decided.progress.settled(&h.engine, WAIT).await.unwrap();
    assert_eq!(settled, stored);

    // The second decision ends it, also in one write; the audit has one row per resume.
    let decided = h
        .approvals
        .decide(
            second.id,
            &who("fin", &["finance"]),
            DecisionKind::Reject,
            Some("over budget".into()),
            json!({}),
        )
        .await
        .unwrap();
    let ended = h.store.get_execution(paused.id).await.unwrap();
    assert_eq!(
        (ended.status, ended.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Blocked))
    );
    assert!(ended.lease.is_none() && ended.gate.is_none() && ended.wake.is_none());
    assert_eq!(ended.resume_count, 2);
    assert_eq!(
        h.steps(&ended)
            .await
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["first", "check", "second", "refuse"]
    );
    assert_eq!(
        h.store.list_resume_requests(ended.id).await.unwrap().len(),
        2
    );
    assert!(h
        .store
        .list_approvals(
            &tollgate_store::ApprovalFilter {
                execution_id: Some(ended.id),
                status: Some(ApprovalStatus::Pending),
                ..Default::default()
            },
            &tollgate_store::PageRequest::first(10),
        )
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        decided.progress.settled(&h.engine, WAIT).await.unwrap(),
        ended
    );
}

/// When the step after the gate has a side effect, the decision stores the execution
/// claimed at that step (the gate's record with it) and the engine runs the effect after.
#[tokio::test]
async fn a_decision_before_a_side_effect_stores_the_claim_and_advances() {
    let api = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .expect(1)
        .mount(&api)
        .await;
    let h = Harness::new();
    h.deploy(json!({
        "workflow_id": "effect", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "gate", "type": "approval", "approval": {"approvers": {"role": "manager"}}, "on_approve": "call", "on_reject": "refuse"},
            {"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": format!("{}/hook", api.uri())}], "next": "ship"},
            {"id": "ship", "type": "action", "action": "allow"},
            {"id": "refuse", "type": "action", "action": "block"}
        ]
    }))
    .await;
    let paused = h.start("order.created", json!({})).await;
    let done = h
        .decide(&paused, "ann", &["manager"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed))
    );
    assert_eq!(
        h.steps(&done)
            .await
            .iter()
            .map(|(id, _)| id.as_str())
            .collect::<Vec<_>>(),
        ["gate", "call", "ship"]
    );
}

/// The inbox lists approval requests newest first by id, so the engine makes their ids
/// time-ordered: a request made later sorts first, whichever executions they belong to.
#[tokio::test]
async fn approval_requests_are_listed_newest_first() {
    let h = Harness::new();
    h.deploy(approval_flow(json!({"approvers": {"role": "manager"}})))
        .await;
    let mut made = Vec::new();
    for _ in 0..6 {
        let paused = h.start("order.created", json!({})).await;
        let gate = paused.gate.clone().unwrap();
        made.push((gate.approval_id.unwrap(), gate.paused_at));
        h.advance(1);
    }
    made.reverse();
    let listed = h
        .store
        .list_approvals(
            &tollgate_store::ApprovalFilter::default(),
            &tollgate_store::PageRequest::first(50),
        )
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|a| a.id).collect::<Vec<_>>(),
        made.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        "newest first"
    );
    for (id, paused_at) in made {
        let (secs, nanos) = id.get_timestamp().unwrap().to_unix();
        let at = chrono::DateTime::from_timestamp(i64::try_from(secs).unwrap(), nanos).unwrap();
        assert_eq!(
            at, paused_at,
            "the id carries the time the request was made"
        );
    }
}

/// A direct delivery that is refused stores nothing (so no later wait can take it as an
/// early event), and one with an `event_id` is idempotent: a resend changes nothing and
/// is answered as a repeat — even though the execution no longer waits.
#[tokio::test]
async fn direct_deliveries_store_nothing_when_refused_and_are_idempotent_by_event_id() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "w", "type": "wait", "wait": {"event": "doc.signed",
                                "match": {"field": "event.ok", "operator": "eq", "value": true}}, "next": "again"},
                              {"id": "again", "type": "wait", "wait": {"event": "doc.signed"}, "next": "x"},
                              {"id": "x", "type": "action", "action": "allow"}]}))
        .await;
    let a = h.start("go", json!({})).await;
    let stored = |h: &Harness| {
        let store = h.store.clone();
        async move {
            store
                .events_for_wait(
                    "doc.signed",
                    chrono::DateTime::<chrono::Utc>::MIN_UTC,
                    a.id,
                    None,
                    100,
                )
                .await
                .unwrap()
        }
    };
    for key in [None, Some("d-0".to_owned())] {
        let refused = h
            .events
            .deliver_to(a.id, "doc.signed", json!({"ok": false}), key, Some("ops"))
            .await;
        assert!(
            matches!(refused, Err(Error::Conflict(ref m)) if m.contains("match")),
            "{refused:?}"
        );
    }
    assert!(
        stored(&h).await.is_empty(),
        "a refused delivery stores nothing"
    );
    let first = h
        .events
        .deliver_to(
            a.id,
            "doc.signed",
            json!({"ok": true}),
            Some("d-1".into()),
            Some("ops"),
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    let at_second_wait = first.progress.settled(&h.engine, WAIT).await.unwrap();
    assert_eq!(
        at_second_wait.status,
        ExecutionStatus::Waiting,
        "the second wait took nothing early"
    );
    let resent = h
        .events
        .deliver_to(
            a.id,
            "doc.signed",
            json!({"ok": true}),
            Some("d-1".into()),
            Some("ops"),
        )
        .await
        .unwrap();
    assert!(resent.duplicate);
    assert_eq!(resent.event.id, first.event.id);
    assert_eq!(
        resent.progress.settled(&h.engine, WAIT).await.unwrap(),
        at_second_wait,
        "a resend changes nothing"
    );
    assert_eq!(stored(&h).await.len(), 1, "one event for two sends");
}

/// An early event behind more than a thousand others of its type is still found: the
/// look-up pages through every candidate (it read the oldest 1,000 and stopped).
#[tokio::test]
async fn an_early_event_behind_a_thousand_others_is_found() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "hold", "type": "approval", "approval": {"approvers": {"role": "m"}}, "on_approve": "w"},
                              {"id": "w", "type": "wait", "wait": {"event": "paid",
                                "match": {"field": "event.order", "operator": "eq", "value": "{{order}}"}}, "next": "x"},
                              {"id": "x", "type": "action", "action": "allow"}]}))
        .await;
    let held = h.start("go", json!({"order": "o-mine"})).await;
    assert_eq!(held.status, ExecutionStatus::Paused);
    let now = tollgate_engine::Clock::now(h.clock.as_ref());
    for i in 0..1_200 {
        let order = if i == 1_150 {
            "o-mine".to_owned()
        } else {
            format!("o-{i}")
        };
        h.store
            .insert_event(tollgate_model::records::Event {
                id: uuid::Uuid::now_v7(),
                event_id: None,
                event_type: "paid".into(),
                payload: json!({"order": order}),
                source: None,
                correlation_id: None,
                submitted_by: None,
                received_at: now,
                started: Vec::new(),
                resumed: Vec::new(),
            })
            .await
            .unwrap();
    }
    let done = h
        .decide(
            &held,
            "m1",
            &["m"],
            tollgate_model::records::DecisionKind::Approve,
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed, "{:?}", done.gate);
    assert_eq!(done.context["events"]["w"]["order"], "o-mine");
}

/// Events find their waits by correlation key: a wait stores the key of its resolved
/// match, an event resumes the one wait with its key among many (under the numeric rule:
/// `"42"` finds a wait for `42`), the rest of a match still filters what the key finds,
/// and waits without a key — a match without an event equality, or no match — are
/// still offered every event.
#[tokio::test]
async fn events_find_their_waits_by_key_and_the_rest_of_the_match_still_filters() {
    let h = Harness::new();
    let flow = |id: &str, wait: Value| {
        json!({"workflow_id": id, "version": "1", "trigger": {"type": "event", "event": format!("{id}.start")},
               "steps": [{"id": "w", "type": "wait", "wait": wait, "next": "x"},
                         {"id": "x", "type": "action", "action": "allow"}]})
    };
    h.deploy(flow(
        "keyed",
        json!({"event": "paid", "match": {"and": [
        {"field": "event.order_id", "operator": "eq", "value": "{{order}}"},
        {"field": "event.amount", "operator": "gte", "value": 10}]}}),
    ))
    .await;
    h.deploy(flow(
        "ranged",
        json!({"event": "paid",
        "match": {"field": "event.amount", "operator": "gt", "value": 100}}),
    ))
    .await;
    h.deploy(flow("any", json!({"event": "paid"}))).await;
    let mut keyed = Vec::new();
    for order in 0..40 {
        keyed.push(h.start("keyed.start", json!({"order": order})).await);
    }
    let correlation = keyed[7].gate.as_ref().unwrap().correlation.clone().unwrap();
    assert_eq!(correlation.fields, ["event.order_id"]);
    assert_eq!(correlation.values, ["n:7"]);
    let ranged = h.start("ranged.start", json!({})).await;
    assert!(ranged.gate.as_ref().unwrap().correlation.is_none());

    // Order 7, too small: the key finds its wait, the rest of its match refuses it.
    let small = h.send("paid", json!({"order_id": "7", "amount": 5})).await;
    assert!(small.resumed.is_empty(), "{:?}", small.resumed);
    // The `any` wait takes the first event it is offered (started after `small`, it may
    // not take it).
    h.clock.advance(Duration::from_secs(1));
    let any = h.start("any.start", json!({})).await;
    assert_eq!(any.status, ExecutionStatus::Waiting);
    let first = h.send("paid", json!({"order_id": "7", "amount": 50})).await;
    let resumed: Vec<_> = first.resumed.iter().map(|p| p.execution.id).collect();
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    assert!(resumed.contains(&keyed[7].id) && resumed.contains(&any.id));
    // A large payment for order 12 resumes it and the ranged wait, nothing else.
    let large = h
        .send("paid", json!({"order_id": 12.0, "amount": 500}))
        .await;
    let resumed: Vec<_> = large.resumed.iter().map(|p| p.execution.id).collect();
    assert_eq!(resumed.len(), 2, "{resumed:?}");
    assert!(resumed.contains(&keyed[12].id) && resumed.contains(&ranged.id));
    for (i, e) in keyed.iter().enumerate() {
        let status = h.store.get_execution(e.id).await.unwrap().status;
        let done = i == 7 || i == 12;
        assert_eq!(status == ExecutionStatus::Waiting, !done, "order {i}");
    }
}

/// The decision form is checked inside the decision's transaction on the deciding
/// process's cached definitions. A process that never ran the workflow (a fresh API
/// server, another replica) has not compiled it: it loads the pinned definition and
/// decides again, so its answer is the same — refused field by field, changing nothing,
/// or recorded with the editable fields filled from the request.
#[tokio::test]
async fn a_process_that_never_ran_the_workflow_checks_its_decision_form() {
    let h = Harness::new();
    h.deploy(json!({
        "workflow_id": "refunds", "version": "1",
        "trigger": {"type": "event", "event": "refund.requested"},
        "steps": [
            {"id": "gate", "type": "approval",
             "approval": {"approvers": {"role": "finance"},
                          "data": {"approved_amount": "{{amount}}"},
                          "form": {"type": "object", "required": ["approved_amount", "reason_code"],
                                   "properties": {
                                       "approved_amount": {"type": "number", "minimum": 0},
                                       "reason_code": {"type": "string", "enum": ["standard", "exception"]}}},
                          "editable": ["approved_amount"]},
             "on_approve": "ok", "on_reject": "no"},
            {"id": "ok", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}
        ]
    }))
    .await;
    let paused = h.start("refund.requested", json!({"amount": 25000})).await;
    let approval_id = paused.gate.as_ref().and_then(|g| g.approval_id).unwrap();
    let fin = who("fin", &["finance"]);

    let fresh = Harness::on(h.store.clone(), h.clock.clone(), "worker-b");
    assert!(fresh
        .engine
        .cached_definition(&paused.snapshot_id)
        .is_none());
    let refused = fresh
        .approvals
        .decide(approval_id, &fin, DecisionKind::Approve, None, json!({}))
        .await;
    let Err(Error::FormInvalid(problems)) = refused else {
        panic!("expected the form's refusal, got {refused:?}");
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["data.reason_code"]);
    let request = h.store.get_approval(approval_id).await.unwrap();
    assert_eq!(
        (request.status, request.decisions.len()),
        (ApprovalStatus::Pending, 0),
        "a refused form changes nothing"
    );

    let another = Harness::on(h.store.clone(), h.clock.clone(), "worker-c");
    let decided = another
        .approvals
        .decide(
            approval_id,
            &fin,
            DecisionKind::Approve,
            None,
            json!({"reason_code": "standard"}),
        )
        .await
        .unwrap();
    assert_eq!(decided.approval.status, ApprovalStatus::Approved);
    assert_eq!(
        decided.approval.decisions[0].data,
        json!({"reason_code": "standard", "approved_amount": 25000})
    );
    let done = decided
        .progress
        .settled(&another.engine, WAIT)
        .await
        .unwrap();
    assert_eq!(done.result, Some(ExecutionResult::Allowed));
}
