//! `first_of` steps (docs/execution-semantics.md, "First-of gates"): whichever gate fires
//! first — an event of one of its types, its approval, its `after` deadline — wins once,
//! the others are closed with it, and every pair racing leaves exactly one winner.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_model::records::{ApprovalStatus, DecisionKind, Execution, Principal, ResumeOutcome};
use tollgate_model::{ExecutionResult, ExecutionStatus, PauseReason};

use crate::Harness;

const WAIT: Duration = Duration::from_secs(10);

/// Holds at an approval (`hold`) first, so events can arrive before the `first_of` step;
/// then settles on whichever comes first.
fn settle_flow() -> Value {
    json!({
        "workflow_id": "settle", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "hold", "type": "approval", "approval": {"approvers": {"role": "desk"}}, "on_approve": "settle"},
            {"id": "settle", "type": "first_of", "first_of": [
                {"event": "payment.settled", "match": {"field": "event.order_id", "operator": "eq", "value": "{{order_id}}"}, "next": "ship"},
                {"event": "order.cancelled", "match": {"field": "event.order_id", "operator": "eq", "value": "{{order_id}}"}, "next": "refund"},
                {"approval": {"approvers": {"role": "ops"}}, "on_approve": "ship", "on_reject": "refund"},
                {"after": "3d", "next": "escalate"}]},
            {"id": "ship", "type": "action", "action": {"type": "allow", "reason": "shipped"}},
            {"id": "refund", "type": "action", "action": {"type": "block", "reason": "refunded"}},
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

/// An execution for `order` released from `hold` and now at `settle`.
async fn at_settle(h: &Harness, order: &str) -> Execution {
    let held = h.start("order.created", json!({"order_id": order})).await;
    h.decide(&held, "d1", &["desk"], DecisionKind::Approve, None)
        .await
        .unwrap()
}

fn settle_approval(e: &Execution) -> uuid::Uuid {
    e.gate.as_ref().and_then(|g| g.approval_id).unwrap()
}

/// The reason of the action the execution ended at (`shipped`, `refunded`, `escalated`).
fn ended_by(e: &Execution) -> String {
    ["ship", "refund", "escalate"]
        .iter()
        .find_map(|s| e.context["steps"][*s]["reason"].as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_event_wins_and_the_approval_is_superseded() {
    let h = Harness::new();
    h.deploy(settle_flow()).await;
    let waiting = at_settle(&h, "A-1").await;
    assert_eq!(waiting.status, ExecutionStatus::Waiting);
    let gate = waiting.gate.clone().unwrap();
    assert_eq!(gate.reason, PauseReason::Event);
    let branches = gate.branches.clone().unwrap();
    assert_eq!(
        branches
            .iter()
            .map(|b| (b.index, b.event.as_str()))
            .collect::<Vec<_>>(),
        [(0, "payment.settled"), (1, "order.cancelled")]
    );
    assert!(
        branches.iter().all(|b| b.correlation.is_some()),
        "keyed by order_id"
    );
    let approval = h
        .store
        .get_approval(settle_approval(&waiting))
        .await
        .unwrap();
    assert_eq!(approval.status, ApprovalStatus::Pending);
    assert_eq!(
        gate.deadline, approval.expires_at,
        "the `after` gate is its deadline"
    );

    let other = h.send("order.cancelled", json!({"order_id": "B-2"})).await;
    assert!(
        other.resumed.is_empty(),
        "another order's event is not taken"
    );
    let mut cancelled = h.send("order.cancelled", json!({"order_id": "A-1"})).await;
    assert_eq!(cancelled.resumed.len(), 1);
    let done = cancelled
        .resumed
        .remove(0)
        .settled(&h.engine, WAIT)
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.result, ended_by(&done).as_str()),
        (
            ExecutionStatus::Completed,
            Some(ExecutionResult::Blocked),
            "refunded"
        )
    );
    assert_eq!(done.context["steps"]["settle"]["gate"], "event");
    assert_eq!(done.context["steps"]["settle"]["branch"], 1);
    assert_eq!(done.context["events"]["settle"]["order_id"], "A-1");
    let closed = h.store.get_approval(approval.id).await.unwrap();
    assert_eq!(closed.status, ApprovalStatus::Superseded);
    // The superseded approval decides nothing.
    let late = h
        .approvals
        .decide(
            approval.id,
            &who("o1", &["ops"]),
            DecisionKind::Approve,
            None,
            json!({}),
        )
        .await;
    assert!(
        matches!(late, Err(tollgate_resumer::Error::Conflict(_))),
        "{late:?}"
    );
    // A later payment for it is not consumed: it stays for other waits.
    let paid = h.send("payment.settled", json!({"order_id": "A-1"})).await;
    assert!(paid.resumed.is_empty());
    assert_eq!(
        h.store.get_execution(done.id).await.unwrap().resume_count,
        2
    );
}

#[tokio::test]
async fn the_approval_wins_and_later_events_stay_untaken() {
    let h = Harness::new();
    h.deploy(settle_flow()).await;
    let waiting = at_settle(&h, "B-1").await;
    let done = h
        .decide(
            &waiting,
            "o1",
            &["ops"],
            DecisionKind::Reject,
            Some("no stock"),
        )
        .await
        .unwrap();
    assert_eq!(ended_by(&done), "refunded");
    assert_eq!(done.context["steps"]["settle"]["gate"], "approval");
    assert_eq!(done.context["steps"]["settle"]["branch"], 2);
    assert_eq!(done.context["approvals"]["settle"]["status"], "rejected");
    let paid = h.send("payment.settled", json!({"order_id": "B-1"})).await;
    assert!(paid.resumed.is_empty(), "the step is closed");
    assert!(h
        .store
        .get_event(paid.event.id)
        .await
        .unwrap()
        .resumed
        .is_empty());
}

#[tokio::test]
async fn the_after_gate_wins_at_its_deadline() {
    let h = Harness::new();
    h.deploy(settle_flow()).await;
    let waiting = at_settle(&h, "C-1").await;
    h.advance(3 * 86_400 - 1);
    assert_eq!(h.worker.tick().await.unwrap().gates, 0, "not yet due");
    h.advance(1);
    assert_eq!(h.worker.tick().await.unwrap().gates, 1);
    let done = h.store.get_execution(waiting.id).await.unwrap();
    assert_eq!(
        (done.status, ended_by(&done).as_str()),
        (ExecutionStatus::Completed, "escalated")
    );
    assert_eq!(done.context["steps"]["settle"]["gate"], "after");
    assert_eq!(done.context["steps"]["settle"]["branch"], 3);
    let closed = h
        .store
        .get_approval(settle_approval(&waiting))
        .await
        .unwrap();
    assert_eq!(
        closed.status,
        ApprovalStatus::Superseded,
        "superseded, not expired"
    );
}

#[tokio::test]
async fn an_event_that_came_early_wins_at_entry_oldest_first() {
    let h = Harness::new();
    h.deploy(settle_flow()).await;
    let held = h.start("order.created", json!({"order_id": "D-1"})).await;
    h.advance(5);
    let cancelled = h.send("order.cancelled", json!({"order_id": "D-1"})).await;
    h.advance(5);
    let paid = h.send("payment.settled", json!({"order_id": "D-1"})).await;
    assert!(cancelled.resumed.is_empty() && paid.resumed.is_empty());
    h.advance(5);
    let done = h
        .decide(&held, "d1", &["desk"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(ended_by(&done), "refunded", "the cancellation came first");
    assert_eq!(done.consumed_events, [cancelled.event.id]);
    assert_eq!(done.context["steps"]["settle"]["early"], true);
    // No approval was requested for a step that was settled on entry.
    let approvals = h
        .store
        .list_approvals(
            &tollgate_store::ApprovalFilter::default(),
            &tollgate_store::PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(approvals.items.len(), 1, "only `hold`'s");
}

/// What fires in a race.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Gate {
    Paid,
    Cancelled,
    Decision,
    Deadline,
}

async fn fire(h: &Harness, gate: Gate, order: &str, approval: uuid::Uuid) {
    match gate {
        Gate::Paid => {
            h.send("payment.settled", json!({"order_id": order})).await;
        }
        Gate::Cancelled => {
            h.send("order.cancelled", json!({"order_id": order})).await;
        }
        Gate::Decision => {
            // Refused when another gate won first: that is the point.
            let _ = h
                .approvals
                .decide(
                    approval,
                    &who("o1", &["ops"]),
                    DecisionKind::Approve,
                    None,
                    json!({}),
                )
                .await;
        }
        Gate::Deadline => {
            h.worker.tick().await.unwrap();
        }
    }
}

/// Each pair of gates fired at once, many times: exactly one wins — the execution is
/// resumed once, ends where that gate leads, and the approval ends approved (its own
/// win) or superseded (another's).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_pair_of_gates_racing_has_exactly_one_winner() {
    let pairs = [
        (Gate::Paid, Gate::Cancelled),
        (Gate::Paid, Gate::Deadline),
        (Gate::Cancelled, Gate::Decision),
        (Gate::Decision, Gate::Deadline),
        (Gate::Paid, Gate::Decision),
        (Gate::Cancelled, Gate::Deadline),
    ];
    let mut winners = std::collections::BTreeMap::<String, u32>::new();
    for (a, b) in pairs {
        for round in 0..12 {
            let h = Arc::new(Harness::new());
            h.deploy(settle_flow()).await;
            let order = format!("R-{round}");
            let waiting = at_settle(&h, &order).await;
            let approval = settle_approval(&waiting);
            if a == Gate::Deadline || b == Gate::Deadline {
                h.advance(3 * 86_400);
            }
            let (h1, h2) = (h.clone(), h.clone());
            let (o1, o2) = (order.clone(), order.clone());
            let first = tokio::spawn(async move { fire(&h1, a, &o1, approval).await });
            let second = tokio::spawn(async move { fire(&h2, b, &o2, approval).await });
            first.await.unwrap();
            second.await.unwrap();
            // Let the winner's advance finish, whoever spawned it.
            let mut done = h.store.get_execution(waiting.id).await.unwrap();
            for _ in 0..200 {
                if done.status.is_terminal() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                done = h.store.get_execution(waiting.id).await.unwrap();
            }
            assert_eq!(
                done.status,
                ExecutionStatus::Completed,
                "{a:?}/{b:?}: {done:?}"
            );
            // `hold` resumed it once; `settle` exactly once more.
            assert_eq!(done.resume_count, 2, "{a:?}/{b:?}");
            let resumed = h
                .store
                .list_resume_requests(done.id)
                .await
                .unwrap()
                .iter()
                .filter(|r| r.outcome == ResumeOutcome::Resumed)
                .count();
            assert_eq!(resumed, 2, "{a:?}/{b:?}: one resume per gate");
            let won = done.context["steps"]["settle"]["gate"]
                .as_str()
                .unwrap()
                .to_owned();
            let status = h.store.get_approval(approval).await.unwrap().status;
            let expected_end = match won.as_str() {
                "approval" => {
                    assert_eq!(status, ApprovalStatus::Approved);
                    "shipped"
                }
                "after" => {
                    assert_eq!(status, ApprovalStatus::Superseded);
                    "escalated"
                }
                _ => {
                    assert_eq!(status, ApprovalStatus::Superseded);
                    if done.context["steps"]["settle"]["event_type"] == "payment.settled" {
                        "shipped"
                    } else {
                        "refunded"
                    }
                }
            };
            assert_eq!(ended_by(&done), expected_end, "{a:?}/{b:?} won by {won}");
            assert!(done.consumed_events.len() <= 1, "{a:?}/{b:?}");
            assert!(
                [a, b].iter().any(|g| matches!(
                    (g, won.as_str()),
                    (Gate::Paid | Gate::Cancelled, "event")
                        | (Gate::Decision, "approval")
                        | (Gate::Deadline, "after")
                )),
                "{a:?}/{b:?} won by {won}"
            );
            *winners.entry(format!("{a:?}/{b:?}:{won}")).or_default() += 1;
        }
    }
    assert!(winners.len() >= 6, "{winners:?}");
}
