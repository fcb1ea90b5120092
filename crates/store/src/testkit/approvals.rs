//! [`ApprovalStore`](crate::ApprovalStore): decisions, quorums, their authorisation and
//! continuation, deadlines, and lists.

use std::sync::Arc;

use chrono::TimeDelta;
use serde_json::json;
use tollgate_model::records::{
    ApprovalStatus, DecisionKind, Execution, ExecutionError, Principal, ResumeOutcome,
    ResumeTrigger, StepStatus, Wake,
};
use tollgate_model::{ErrorKind, ExecutionStatus, PauseReason};
use uuid::Uuid;

use super::fixtures::{
    approval_for, commit, decide_as, decision, gate, lease, manager, paused_at_approval, running,
    secs, step_record, t0, undo_of, workflow,
};
use crate::{ApprovalFilter, Error, PageRequest, Starting, Store, Transition};

pub async fn quorum_decisions_claim_the_execution_once(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 2, None).await;
    assert_eq!(e.status, ExecutionStatus::Paused);
    assert_eq!(e.lease, None);
    assert_eq!(store.get_approval(approval.id).await.unwrap(), approval);

    let first = store
        .decide(
            approval.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0() + secs(30)),
            t0(),
            None,
        )
        .await
        .unwrap();
    assert!(!first.claimed);
    assert_eq!(first.approval.status, ApprovalStatus::Pending);
    assert_eq!(first.execution.status, ExecutionStatus::Paused);
    assert!(
        store
            .decide(
                approval.id,
                decision("ann", DecisionKind::Approve),
                &manager("ann"),
                &lease("api", t0()),
                t0(),
                None
            )
            .await
            .unwrap_err()
            .is_conflict(),
        "same approver twice"
    );

    let second = store
        .decide(
            approval.id,
            decision("bob", DecisionKind::Approve),
            &manager("bob"),
            &lease("api", t0() + secs(30)),
            t0() + secs(1),
            None,
        )
        .await
        .unwrap();
    assert!(second.claimed);
    assert_eq!(second.approval.status, ApprovalStatus::Approved);
    assert_eq!(second.approval.decisions.len(), 2);
    let resumed = store.get_execution(e.id).await.unwrap();
    assert_eq!(resumed, second.execution);
    assert_eq!(resumed.status, ExecutionStatus::Running);
    assert_eq!(
        resumed.lease.as_ref().and_then(|l| l.owner.as_deref()),
        Some("api")
    );
    assert_eq!(resumed.resume_count, 1);
    assert_eq!(resumed.last_resumed_at, Some(t0() + secs(1)));
    assert!(resumed.version > e.version);
    match resumed.wake {
        Some(Wake::Approval {
            outcome,
            ref decided_by,
            ref data,
            ..
        }) => {
            assert_eq!(outcome, ApprovalStatus::Approved);
            assert_eq!(decided_by.as_deref(), Some("bob"));
            assert_eq!(*data, json!({"note": "bob"}));
        }
        ref other => panic!("wake {other:?}"),
    }
    let late = store
        .decide(
            approval.id,
            decision("cat", DecisionKind::Approve),
            &manager("cat"),
            &lease("api", t0()),
            t0(),
            None,
        )
        .await
        .unwrap_err();
    assert!(late.is_conflict(), "decided");
    assert_eq!(
        late.to_string(),
        "the approval is already approved by bob",
        "a late decider learns by whom"
    );
    let audit = store.list_resume_requests(e.id).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].trigger,
            audit[0].outcome,
            audit[0].actor.as_deref()
        ),
        (ResumeTrigger::Approval, ResumeOutcome::Resumed, Some("bob"))
    );
    assert!(store
        .get_approval(Uuid::now_v7())
        .await
        .unwrap_err()
        .is_not_found());
}

pub async fn concurrent_decisions_claim_once(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 1, None).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let kind = if i % 2 == 0 {
                DecisionKind::Approve
            } else {
                DecisionKind::Reject
            };
            store
                .decide(
                    approval.id,
                    decision(&format!("m{i}"), kind),
                    &manager(&format!("m{i}")),
                    &lease(&format!("api-{i}"), t0() + secs(30)),
                    t0(),
                    None,
                )
                .await
        }));
    }
    let mut claimed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(d) => {
                assert!(d.claimed);
                claimed += 1;
            }
            Err(err) => assert!(err.is_conflict(), "{err}"),
        }
    }
    assert_eq!(claimed, 1, "exactly one decision claims the execution");
    let after = store.get_execution(e.id).await.unwrap();
    assert_eq!(after.resume_count, 1);
    assert_eq!(
        store
            .get_approval(approval.id)
            .await
            .unwrap()
            .decisions
            .len(),
        1
    );
    assert_eq!(store.list_resume_requests(e.id).await.unwrap().len(), 1);
}

pub async fn decisions_are_authorised_in_their_transaction(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 1, None).await;
    let refusal = |err: Error| match err {
        Error::Refused {
            execution_id,
            refusal,
        } => (execution_id, refusal.is_forbidden(), refusal.to_string()),
        other => panic!("expected a refusal, got {other}"),
    };
    // Not an approver: refused as forbidden, naming the execution, nothing changed.
    let viewer = Principal {
        subject: "vic".into(),
        roles: vec!["viewer".into()],
    };
    let err = decide_as(&store, approval.id, "vic", DecisionKind::Approve, &viewer)
        .await
        .unwrap_err();
    assert!(!err.is_conflict());
    let (execution_id, forbidden, message) = refusal(err);
    assert_eq!(execution_id, e.id);
    assert!(forbidden, "{message}");
    assert!(message.contains("role manager"), "{message}");
    // The requester may not approve its own request.
    let err = decide_as(
        &store,
        approval.id,
        "shop",
        DecisionKind::Approve,
        &manager("shop"),
    )
    .await
    .unwrap_err();
    assert!(refusal(err).1);
    // A decision signed by someone else than its decider is refused outright.
    assert!(matches!(
        decide_as(
            &store,
            approval.id,
            "ann",
            DecisionKind::Approve,
            &manager("bob")
        )
        .await,
        Err(Error::Invalid(_))
    ));
    let unchanged = store.get_approval(approval.id).await.unwrap();
    assert_eq!(unchanged.status, ApprovalStatus::Pending);
    assert!(unchanged.decisions.is_empty());
    assert_eq!(store.get_execution(e.id).await.unwrap(), e);
    assert!(store.list_resume_requests(e.id).await.unwrap().is_empty());
    // An administrator may decide any request.
    let admin = Principal {
        subject: "root".into(),
        roles: vec!["admin".into()],
    };
    let decided = decide_as(&store, approval.id, "root", DecisionKind::Approve, &admin)
        .await
        .unwrap();
    assert!(decided.claimed);
    // A second decision on the settled request is a state refusal (409), not forbidden.
    let err = decide_as(
        &store,
        approval.id,
        "ann",
        DecisionKind::Approve,
        &manager("ann"),
    )
    .await
    .unwrap_err();
    assert!(err.is_conflict());
    assert!(!refusal(err).1);
}

/// A continuation that moves the claimed execution on with `transition` the way a worker's
/// commit would, with one step record (and the transition's approval request).
fn continue_with(transition: Transition) -> crate::Continuation {
    Arc::new(move |claimed: &Execution| {
        let mut next = claimed.clone();
        let mut step = commit(claimed, "api", claimed.version, transition.clone());
        step.records = vec![step_record(claimed.id, "after", StepStatus::Completed)];
        step.lease_expires_at = t0() + secs(30);
        step.undo = vec![undo_of("after", 1)];
        let records = step.records.clone();
        let writes = crate::rules::apply_commit(&mut next, step).ok()?;
        Some(Starting {
            execution: next,
            records,
            approval: writes.approval,
            undo: writes.undo,
        })
    })
}

pub async fn decisions_store_their_continuation(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let audits = |id| {
        let store = store.clone();
        async move { store.list_resume_requests(id).await.unwrap().len() }
    };

    // On to a second approval gate, in the decision's own transaction.
    let (e, first) = paused_at_approval(&store, &w, 1, None).await;
    let mut second = approval_for(&e, 1, Some(t0() + secs(3600)));
    second.step_id = "second".into();
    let mut at_second = gate(PauseReason::Approval, Some(t0() + secs(3600)));
    at_second.step_id = "second".into();
    at_second.approval_id = Some(second.id);
    let decided = store
        .decide(
            first.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0() + secs(30)),
            t0(),
            Some(continue_with(Transition::Gate {
                gate: at_second,
                approval: Some(Box::new(second.clone())),
            })),
        )
        .await
        .unwrap();
    let continued = decided
        .continued
        .as_ref()
        .expect("every backend of this workspace continues");
    assert_eq!(
        continued.execution, decided.execution,
        "the continuation comes back as stored"
    );
    assert_eq!(continued.records.len(), 1);
    assert_eq!(continued.approval.as_ref().map(|a| a.id), Some(second.id));
    assert!(decided.claimed);
    assert_eq!(decided.approval.status, ApprovalStatus::Approved);
    let stored = store.get_execution(e.id).await.unwrap();
    assert_eq!(stored, decided.execution, "the answer is the stored row");
    assert_eq!(stored.status, ExecutionStatus::Paused);
    assert_eq!(stored.version, e.version + 2, "claimed, then moved on");
    assert_eq!(stored.resume_count, 1);
    assert!(stored.lease.is_none() && stored.wake.is_none());
    assert_eq!(
        stored.gate.as_ref().and_then(|g| g.approval_id),
        Some(second.id)
    );
    assert_eq!(store.get_approval(second.id).await.unwrap(), second);
    let steps = store.list_steps(e.id).await.unwrap();
    assert_eq!(
        steps.iter().map(|r| r.step_id.as_str()).collect::<Vec<_>>(),
        ["after"]
    );
    assert_eq!(audits(e.id).await, 1);
    assert_eq!(
        store.context_trail(e.id).await.unwrap(),
        [undo_of("after", 1)],
        "the continuation's undo trail is stored with the decision"
    );
    // The new request is decidable like any other, and this time the execution
    // ends with the decision.
    let ended = store
        .decide(
            second.id,
            decision("bob", DecisionKind::Reject),
            &manager("bob"),
            &lease("api", t0() + secs(30)),
            t0(),
            Some(continue_with(Transition::Finish {
                status: ExecutionStatus::Completed,
                error: None,
            })),
        )
        .await
        .unwrap();
    assert!(ended.continued.is_some());
    let stored = store.get_execution(e.id).await.unwrap();
    assert_eq!(stored, ended.execution);
    assert_eq!(stored.status, ExecutionStatus::Completed);
    assert!(stored.lease.is_none() && stored.gate.is_none() && stored.completed_at.is_some());
    assert_eq!(audits(e.id).await, 2);
    assert_eq!(
        store.context_trail(e.id).await.unwrap(),
        [],
        "a completed execution's trail is dropped"
    );
    assert_eq!(
        store.get_approval(second.id).await.unwrap().status,
        ApprovalStatus::Rejected
    );

    // A continuation that does not follow the claim (another execution, or no step
    // further) is not stored: the claim is.
    for bad in [
        Arc::new(|claimed: &Execution| {
            let mut other = claimed.clone();
            other.id = Uuid::now_v7();
            other.version += 1;
            Some(Starting::from(other))
        }) as crate::Continuation,
        Arc::new(|claimed: &Execution| Some(Starting::from(claimed.clone()))),
        Arc::new(|_: &Execution| None),
    ] {
        let (e, a) = paused_at_approval(&store, &w, 1, None).await;
        let decided = store
            .decide(
                a.id,
                decision("ann", DecisionKind::Approve),
                &manager("ann"),
                &lease("api", t0() + secs(30)),
                t0(),
                Some(bad),
            )
            .await
            .unwrap();
        assert!(decided.claimed && decided.continued.is_none());
        let stored = store.get_execution(e.id).await.unwrap();
        assert_eq!(stored, decided.execution);
        assert_eq!(
            (stored.status, stored.version),
            (ExecutionStatus::Running, e.version + 1)
        );
        assert!(store.list_steps(e.id).await.unwrap().is_empty());
    }

    // A decision short of the quorum claims nothing, so nothing continues.
    let (e, a) = paused_at_approval(&store, &w, 2, None).await;
    let partial = store
        .decide(
            a.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0() + secs(30)),
            t0(),
            Some(continue_with(Transition::Finish {
                status: ExecutionStatus::Completed,
                error: None,
            })),
        )
        .await
        .unwrap();
    assert!(!partial.claimed && partial.continued.is_none());
    assert_eq!(store.get_execution(e.id).await.unwrap(), e);
}

pub async fn rejection_decides_and_stale_gates_refuse(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 3, None).await;
    store
        .decide(
            approval.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0()),
            t0(),
            None,
        )
        .await
        .unwrap();
    let rejected = store
        .decide(
            approval.id,
            decision("bob", DecisionKind::Reject),
            &manager("bob"),
            &lease("api", t0() + secs(30)),
            t0(),
            None,
        )
        .await
        .unwrap();
    assert!(rejected.claimed);
    assert_eq!(rejected.approval.status, ApprovalStatus::Rejected);
    assert!(matches!(
        rejected.execution.wake,
        Some(Wake::Approval {
            outcome: ApprovalStatus::Rejected,
            ..
        })
    ));

    // A request whose execution was cancelled refuses decisions and changes nothing.
    let (e2, a2) = paused_at_approval(&store, &w, 1, None).await;
    store
        .cancel_execution(e2.id, Some("ops"), None, t0())
        .await
        .unwrap();
    assert!(store
        .decide(
            a2.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0()),
            t0(),
            None
        )
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(
        store.get_approval(a2.id).await.unwrap().status,
        ApprovalStatus::Cancelled
    );
    assert_eq!(
        store.get_execution(e.id).await.unwrap().status,
        ExecutionStatus::Running
    );
}

/// A decision after the request's deadline is refused (409) even before the worker has
/// expired it, and changes nothing; the deadline then resumes the execution once.
pub async fn decisions_after_the_deadline_are_refused(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let deadline = t0() + secs(60);
    let (e, approval) = paused_at_approval(&store, &w, 1, Some(deadline)).await;
    let late = store
        .decide(
            approval.id,
            decision("mia", DecisionKind::Approve),
            &manager("mia"),
            &lease("api", deadline + secs(30)),
            deadline,
            None,
        )
        .await
        .unwrap_err();
    assert!(late.is_conflict(), "{late:?}");
    assert!(late.to_string().contains("expired"), "{late}");
    assert_eq!(store.get_approval(approval.id).await.unwrap(), approval);
    assert_eq!(store.get_execution(e.id).await.unwrap(), e);
    // Just before it, the same decision is taken.
    let (e2, approval2) = paused_at_approval(&store, &w, 1, Some(deadline)).await;
    let decided = store
        .decide(
            approval2.id,
            decision("mia", DecisionKind::Approve),
            &manager("mia"),
            &lease("api", deadline + secs(30)),
            deadline - TimeDelta::microseconds(1),
            None,
        )
        .await
        .unwrap();
    assert!(decided.claimed);
    assert_eq!(decided.execution.id, e2.id);
    let due = store
        .claim_due_gates(deadline, &lease("w2", deadline + secs(30)), 10)
        .await
        .unwrap();
    assert_eq!(due.iter().map(|x| x.id).collect::<Vec<_>>(), [e.id]);
    assert_eq!(
        store.get_approval(approval.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
}

/// A request's comment thread: oldest first, paged, kept after the decision, refused
/// for a request that does not exist, and deleted with the request by retention.
pub async fn approval_comments_are_a_thread_that_goes_with_its_request(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (_, a) = paused_at_approval(&store, &w, 1, None).await;
    let comment = |body: &str, approval_id: Uuid| tollgate_model::records::ApprovalComment {
        id: Uuid::now_v7(),
        approval_id,
        author: "ann".into(),
        body: body.into(),
        created_at: t0(),
    };
    let said = ["why so big?", "a new customer", "ok"];
    for body in said {
        store.add_comment(&comment(body, a.id)).await.unwrap();
    }
    let first = store
        .list_comments(a.id, &PageRequest::first(2))
        .await
        .unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|c| c.body.as_str())
            .collect::<Vec<_>>(),
        said[..2]
    );
    assert_eq!(
        (first.items[0].author.as_str(), first.items[0].created_at),
        ("ann", t0())
    );
    let rest = store
        .list_comments(
            a.id,
            &PageRequest::after(2, first.next_cursor.clone().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(
        rest.items
            .iter()
            .map(|c| c.body.as_str())
            .collect::<Vec<_>>(),
        said[2..]
    );
    assert!(rest.next_cursor.is_none());
    let nowhere = Uuid::now_v7();
    assert!(store
        .add_comment(&comment("hello?", nowhere))
        .await
        .unwrap_err()
        .is_not_found());
    assert!(store
        .list_comments(nowhere, &PageRequest::first(5))
        .await
        .unwrap_err()
        .is_not_found());

    // Decided: the thread stays open. Ended and purged: it goes with its request.
    let decided = decide_as(&store, a.id, "bob", DecisionKind::Reject, &manager("bob"))
        .await
        .unwrap();
    store.add_comment(&comment("noted", a.id)).await.unwrap();
    end_and_purge(&store, &decided.execution).await;
    assert!(store
        .list_comments(a.id, &PageRequest::first(5))
        .await
        .unwrap_err()
        .is_not_found());
}

/// Ends the decided execution `e` and lets retention delete it with its requests.
async fn end_and_purge(store: &Arc<dyn Store>, e: &Execution) {
    let mut end = commit(
        e,
        "api",
        e.version,
        Transition::Finish {
            status: ExecutionStatus::Completed,
            error: None,
        },
    );
    end.now = t0();
    store.commit_step(end).await.unwrap();
    let purged = store
        .purge_ended(
            &crate::Purge {
                default_before: Some(t0() + secs(1)),
                per_workflow: Vec::new(),
                only: Some(vec![e.id]),
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(purged.len(), 1);
}

/// Claims, releases and assignments: one holder at a time (two concurrent claimers get
/// one claim and one `Conflict`), only the holder or an operator lets go, the hold
/// stays after the decision but no longer changes, and goes with its request.
pub async fn approval_claims_have_one_holder_and_go_with_their_request(store: Arc<dyn Store>) {
    use crate::AssignmentChange::{Assign, Claim, Release};
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (_, a) = paused_at_approval(&store, &w, 1, None).await;
    let (_, other) = paused_at_approval(&store, &w, 1, None).await;
    let claim = |by: &str| Claim { by: by.into() };

    // Two at once: exactly one holds it.
    let (by_ann, by_bob) = (claim("ann"), claim("bob"));
    let (first, second) = tokio::join!(
        store.assign_approval(a.id, &by_ann, t0()),
        store.assign_approval(a.id, &by_bob, t0()),
    );
    let (winner, loser) = match (&first, &second) {
        (Ok(_), Err(Error::Conflict(m))) => ("ann", m.clone()),
        (Err(Error::Conflict(m)), Ok(_)) => ("bob", m.clone()),
        other => panic!("one claim and one conflict, not {other:?}"),
    };
    assert!(loser.contains(&format!("claimed by {winner}")), "{loser}");
    let held = store.assignments(&[a.id, other.id]).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (
            held[0].approval_id,
            held[0].assignee.as_str(),
            held[0].is_claim()
        ),
        (a.id, winner, true)
    );
    // Claiming one's own again changes nothing, not even the time.
    let again = store
        .assign_approval(a.id, &claim(winner), t0() + secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.assigned_at, t0());

    // Someone else may not let go of it; an operator may; then anyone may claim it.
    let stranger = if winner == "ann" { "bob" } else { "ann" };
    let refused = store
        .assign_approval(
            a.id,
            &Release {
                by: stranger.into(),
                force: false,
            },
            t0(),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Conflict(_)), "{refused:?}");
    assert_eq!(store.assignments(&[a.id]).await.unwrap().len(), 1);
    let cleared = store
        .assign_approval(
            a.id,
            &Release {
                by: "ops".into(),
                force: true,
            },
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(cleared, None);
    assert!(store.assignments(&[a.id]).await.unwrap().is_empty());

    // An operator assigns over a claim; the assignee is told apart from a claimer.
    store
        .assign_approval(a.id, &claim("ann"), t0())
        .await
        .unwrap();
    let given = store
        .assign_approval(
            a.id,
            &Assign {
                to: "carl".into(),
                by: "ops".into(),
            },
            t0() + secs(1),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            given.assignee.as_str(),
            given.assigned_by.as_str(),
            given.is_claim()
        ),
        ("carl", "ops", false)
    );
    assert_eq!(
        store.assignments(&[a.id]).await.unwrap(),
        vec![given.clone()]
    );
    let busy = store
        .assign_approval(a.id, &claim("ann"), t0())
        .await
        .unwrap_err();
    assert!(
        matches!(&busy, Error::Conflict(m) if m.contains("assigned to carl")),
        "{busy:?}"
    );
    // The holder themselves may let go.
    store
        .assign_approval(
            a.id,
            &Release {
                by: "carl".into(),
                force: false,
            },
            t0(),
        )
        .await
        .unwrap();
    store
        .assign_approval(a.id, &claim("carl"), t0())
        .await
        .unwrap();

    // Decided: the hold stays as the record of who was on it, and is frozen.
    let decided = decide_as(&store, a.id, "carl", DecisionKind::Reject, &manager("carl"))
        .await
        .unwrap();
    assert_eq!(
        store.assignments(&[a.id]).await.unwrap()[0].assignee,
        "carl"
    );
    let late = store
        .assign_approval(a.id, &claim("ann"), t0())
        .await
        .unwrap_err();
    assert!(matches!(late, Error::Conflict(_)), "{late:?}");
    assert!(store
        .assign_approval(Uuid::now_v7(), &claim("ann"), t0())
        .await
        .unwrap_err()
        .is_not_found());

    // Ended and purged: the hold goes with its request.
    end_and_purge(&store, &decided.execution).await;
    assert!(store.assignments(&[a.id]).await.unwrap().is_empty());
}

/// An execution stopped at an approval whose gate commit stored `sla` (priority, due).
async fn gated_with_sla(
    store: &Arc<dyn Store>,
    w: &tollgate_model::records::Workflow,
    priority: &str,
    due_at: Option<tollgate_model::records::Timestamp>,
) -> tollgate_model::records::ApprovalRequest {
    let e = running(store, w, "w1").await;
    let approval = approval_for(&e, 1, None);
    let mut g = gate(PauseReason::Approval, None);
    g.approval_id = Some(approval.id);
    let mut c = commit(
        &e,
        "w1",
        e.version,
        Transition::Gate {
            gate: g,
            approval: Some(Box::new(approval.clone())),
        },
    );
    c.effects = vec![crate::Effect::Sla(tollgate_model::records::ApprovalSla {
        approval_id: approval.id,
        priority: priority.into(),
        due_at,
    })];
    store.commit_step(c).await.unwrap();
    approval
}

/// Service levels: stored with the gate, listed in due order (the most overdue first,
/// none last, newest first among equals) across pages, counted when overdue while
/// pending, and gone with their request.
pub async fn service_levels_order_the_inbox_and_count_the_overdue(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let late = gated_with_sla(&store, &w, "urgent", Some(t0() - secs(60))).await;
    let (_, plain) = paused_at_approval(&store, &w, 1, None).await;
    let soon = gated_with_sla(&store, &w, "high", Some(t0() + secs(3600))).await;
    let later = gated_with_sla(&store, &w, "low", Some(t0() + secs(7200))).await;
    let same = gated_with_sla(&store, &w, "normal", Some(t0() + secs(3600))).await;
    let undated = gated_with_sla(&store, &w, "high", None).await;

    let slas = store.slas(&[late.id, plain.id, soon.id]).await.unwrap();
    assert_eq!(slas.len(), 2, "a request without one has none: {slas:?}");
    let of_late = slas.iter().find(|s| s.approval_id == late.id).unwrap();
    assert_eq!(
        (of_late.priority.as_str(), of_late.due_at),
        ("urgent", Some(t0() - secs(60)))
    );

    // Due order, two at a time: the cursor carries (due, id), including "none".
    let by_due = ApprovalFilter {
        status: Some(ApprovalStatus::Pending),
        by_due: true,
        ..ApprovalFilter::default()
    };
    let mut order = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let listed = store.list_approvals(&by_due, &page).await.unwrap();
        assert!(listed.items.len() <= 2);
        order.extend(listed.items.iter().map(|a| a.id));
        match listed.next_cursor {
            Some(c) => page = PageRequest::after(2, c),
            None => break,
        }
    }
    // `same` and `soon` share a due time: the newer (`same`) first; then the requests
    // with no due time, newest first.
    assert_eq!(
        order,
        vec![late.id, same.id, soon.id, later.id, undated.id, plain.id]
    );
    assert!(
        store
            .list_approvals(
                &by_due,
                &PageRequest::after(2, crate::encode_id_cursor(late.id))
            )
            .await
            .is_err(),
        "a cursor of the other order is refused"
    );

    // Overdue: pending and past due, at the time asked.
    assert_eq!(store.count_overdue_approvals(t0()).await.unwrap(), 1);
    assert_eq!(
        store
            .count_overdue_approvals(t0() + secs(3600))
            .await
            .unwrap(),
        3
    );
    let decided = decide_as(
        &store,
        late.id,
        "bob",
        DecisionKind::Approve,
        &manager("bob"),
    )
    .await
    .unwrap();
    assert_eq!(store.count_overdue_approvals(t0()).await.unwrap(), 0);

    // Ended and purged: the service level goes with its request.
    end_and_purge(&store, &decided.execution).await;
    assert!(store.slas(&[late.id]).await.unwrap().is_empty());
}

/// The combined read of holds and service levels answers exactly what the two reads
/// answer apart: each request's own rows, none for a request without, nothing for an
/// absent id or an empty list.
pub async fn holds_and_service_levels_read_together_as_apart(store: Arc<dyn Store>) {
    use crate::AssignmentChange::Claim;
    let w = workflow(&store, "orders", "1", "order.created").await;
    let both = gated_with_sla(&store, &w, "urgent", Some(t0() + secs(60))).await;
    let sla_only = gated_with_sla(&store, &w, "low", None).await;
    let (_, held_only) = paused_at_approval(&store, &w, 1, None).await;
    let (_, neither) = paused_at_approval(&store, &w, 1, None).await;
    for (id, by) in [(both.id, "ann"), (held_only.id, "bob")] {
        store
            .assign_approval(id, &Claim { by: by.into() }, t0())
            .await
            .unwrap();
    }
    let ids = [
        both.id,
        sla_only.id,
        held_only.id,
        neither.id,
        Uuid::now_v7(),
    ];
    let (mut held, mut slas) = store.assignments_and_slas(&ids).await.unwrap();
    let mut held_apart = store.assignments(&ids).await.unwrap();
    let mut slas_apart = store.slas(&ids).await.unwrap();
    for list in [&mut held, &mut held_apart] {
        list.sort_by_key(|h| h.approval_id);
    }
    for list in [&mut slas, &mut slas_apart] {
        list.sort_by_key(|s| s.approval_id);
    }
    assert_eq!(held, held_apart);
    assert_eq!(slas, slas_apart);
    let holders: Vec<_> = held
        .iter()
        .map(|h| (h.approval_id, h.assignee.as_str(), h.assigned_at))
        .collect();
    let mut expected = vec![(both.id, "ann", t0()), (held_only.id, "bob", t0())];
    expected.sort_by_key(|h| h.0);
    assert_eq!(holders, expected);
    let levels: Vec<_> = slas
        .iter()
        .map(|s| (s.approval_id, s.priority.as_str(), s.due_at))
        .collect();
    let mut expected = vec![
        (both.id, "urgent", Some(t0() + secs(60))),
        (sla_only.id, "low", None),
    ];
    expected.sort_by_key(|s| s.0);
    assert_eq!(levels, expected);
    let (none_held, no_slas) = store.assignments_and_slas(&[neither.id]).await.unwrap();
    assert!(none_held.is_empty() && no_slas.is_empty());
    let (none_held, no_slas) = store.assignments_and_slas(&[]).await.unwrap();
    assert!(none_held.is_empty() && no_slas.is_empty());
}

/// A decision answers with its request's holder and service level as its own
/// transaction read them — decisions of one batch each with their own, a vote short of
/// the quorum as well as a settling one, `None` for a request without — and they stay
/// after the decision.
pub async fn a_decision_answers_with_its_holder_and_service_level(store: Arc<dyn Store>) {
    use crate::AssignmentChange::Claim;
    let w = workflow(&store, "orders", "1", "order.created").await;
    let both = gated_with_sla(&store, &w, "urgent", Some(t0() + secs(60))).await;
    let sla_only = gated_with_sla(&store, &w, "low", None).await;
    let (_, held_only) = paused_at_approval(&store, &w, 2, None).await;
    let (_, neither) = paused_at_approval(&store, &w, 1, None).await;
    for (id, by) in [(both.id, "ann"), (held_only.id, "bob")] {
        store
            .assign_approval(id, &Claim { by: by.into() }, t0())
            .await
            .unwrap();
    }
    // Side by side, so that the batching backends decide them together.
    let decided = futures_util::future::join_all(
        [both.id, sla_only.id, held_only.id, neither.id].map(|id| {
            let store = store.clone();
            async move { decide_as(&store, id, "ann", DecisionKind::Approve, &manager("ann")).await }
        }),
    )
    .await;
    let answers: Vec<_> = decided
        .into_iter()
        .map(|d| {
            let d = d.unwrap();
            (
                d.approval.id,
                d.approval.status,
                d.assignment
                    .map(|h| (h.approval_id, h.assignee, h.assigned_at)),
                d.sla.map(|s| (s.approval_id, s.priority, s.due_at)),
            )
        })
        .collect();
    assert_eq!(
        answers,
        vec![
            (
                both.id,
                ApprovalStatus::Approved,
                Some((both.id, "ann".to_owned(), t0())),
                Some((both.id, "urgent".to_owned(), Some(t0() + secs(60)))),
            ),
            (
                sla_only.id,
                ApprovalStatus::Approved,
                None,
                Some((sla_only.id, "low".to_owned(), None)),
            ),
            (
                held_only.id,
                ApprovalStatus::Pending,
                Some((held_only.id, "bob".to_owned(), t0())),
                None,
            ),
            (neither.id, ApprovalStatus::Approved, None, None),
        ]
    );
    // The second vote settles the request, and its answer still shows its holder.
    let settled = decide_as(
        &store,
        held_only.id,
        "bob",
        DecisionKind::Approve,
        &manager("bob"),
    )
    .await
    .unwrap();
    assert_eq!(settled.approval.status, ApprovalStatus::Approved);
    assert_eq!(
        settled.assignment.map(|h| h.assignee).as_deref(),
        Some("bob")
    );
    let (held, slas) = store
        .assignments_and_slas(&[both.id, sla_only.id])
        .await
        .unwrap();
    assert_eq!((held.len(), slas.len()), (1, 2));
}

/// An approving decision's data goes through the caller's form check inside the
/// decision's transaction, with the request and the snapshot its execution is pinned
/// to: a refusal (invalid data, or a definition not at hand) changes nothing; accepted,
/// the checked data is what is recorded. A rejection is not checked.
pub async fn decisions_check_their_form_in_their_transaction(store: Arc<dyn Store>) {
    use crate::decision_batch::DecideRequest;
    use crate::{FormCheck, FormRefusal};
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 1, None).await;
    let (_, rejected) = paused_at_approval(&store, &w, 1, None).await;
    let pinned = e.snapshot_id.clone();
    let form: FormCheck = Arc::new(move |request, snapshot_id, data| {
        assert_eq!(
            snapshot_id, pinned,
            "checked against the execution's snapshot"
        );
        if data.get("code").is_none() {
            return Err(FormRefusal::Invalid(vec![
                tollgate_model::form::FormProblem {
                    path: "data.code".into(),
                    message: "is required".into(),
                },
            ]));
        }
        let mut data = data;
        data["step"] = json!(request.step_id);
        Ok(data)
    });
    let unloaded: FormCheck =
        Arc::new(|_, snapshot_id, _| Err(FormRefusal::Unloaded(snapshot_id.to_owned())));
    let request = |id, data, form: &FormCheck| {
        let mut d = decision("ann", DecisionKind::Approve);
        d.data = data;
        DecideRequest::new(
            id,
            d,
            &manager("ann"),
            &lease("api", t0() + secs(30)),
            t0(),
            None,
        )
        .with_form(Some(form.clone()))
    };

    let invalid = store
        .decide_request(request(approval.id, json!({}), &form))
        .await;
    assert!(
        matches!(&invalid, Err(Error::Form(FormRefusal::Invalid(p))) if p[0].path == "data.code"),
        "{invalid:?}"
    );
    let not_at_hand = store
        .decide_request(request(approval.id, json!({"code": 1}), &unloaded))
        .await;
    assert!(
        matches!(&not_at_hand, Err(Error::Form(FormRefusal::Unloaded(s))) if *s == e.snapshot_id),
        "{not_at_hand:?}"
    );
    let untouched = store.get_approval(approval.id).await.unwrap();
    assert_eq!(
        (untouched.status, untouched.decisions.len()),
        (ApprovalStatus::Pending, 0)
    );
    assert_eq!(
        store.get_execution(e.id).await.unwrap().status,
        ExecutionStatus::Paused
    );

    let decided = store
        .decide_request(request(approval.id, json!({"code": 1}), &form))
        .await
        .unwrap();
    let recorded = json!({"code": 1, "step": approval.step_id});
    assert_eq!(decided.approval.decisions[0].data, recorded);
    assert_eq!(
        store.get_approval(approval.id).await.unwrap().decisions[0].data,
        recorded
    );
    assert!(decided.claimed);

    let mut reject = request(rejected.id, json!({"any": true}), &unloaded);
    reject.decision = decision("ann", DecisionKind::Reject);
    let decided = store.decide_request(reject).await.unwrap();
    assert_eq!(decided.approval.status, ApprovalStatus::Rejected);
}

/// The ids of the first ten requests `f` lists.
async fn listed(store: &Arc<dyn Store>, f: ApprovalFilter) -> Vec<Uuid> {
    store
        .list_approvals(&f, &PageRequest::first(10))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|a| a.id)
        .collect()
}

/// The filters a bulk decision selects by: the execution's workflow, the step, and how
/// old the request is.
pub async fn approval_lists_filter_by_workflow_step_and_age(store: Arc<dyn Store>) {
    let orders = workflow(&store, "orders", "1", "order.created").await;
    let refunds = workflow(&store, "refunds", "1", "refund.created").await;
    let (_, a1) = paused_at_approval(&store, &orders, 1, None).await;
    let (_, a2) = paused_at_approval(&store, &orders, 1, None).await;
    let (_, a3) = paused_at_approval(&store, &refunds, 1, None).await;
    let list = |f: ApprovalFilter| listed(&store, f);
    let by_workflow = |key: &str| ApprovalFilter {
        workflow_key: Some(key.into()),
        ..Default::default()
    };
    assert_eq!(list(by_workflow("orders")).await, [a2.id, a1.id]);
    assert_eq!(list(by_workflow("refunds")).await, [a3.id]);
    assert!(list(by_workflow("nope")).await.is_empty());
    let by_step = |step: &str| ApprovalFilter {
        step_id: Some(step.into()),
        ..Default::default()
    };
    assert_eq!(list(by_step("gate")).await.len(), 3);
    assert!(list(by_step("other")).await.is_empty());
    let before = |t| ApprovalFilter {
        requested_before: Some(t),
        ..Default::default()
    };
    assert!(
        list(before(t0())).await.is_empty(),
        "made at t0, not before"
    );
    assert_eq!(list(before(t0() + secs(1))).await.len(), 3);
    assert_eq!(
        list(ApprovalFilter {
            workflow_key: Some("refunds".into()),
            step_id: Some("gate".into()),
            requested_before: Some(t0() + secs(1)),
            status: Some(ApprovalStatus::Pending),
            ..Default::default()
        })
        .await,
        [a3.id],
        "the conditions hold together"
    );
}

pub async fn approval_lists_filter_by_decider(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (_, a1) = paused_at_approval(&store, &w, 2, None).await;
    let (_, a2) = paused_at_approval(&store, &w, 1, None).await;
    store
        .decide(
            a2.id,
            decision("bob", DecisionKind::Reject),
            &manager("bob"),
            &lease("api", t0()),
            t0(),
            None,
        )
        .await
        .unwrap();

    let list = |f: ApprovalFilter| listed(&store, f);
    assert_eq!(
        list(ApprovalFilter::default()).await,
        [a2.id, a1.id],
        "newest first"
    );
    assert_eq!(
        list(ApprovalFilter {
            status: Some(ApprovalStatus::Pending),
            ..Default::default()
        })
        .await,
        [a1.id]
    );
    assert_eq!(
        list(ApprovalFilter {
            role: Some("manager".into()),
            ..Default::default()
        })
        .await
        .len(),
        2
    );
    assert_eq!(
        list(ApprovalFilter {
            execution_id: Some(a1.execution_id),
            ..Default::default()
        })
        .await,
        [a1.id]
    );

    let ann = manager("ann");
    let outsider = Principal {
        subject: "zed".into(),
        roles: vec!["fraud_analyst".into()],
    };
    let requester = Principal {
        subject: "shop".into(),
        roles: vec!["manager".into()],
    };
    assert_eq!(
        list(ApprovalFilter {
            decidable_by: Some(ann.clone()),
            ..Default::default()
        })
        .await,
        [a1.id]
    );
    assert!(list(ApprovalFilter {
        decidable_by: Some(outsider),
        ..Default::default()
    })
    .await
    .is_empty());
    assert!(
        list(ApprovalFilter {
            decidable_by: Some(requester),
            ..Default::default()
        })
        .await
        .is_empty(),
        "no self-approval"
    );
    store
        .decide(
            a1.id,
            decision("ann", DecisionKind::Approve),
            &ann,
            &lease("api", t0()),
            t0(),
            None,
        )
        .await
        .unwrap();
    assert!(
        list(ApprovalFilter {
            decidable_by: Some(ann),
            ..Default::default()
        })
        .await
        .is_empty(),
        "already approved by ann"
    );

    let page = store
        .list_approvals(&ApprovalFilter::default(), &PageRequest::first(1))
        .await
        .unwrap();
    let rest = store
        .list_approvals(
            &ApprovalFilter::default(),
            &PageRequest::after(1, page.next_cursor.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(rest.items.iter().map(|a| a.id).collect::<Vec<_>>(), [a1.id]);
}

pub async fn finishing_closes_open_approvals(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    // An execution resumed by a timer whose approval was expired, then failing: nothing stays pending.
    let (e, a) = paused_at_approval(&store, &w, 1, Some(t0())).await;
    let claimed = store
        .claim_due_gates(t0(), &lease("w2", t0() + secs(30)), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        store.get_approval(a.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
    let failed = commit(
        &claimed[0],
        "w2",
        claimed[0].version,
        Transition::Finish {
            status: ExecutionStatus::Failed,
            error: Some(ExecutionError {
                kind: ErrorKind::StepFailed,
                message: "boom".into(),
            }),
        },
    );
    store.commit_step(failed).await.unwrap();
    let ended = store.get_execution(e.id).await.unwrap();
    assert_eq!(
        (ended.status, ended.gate.clone(), ended.wake.clone()),
        (ExecutionStatus::Failed, None, None)
    );

    // An execution that ends while a request of its own is still pending closes it, in
    // the ending's commit (the batched hot path on the SQL backends).
    let r = running(&store, &w, "w1").await;
    let open = approval_for(&r, 1, None);
    store
        .commit_step(commit(
            &r,
            "w1",
            r.version,
            Transition::Gate {
                gate: gate(PauseReason::Manual, None),
                approval: Some(Box::new(open.clone())),
            },
        ))
        .await
        .unwrap();
    let resumed = store
        .resume_manual(r.id, None, json!({}), &lease("w1", t0() + secs(30)), t0())
        .await
        .unwrap();
    assert_eq!(
        store.get_approval(open.id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    store
        .commit_step(commit(
            &resumed,
            "w1",
            resumed.version,
            Transition::Finish {
                status: ExecutionStatus::Completed,
                error: None,
            },
        ))
        .await
        .unwrap();
    let closed = store.get_approval(open.id).await.unwrap();
    assert_eq!(
        (closed.status, closed.decided_at),
        (ApprovalStatus::Cancelled, Some(t0()))
    );

    // A Finish with a non-terminal status is refused.
    let r = running(&store, &w, "w1").await;
    let bogus = commit(
        &r,
        "w1",
        r.version,
        Transition::Finish {
            status: ExecutionStatus::Waiting,
            error: None,
        },
    );
    assert!(store.commit_step(bogus).await.is_err());
}
