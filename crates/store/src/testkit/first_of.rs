//! `first_of` gates in the store: an execution waits for several event types at once and
//! is found by each; whichever claim wins closes the step's approval `superseded` in its
//! own transaction; a decision may settle it while it waits for events.

use std::sync::Arc;

use tollgate_model::records::{
    ApprovalRequest, ApprovalStatus, Correlation, DecisionKind, Execution, GateBranch, Timestamp,
    Wake, Workflow,
};
use tollgate_model::{ExecutionStatus, PauseReason};
use uuid::Uuid;

use super::fixtures::{
    approval_for, commit, decide_as, event, gate, lease, manager, running, secs, t0, waiting,
    workflow,
};
use crate::{Store, Transition, WaitKey, WaitShape};

/// A running execution stopped at a `first_of` step with event gates for `events`, an
/// approval and, with `deadline`, an `after` gate.
async fn at_first_of(
    store: &Arc<dyn Store>,
    w: &Workflow,
    events: &[&str],
    deadline: Option<Timestamp>,
) -> (Execution, ApprovalRequest) {
    let e = running(store, w, "w1").await;
    let approval = approval_for(&e, 1, deadline);
    let mut g = gate(
        if events.is_empty() {
            PauseReason::Approval
        } else {
            PauseReason::Event
        },
        deadline,
    );
    g.event = None;
    g.approval_id = Some(approval.id);
    g.branches = Some(
        events
            .iter()
            .enumerate()
            .map(|(i, t)| GateBranch {
                index: u32::try_from(i).unwrap_or_default(),
                event: (*t).to_owned(),
                event_match: None,
                correlation: None,
            })
            .collect(),
    );
    store
        .commit_step(commit(
            &e,
            "w1",
            e.version,
            Transition::Gate {
                gate: g,
                approval: Some(Box::new(approval.clone())),
            },
        ))
        .await
        .unwrap();
    (store.get_execution(e.id).await.unwrap(), approval)
}

async fn first_of_ids(store: &Arc<dyn Store>, event_type: &str, after: Option<Uuid>) -> Vec<Uuid> {
    store
        .waiting_at_first_of(event_type, &[], after, 10, t0())
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect()
}

pub async fn first_of_gates_are_found_by_each_type_and_an_event_supersedes_the_approval(
    store: Arc<dyn Store>,
) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = at_first_of(
        &store,
        &w,
        &["payment.settled", "order.cancelled", "order.cancelled"],
        Some(t0() + secs(3600)),
    )
    .await;
    let (later, _) = at_first_of(&store, &w, &["order.cancelled"], None).await;
    let plain = waiting(&store, &w, None).await;
    assert_eq!(e.status, ExecutionStatus::Waiting);
    assert_eq!(first_of_ids(&store, "payment.settled", None).await, [e.id]);
    // Two gates of one type list the execution once; pages go by id.
    assert_eq!(
        first_of_ids(&store, "order.cancelled", None).await,
        [e.id, later.id]
    );
    assert_eq!(
        first_of_ids(&store, "order.cancelled", Some(e.id)).await,
        [later.id]
    );
    assert!(first_of_ids(&store, "payment.received", None)
        .await
        .is_empty());
    // A first_of step is not a plain wait, nor is a plain wait a first_of step.
    let plain_waits: Vec<Uuid> = store
        .waiting_for_event("payment.received", None, 10, t0())
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(plain_waits, [plain.id]);

    // An event of a type no gate awaits is refused.
    let other = event("refund.issued", None, t0());
    assert!(store
        .claim_wait(e.id, None, &other, None, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());
    // One of its types claims it, and closes the approval in the same transaction.
    let cancelled = event("order.cancelled", None, t0() + secs(1));
    let claimed = store
        .claim_wait(
            e.id,
            Some(e.version),
            &cancelled,
            None,
            &lease("api", t0() + secs(30)),
            t0() + secs(1),
        )
        .await
        .unwrap();
    assert_eq!(claimed.status, ExecutionStatus::Running);
    assert!(matches!(claimed.wake, Some(Wake::Event { .. })));
    let closed = store.get_approval(approval.id).await.unwrap();
    assert_eq!(closed.status, ApprovalStatus::Superseded);
    assert_eq!(closed.decided_at, Some(t0() + secs(1)));
    // The losing gates fire nothing: the other event type, the approval, the deadline.
    let settled = event("payment.settled", None, t0() + secs(2));
    assert!(store
        .claim_wait(e.id, None, &settled, None, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());
    let late = decide_as(
        &store,
        approval.id,
        "mia",
        DecisionKind::Approve,
        &manager("mia"),
    )
    .await
    .unwrap_err();
    assert!(late.is_conflict(), "{late:?}");
    assert!(store
        .claim_due_gates(t0() + secs(7200), &lease("w2", t0() + secs(7300)), 10)
        .await
        .unwrap()
        .iter()
        .all(|x| x.id != e.id));
    assert!(first_of_ids(&store, "payment.settled", None)
        .await
        .is_empty());

    // Moving on to a plain wait for one of those types takes it out of the first_of index.
    let mut next = gate(PauseReason::Event, None);
    next.event = Some("order.cancelled".into());
    next.step_id = "after_cancel".into();
    store
        .commit_step(commit(
            &claimed,
            "api",
            claimed.version,
            Transition::Gate {
                gate: next,
                approval: None,
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        first_of_ids(&store, "order.cancelled", None).await,
        [later.id]
    );
    assert!(first_of_ids(&store, "payment.settled", None)
        .await
        .is_empty());
}

pub async fn a_first_of_step_is_decided_while_waiting_and_its_deadline_supersedes(
    store: Arc<dyn Store>,
) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    // Its approval decides it although it waits (`waiting`) for events too.
    let (e, approval) = at_first_of(&store, &w, &["payment.settled"], None).await;
    assert_eq!(e.status, ExecutionStatus::Waiting);
    let decided = decide_as(
        &store,
        approval.id,
        "mia",
        DecisionKind::Approve,
        &manager("mia"),
    )
    .await
    .unwrap();
    assert!(decided.claimed);
    assert_eq!(decided.execution.status, ExecutionStatus::Running);
    assert!(matches!(
        decided.execution.wake,
        Some(Wake::Approval {
            outcome: ApprovalStatus::Approved,
            ..
        })
    ));
    let paid = event("payment.settled", None, t0() + secs(1));
    assert!(store
        .claim_wait(e.id, None, &paid, None, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());

    // An approval and an `after` gate: the deadline is a timeout, not an expiry.
    let deadline = t0() + secs(60);
    let (timed, request) = at_first_of(&store, &w, &[], Some(deadline)).await;
    assert_eq!(timed.status, ExecutionStatus::Paused);
    let due = store
        .claim_due_gates(deadline, &lease("w2", deadline + secs(30)), 10)
        .await
        .unwrap();
    let claimed = due.iter().find(|x| x.id == timed.id).unwrap();
    assert!(
        matches!(claimed.wake, Some(Wake::WaitTimeout { .. })),
        "{:?}",
        claimed.wake
    );
    let closed = store.get_approval(request.id).await.unwrap();
    assert_eq!(closed.status, ApprovalStatus::Superseded);
    assert_eq!(closed.decided_at, Some(deadline));
}

pub async fn first_of_gates_are_found_by_their_correlation_keys(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    assert!(store
        .first_of_shapes("payment.settled")
        .await
        .unwrap()
        .is_empty());
    let keyed = |hash: &str| {
        Some(Box::new(Correlation {
            shape: "s1".into(),
            fields: vec!["event.order_id".into()],
            values: vec![format!("j:{hash}")],
            hash: hash.into(),
        }))
    };
    let mut ids = Vec::new();
    for hash in ["h-a", "h-b"] {
        let e = running(&store, &w, "w1").await;
        let mut g = gate(PauseReason::Event, None);
        g.event = None;
        g.branches = Some(vec![
            GateBranch {
                index: 0,
                event: "payment.settled".into(),
                event_match: None,
                correlation: keyed(hash),
            },
            GateBranch {
                index: 1,
                event: "order.cancelled".into(),
                event_match: None,
                correlation: None,
            },
        ]);
        store
            .commit_step(commit(
                &e,
                "w1",
                e.version,
                Transition::Gate {
                    gate: g,
                    approval: None,
                },
            ))
            .await
            .unwrap();
        ids.push(e.id);
    }
    let shapes = store.first_of_shapes("payment.settled").await.unwrap();
    assert_eq!(
        shapes,
        [WaitShape {
            shape: "s1".into(),
            fields: vec!["event.order_id".into()]
        }]
    );
    assert_eq!(
        store.first_of_shapes("order.cancelled").await.unwrap(),
        [WaitShape {
            shape: String::new(),
            fields: Vec::new()
        }]
    );
    let by_key = |hash: &str| WaitKey {
        shape: "s1".into(),
        hash: hash.into(),
    };
    let found: Vec<Uuid> = store
        .waiting_at_first_of("payment.settled", &[by_key("h-b")], None, 10, t0())
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(found, [ids[1]], "only the key's execution");
    assert!(store
        .waiting_at_first_of("payment.settled", &[by_key("h-z")], None, 10, t0())
        .await
        .unwrap()
        .is_empty());
    assert!(
        store
            .waiting_at_first_of("payment.settled", &[], None, 10, t0())
            .await
            .unwrap()
            .is_empty(),
        "a keyed gate is not in the keyless range"
    );
    // A gate without a key is found whatever keys the event has.
    let keyless: Vec<Uuid> = store
        .waiting_at_first_of("order.cancelled", &[by_key("h-a")], None, 10, t0())
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(keyless, ids);
}
