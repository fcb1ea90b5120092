//! [`ExecutionStore`](crate::ExecutionStore) over time: due gates, leases and their
//! fencing, timeouts, and an operator's pause, resume and cancel.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};
use tollgate_model::records::{
    ApprovalStatus, Cursor, DecisionKind, ExecutionError, Lease, Migration, ResumeTrigger, Retry,
    StepStatus, Wake,
};
use tollgate_model::{ErrorKind, ExecutionStatus, PauseReason};
use uuid::Uuid;

use super::fixtures::{
    approval_for, commit, decide_as, gate, lease, manager, paused_at_approval, running, secs,
    step_record, t0, undo_of, waiting, workflow,
};
use crate::{Overdue, Store, Transition};

pub async fn due_gates_are_claimed_once_across_claimers(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let mut approvals = Vec::new();
    let mut expected = HashSet::new();
    for i in 0..12 {
        let (e, a) = paused_at_approval(&store, &w, 1, Some(t0() + secs(i))).await;
        approvals.push(a.id);
        expected.insert(e.id);
        let e = waiting(&store, &w, Some(t0() + secs(i))).await;
        expected.insert(e.id);
    }
    let (not_due, _) = paused_at_approval(&store, &w, 1, Some(t0() + secs(3600))).await;
    let no_deadline = waiting(&store, &w, None).await;

    let now = t0() + secs(60);
    let mut workers = Vec::new();
    for worker in ["a", "b", "c"] {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_due_gates(now, &lease(worker, now + secs(30)), 5)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch);
            }
        }));
    }
    let mut seen = HashSet::new();
    for worker in workers {
        for e in worker.await.unwrap() {
            assert!(seen.insert(e.id), "{} claimed twice", e.id);
            assert_eq!(e.status, ExecutionStatus::Running);
            match e.gate.as_ref().map(|g| g.reason) {
                Some(PauseReason::Approval) => assert!(matches!(
                    e.wake,
                    Some(Wake::Approval {
                        outcome: ApprovalStatus::Expired,
                        ..
                    })
                )),
                Some(PauseReason::Event) => {
                    assert!(matches!(e.wake, Some(Wake::WaitTimeout { .. })));
                }
                other => panic!("gate {other:?}"),
            }
            let audit = store.list_resume_requests(e.id).await.unwrap();
            assert_eq!(audit.len(), 1);
            assert_eq!(audit[0].trigger, ResumeTrigger::Timer);
        }
    }
    assert_eq!(seen, expected);
    for id in approvals {
        assert_eq!(
            store.get_approval(id).await.unwrap().status,
            ApprovalStatus::Expired
        );
    }
    assert_eq!(
        store.get_execution(not_due.id).await.unwrap().status,
        ExecutionStatus::Paused
    );
    assert_eq!(
        store.get_execution(no_deadline.id).await.unwrap().status,
        ExecutionStatus::Waiting
    );
}

pub async fn expired_leases_are_reclaimed_and_old_owner_fenced(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    assert!(store
        .claim_expired_leases(t0() + secs(29), &lease("w2", t0() + secs(90)), 10)
        .await
        .unwrap()
        .is_empty());
    store
        .renew_lease(e.id, "w1", t0() + secs(40))
        .await
        .unwrap();
    assert!(store
        .renew_lease(e.id, "w2", t0() + secs(40))
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store
        .claim_expired_leases(t0() + secs(39), &lease("w2", t0() + secs(90)), 10)
        .await
        .unwrap()
        .is_empty());

    let claimed = store
        .claim_expired_leases(t0() + secs(41), &lease("w2", t0() + secs(90)), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, e.id);
    assert_eq!(
        claimed[0].lease.as_ref().and_then(|l| l.owner.as_deref()),
        Some("w2")
    );
    assert_eq!(claimed[0].cursor, e.cursor, "continues from its cursor");

    // The dead worker comes back: every write it tries is refused.
    assert!(store
        .commit_step(commit(&e, "w1", e.version, Transition::Continue))
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store
        .renew_lease(e.id, "w1", t0() + secs(99))
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store
        .begin_step(
            e.id,
            "w1",
            claimed[0].version,
            step_record(e.id, "x", StepStatus::Running),
            t0()
        )
        .await
        .unwrap_err()
        .is_conflict());
    store
        .commit_step(commit(
            &claimed[0],
            "w2",
            claimed[0].version,
            Transition::Continue,
        ))
        .await
        .unwrap();
}

pub async fn released_lease_waits_until_its_time(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    let v = store
        .commit_step(commit(
            &e,
            "w1",
            e.version,
            Transition::Release {
                at: t0() + secs(10),
            },
        ))
        .await
        .unwrap()
        .version;
    let released = store.get_execution(e.id).await.unwrap();
    assert_eq!(
        (released.status, released.version),
        (ExecutionStatus::Running, v)
    );
    assert_eq!(
        released.lease,
        Some(Lease {
            owner: None,
            expires_at: t0() + secs(10)
        })
    );
    assert!(store
        .claim_expired_leases(t0() + secs(9), &lease("w2", t0() + secs(60)), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .claim_expired_leases(t0() + secs(10), &lease("w2", t0() + secs(60)), 10)
            .await
            .unwrap()
            .len(),
        1
    );

    let other = running(&store, &w, "w3").await;
    store.release_lease(other.id, "w3", t0()).await.unwrap();
    assert!(
        store
            .release_lease(other.id, "w3", t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "no longer the owner"
    );
    assert_eq!(
        store
            .claim_expired_leases(t0(), &lease("w4", t0() + secs(60)), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn overdue_executions_time_out_unless_held(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (gated, approval) = paused_at_approval(&store, &w, 1, None).await;
    let held = running(&store, &w, "w1").await;
    // Executions with a workflow deadline (set at creation by the engine).
    let mut with_deadline = running(&store, &w, "w1").await;
    with_deadline.id = Uuid::now_v7();
    with_deadline.deadline = Some(t0() + secs(10));
    let live = store.create_execution(with_deadline.clone()).await.unwrap();
    let mut gated_d = with_deadline.clone();
    gated_d.id = Uuid::now_v7();
    let gated_d = store.create_execution(gated_d).await.unwrap();
    let a = approval_for(&gated_d, 1, None);
    let mut g = gate(PauseReason::Approval, None);
    g.approval_id = Some(a.id);
    store
        .commit_step(commit(
            &gated_d,
            "w1",
            gated_d.version,
            Transition::Gate {
                gate: g,
                approval: Some(Box::new(a.clone())),
            },
        ))
        .await
        .unwrap();

    assert!(store
        .time_out_overdue(t0() + secs(9), 10)
        .await
        .unwrap()
        .is_empty());
    let ended = store.time_out_overdue(t0() + secs(11), 10).await.unwrap();
    assert_eq!(
        ended.iter().map(|e| e.id).collect::<Vec<_>>(),
        [gated_d.id],
        "the live lease protects the running one"
    );
    let ended = store.get_execution(gated_d.id).await.unwrap();
    assert_eq!(ended.status, ExecutionStatus::TimedOut);
    assert_eq!(
        ended.error.as_ref().map(|e| e.kind),
        Some(ErrorKind::TimedOut)
    );
    assert_eq!(
        store.get_approval(a.id).await.unwrap().status,
        ApprovalStatus::Expired
    );
    assert_eq!(
        store.list_resume_requests(gated_d.id).await.unwrap()[0].trigger,
        ResumeTrigger::Timer
    );

    // Once its lease lapses, the running one times out too.
    let ended = store.time_out_overdue(t0() + secs(31), 10).await.unwrap();
    assert_eq!(ended.iter().map(|e| e.id).collect::<Vec<_>>(), [live.id]);
    // Executions without a deadline are untouched.
    assert_eq!(
        store.get_execution(gated.id).await.unwrap().status,
        ExecutionStatus::Paused
    );
    assert_eq!(
        store.get_approval(approval.id).await.unwrap().status,
        ApprovalStatus::Pending
    );
    assert_eq!(
        store.get_execution(held.id).await.unwrap().status,
        ExecutionStatus::Running
    );
}

/// A commit flagged `refuse_if_pause_requested` (steps run past an unstored boundary) is
/// refused while a pause is requested, whatever its transition and whichever path the
/// backend takes for it, and changes nothing; without a request it lands as any other.
pub async fn commits_past_a_boundary_are_refused_while_a_pause_is_requested(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let finish = Transition::Finish {
        status: ExecutionStatus::Completed,
        error: None,
    };
    let gated = Transition::Gate {
        gate: gate(PauseReason::Event, None),
        approval: None,
    };
    let release = Transition::Release {
        at: t0() + secs(60),
    };
    for (name, transition, with_effect) in [
        ("continue", Transition::Continue, false),
        ("finish", finish.clone(), false),
        ("release", release, false),
        ("gate", gated, false),
        ("continue with an effect", Transition::Continue, true),
        ("finish with an effect", finish, true),
    ] {
        let e = running(&store, &w, "w1").await;
        let flagged = |e: &tollgate_model::records::Execution| {
            let mut c = commit(e, "w1", e.version, transition.clone());
            c.refuse_if_pause_requested = true;
            c.records = vec![step_record(e.id, "after", StepStatus::Completed)];
            c.context = json!({"ran": "past the boundary"});
            if with_effect {
                c.effects = vec![crate::Effect::UpsertRecord {
                    entity: "boundary".into(),
                    entity_id: e.id.to_string(),
                    data: json!({"n": 1}),
                    merge: false,
                }];
            }
            c
        };
        store
            .request_pause(e.id, Some("ops"), None, t0())
            .await
            .unwrap();
        let before = store.get_execution(e.id).await.unwrap();
        let refused = store.commit_step(flagged(&before)).await.unwrap_err();
        assert!(
            refused.is_conflict() && refused.to_string().contains("pause request"),
            "{name}: {refused}"
        );
        let after = store.get_execution(e.id).await.unwrap();
        assert_eq!(
            (
                after.status,
                after.version,
                after.pause_requested,
                &after.context
            ),
            (
                ExecutionStatus::Running,
                before.version,
                true,
                &before.context
            ),
            "{name}: nothing changed"
        );
        assert!(
            store.list_steps(e.id).await.unwrap().is_empty(),
            "{name}: no record"
        );
        assert!(
            store
                .get_record("boundary", &e.id.to_string())
                .await
                .unwrap_err()
                .is_not_found(),
            "{name}: no effect"
        );

        // Unflagged, the same commit lands and reports the request.
        let mut plain = flagged(&after);
        plain.refuse_if_pause_requested = false;
        store.commit_step(plain).await.unwrap();
        assert_eq!(store.list_steps(e.id).await.unwrap().len(), 1, "{name}");

        // Without a pause request the flag changes nothing.
        let other = running(&store, &w, "w1").await;
        store.commit_step(flagged(&other)).await.unwrap();
        let landed = store.get_execution(other.id).await.unwrap();
        assert_eq!(
            (landed.version, &landed.context),
            (other.version + 1, &json!({"ran": "past the boundary"})),
            "{name}"
        );
    }
}

pub async fn manual_pause_resume_and_cancel(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    let requested = store
        .request_pause(e.id, Some("ops"), Some("check"), t0())
        .await
        .unwrap();
    assert_eq!(
        (requested.status, requested.pause_requested),
        (ExecutionStatus::Running, true)
    );
    assert_eq!(
        requested.version, e.version,
        "a pause request does not fence the worker"
    );
    // The worker's next commit succeeds and tells it a pause is wanted.
    let step_done = store
        .commit_step(commit(&e, "w1", e.version, Transition::Continue))
        .await
        .unwrap();
    assert!(step_done.pause_requested);
    let requested = store.get_execution(e.id).await.unwrap();

    // The worker notices at the step boundary and stops at a manual gate.
    let mut g = gate(PauseReason::Manual, None);
    g.note = Some("check".into());
    store
        .commit_step(commit(
            &requested,
            "w1",
            requested.version,
            Transition::Gate {
                gate: g,
                approval: None,
            },
        ))
        .await
        .unwrap();
    let paused = store.get_execution(e.id).await.unwrap();
    assert_eq!(
        (paused.status, paused.pause_requested),
        (ExecutionStatus::Paused, false)
    );
    assert!(
        store
            .request_pause(e.id, None, None, t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "not running"
    );

    let resumed = store
        .resume_manual(
            e.id,
            Some("ops"),
            json!({"ok": true}),
            &lease("api", t0() + secs(30)),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(resumed.status, ExecutionStatus::Running);
    assert_eq!(
        resumed.wake,
        Some(Wake::Manual {
            data: json!({"ok": true}),
            actor: Some("ops".into())
        })
    );
    assert!(
        store
            .resume_manual(e.id, None, Value::Null, &lease("api", t0()), t0())
            .await
            .unwrap_err()
            .is_conflict(),
        "running"
    );

    // An execution no worker holds pauses at once.
    let idle = running(&store, &w, "w1").await;
    store.release_lease(idle.id, "w1", t0()).await.unwrap();
    let paused_now = store
        .request_pause(idle.id, None, None, t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(paused_now.status, ExecutionStatus::Paused);
    assert_eq!(
        paused_now
            .gate
            .as_ref()
            .map(|g| (g.reason, g.step_id.as_str())),
        Some((PauseReason::Manual, "gate"))
    );

    // Approval gates refuse manual resume.
    let (at_gate, approval) = paused_at_approval(&store, &w, 1, None).await;
    assert!(store
        .resume_manual(at_gate.id, None, Value::Null, &lease("api", t0()), t0())
        .await
        .unwrap_err()
        .is_conflict());

    let cancelled = store
        .cancel_execution(at_gate.id, Some("ops"), Some("customer withdrew"), t0())
        .await
        .unwrap();
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    assert_eq!(
        cancelled.error,
        Some(ExecutionError {
            kind: ErrorKind::Cancelled,
            message: "customer withdrew".into()
        })
    );
    assert_eq!(
        store.get_approval(approval.id).await.unwrap().status,
        ApprovalStatus::Cancelled
    );
    assert!(store
        .cancel_execution(at_gate.id, None, None, t0())
        .await
        .unwrap_err()
        .is_conflict());

    // A running execution can be cancelled; its worker's next commit is refused.
    let busy = running(&store, &w, "w1").await;
    store
        .cancel_execution(busy.id, None, None, t0())
        .await
        .unwrap();
    assert!(store
        .commit_step(commit(&busy, "w1", busy.version, Transition::Continue))
        .await
        .unwrap_err()
        .is_conflict());
}

/// Pausing an execution whose decision is stored but not yet acted on (its claimer
/// died) keeps the decision: the execution stays `running` with the pause requested,
/// and whoever takes it over finds the decision's wake signal intact.
pub async fn pauses_keep_a_stored_wake(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (e, approval) = paused_at_approval(&store, &w, 1, None).await;
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
    // The decider's lease (30 s) lapses without a commit: it died.
    let later = t0() + secs(31);
    let paused = store
        .request_pause(e.id, Some("ops"), Some("stuck?"), later)
        .await
        .unwrap();
    assert_eq!(paused.status, ExecutionStatus::Running);
    assert!(paused.pause_requested);
    assert!(
        matches!(paused.wake, Some(Wake::Approval { approval_id, .. }) if approval_id == approval.id),
        "{:?}",
        paused.wake
    );
    assert!(
        store
            .resume_manual(e.id, Some("ops"), json!({}), &lease("ops", later), later)
            .await
            .unwrap_err()
            .is_conflict(),
        "not manually paused, so nothing to resume over the decision"
    );
    let taken = store
        .claim_expired_leases(later, &lease("w2", later + secs(30)), 10)
        .await
        .unwrap();
    assert_eq!(
        taken.len(),
        1,
        "{:?}",
        store.get_execution(e.id).await.unwrap()
    );
    assert!(taken[0].pause_requested);
    assert_eq!(taken[0].wake, decided.execution.wake);
}

/// Gates past their deadline that no worker claimed are counted with the earliest
/// deadline, and pending requests are counted; a claim clears both.
pub async fn overdue_gates_and_pending_approvals_are_counted(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    assert_eq!(store.overdue_gates(t0()).await.unwrap(), Overdue::default());
    assert_eq!(store.count_pending_approvals().await.unwrap(), 0);
    paused_at_approval(&store, &w, 1, Some(t0() + secs(10))).await;
    paused_at_approval(&store, &w, 1, None).await;
    waiting(&store, &w, Some(t0() + secs(20))).await;
    waiting(&store, &w, Some(t0() + secs(3600))).await;
    running(&store, &w, "w1").await;
    assert_eq!(store.count_pending_approvals().await.unwrap(), 2);
    let now = t0() + secs(60);
    assert_eq!(
        store.overdue_gates(now).await.unwrap(),
        Overdue {
            count: 2,
            oldest_deadline: Some(t0() + secs(10)),
        }
    );
    assert_eq!(
        store.overdue_gates(t0() + secs(15)).await.unwrap().count,
        1,
        "only deadlines at or before now"
    );
    let claimed = store
        .claim_due_gates(now, &lease("w2", now + secs(30)), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert_eq!(store.overdue_gates(now).await.unwrap(), Overdue::default());
    assert_eq!(
        store.count_pending_approvals().await.unwrap(),
        1,
        "the expired request is no longer pending"
    );
}

/// The context undo trail grows with each commit's entries (the hot path, a gate, a
/// failure, a retry), is read back oldest first, and is dropped when the execution
/// completes.
pub async fn the_context_trail_grows_with_commits_until_completion(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    assert_eq!(store.context_trail(e.id).await.unwrap(), []);
    assert!(store
        .context_trail(Uuid::now_v7())
        .await
        .unwrap_err()
        .is_not_found());
    let mut on = commit(&e, "w1", e.version, Transition::Continue);
    on.undo = vec![undo_of("a", 1), undo_of("b", 1)];
    store.commit_step(on).await.unwrap();
    let mut nothing = commit(&e, "w1", e.version + 1, Transition::Continue);
    nothing.undo = Vec::new();
    store.commit_step(nothing).await.unwrap();
    let mut fail = commit(
        &e,
        "w1",
        e.version + 2,
        Transition::Finish {
            status: ExecutionStatus::Failed,
            error: Some(ExecutionError {
                kind: ErrorKind::StepFailed,
                message: "step `c` failed".into(),
            }),
        },
    );
    fail.undo = vec![undo_of("c", 1)];
    store.commit_step(fail).await.unwrap();
    let failed = store.get_execution(e.id).await.unwrap();
    assert_eq!(
        store.context_trail(e.id).await.unwrap(),
        [undo_of("a", 1), undo_of("b", 1), undo_of("c", 1)]
    );
    let mut rewound = undo_of("c", 1);
    rewound.step_id = None;
    let retry = Retry {
        expected_version: failed.version,
        cursor: Cursor::new("a", 2),
        context: json!({}),
        undo: vec![rewound.clone()],
        deadline: None,
        audit: json!({"command": "retry", "reason": "again"}),
    };
    let retried = store
        .retry_execution(
            e.id,
            &retry,
            Some("ops"),
            &lease("w1", t0() + secs(30)),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.context_trail(e.id).await.unwrap(),
        [undo_of("a", 1), undo_of("b", 1), undo_of("c", 1), rewound]
    );
    let mut gated = commit(
        &retried,
        "w1",
        retried.version,
        Transition::Gate {
            gate: gate(PauseReason::Manual, None),
            approval: None,
        },
    );
    gated.undo = vec![undo_of("a", 2)];
    store.commit_step(gated).await.unwrap();
    assert_eq!(store.context_trail(e.id).await.unwrap().len(), 5);
    let paused = store.get_execution(e.id).await.unwrap();
    let resumed = store
        .resume_manual(
            e.id,
            Some("ops"),
            json!({}),
            &lease("w1", t0() + secs(30)),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(resumed.version, paused.version + 1);
    let mut done = commit(
        &resumed,
        "w1",
        resumed.version,
        Transition::Finish {
            status: ExecutionStatus::Completed,
            error: None,
        },
    );
    done.undo = vec![undo_of("d", 1)];
    store.commit_step(done).await.unwrap();
    assert_eq!(
        store.context_trail(e.id).await.unwrap(),
        [],
        "a completed execution cannot be retried: its trail is dropped"
    );
    let other = running(&store, &w, "w1").await;
    let mut on = commit(&other, "w1", other.version, Transition::Continue);
    on.undo = vec![undo_of("a", 1)];
    store.commit_step(on).await.unwrap();
    assert_eq!(store.context_trail(other.id).await.unwrap().len(), 1);
    store
        .cancel_execution(other.id, Some("ops"), None, t0())
        .await
        .unwrap();
    assert_eq!(
        store.context_trail(other.id).await.unwrap(),
        [],
        "a cancelled execution cannot be retried: its trail is dropped"
    );
}

pub async fn retry_restarts_only_an_unchanged_failed_execution(store: Arc<dyn Store>) {
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    let fail = Transition::Finish {
        status: ExecutionStatus::Failed,
        error: Some(ExecutionError {
            kind: ErrorKind::StepFailed,
            message: "step `gate` failed: 503".into(),
        }),
    };
    store
        .commit_step(commit(&e, "w1", e.version, fail))
        .await
        .unwrap();
    let failed = store.get_execution(e.id).await.unwrap();
    assert_eq!(failed.status, ExecutionStatus::Failed);
    let retry = Retry {
        expected_version: failed.version,
        cursor: Cursor::new("gate", 2),
        context: json!({"order": {"id": "o-1"}, "retry": {"from_step": "gate", "count": 1}}),
        undo: Vec::new(),
        deadline: Some(t0() + secs(3600)),
        audit: json!({"command": "retry", "reason": "ledger is back"}),
    };

    // Planned against an older version: refused, nothing changed.
    let stale = Retry {
        expected_version: failed.version - 1,
        ..retry.clone()
    };
    assert!(store
        .retry_execution(
            e.id,
            &stale,
            Some("ops"),
            &lease("api", t0() + secs(30)),
            t0()
        )
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(store.get_execution(e.id).await.unwrap(), failed);

    let now = t0() + secs(5);
    let retried = store
        .retry_execution(
            e.id,
            &retry,
            Some("ops"),
            &lease("api", now + secs(30)),
            now,
        )
        .await
        .unwrap();
    assert_eq!(retried, store.get_execution(e.id).await.unwrap());
    assert_eq!(retried.status, ExecutionStatus::Running);
    assert_eq!(retried.cursor, Some(Cursor::new("gate", 2)));
    assert_eq!(retried.context, retry.context);
    assert_eq!(retried.deadline, retry.deadline);
    assert_eq!((retried.error.as_ref(), retried.completed_at), (None, None));
    assert_eq!(retried.version, failed.version + 1);
    assert_eq!(
        retried.lease,
        Some(Lease {
            owner: Some("api".into()),
            expires_at: now + secs(30)
        })
    );
    let audit = store.list_resume_requests(e.id).await.unwrap();
    let row = audit.last().unwrap();
    assert_eq!(
        (row.trigger, row.actor.as_deref(), &row.data),
        (ResumeTrigger::Manual, Some("ops"), &retry.audit)
    );

    // The same retry again (a second operator, same plan): the first one won.
    let again = Retry {
        expected_version: retried.version,
        ..retry.clone()
    };
    assert!(store
        .retry_execution(e.id, &again, Some("ops2"), &lease("api", now), now)
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(
        store.list_resume_requests(e.id).await.unwrap().len(),
        audit.len()
    );

    // The retried execution's worker commits as any worker does.
    store
        .commit_step(commit(
            &retried,
            "api",
            retried.version,
            Transition::Continue,
        ))
        .await
        .unwrap();

    // Completed and cancelled executions are never retried.
    let done = running(&store, &w, "w1").await;
    let finish = Transition::Finish {
        status: ExecutionStatus::Completed,
        error: None,
    };
    store
        .commit_step(commit(&done, "w1", done.version, finish))
        .await
        .unwrap();
    let done = store.get_execution(done.id).await.unwrap();
    let attempt = Retry {
        expected_version: done.version,
        ..retry.clone()
    };
    assert!(store
        .retry_execution(done.id, &attempt, None, &lease("api", now), now)
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(store.get_execution(done.id).await.unwrap(), done);
}

pub async fn migration_moves_a_gated_execution_and_keeps_its_gate(store: Arc<dyn Store>) {
    let v1 = workflow(&store, "orders", "1", "order.created").await;
    let v2 = workflow(&store, "orders", "2", "order.created").await;
    let (paused, approval) = paused_at_approval(&store, &v1, 1, Some(t0() + secs(3600))).await;
    // A request is decided under its execution's pinned definition: v1 until it moves.
    let pin = |snapshot_id: &str| crate::ApprovalPin {
        execution_id: paused.id,
        step_id: approval.step_id.clone(),
        snapshot_id: snapshot_id.to_owned(),
    };
    assert_eq!(
        store.approval_pin(approval.id).await.unwrap(),
        pin(&v1.snapshot_id)
    );
    assert!(store
        .approval_pin(uuid::Uuid::now_v7())
        .await
        .unwrap_err()
        .is_not_found());
    let mut visits = paused.visits.clone();
    visits.insert("gate".into(), 1);
    let migration = Migration {
        expected_version: paused.version,
        workflow_id: v2.id,
        workflow_version: "2".into(),
        snapshot_id: v2.snapshot_id.clone(),
        gate_step: "review".into(),
        audit: json!({"command": "migrate", "to_version": "2"}),
    };

    let stale = Migration {
        expected_version: paused.version - 1,
        ..migration.clone()
    };
    assert!(store
        .migrate_execution(paused.id, &stale, Some("ops"), t0())
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(store.get_execution(paused.id).await.unwrap(), paused);

    let moved = store
        .migrate_execution(paused.id, &migration, Some("ops"), t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(moved, store.get_execution(paused.id).await.unwrap());
    assert_eq!(
        (
            moved.workflow_id,
            moved.workflow_version.as_str(),
            moved.snapshot_id.as_str()
        ),
        (v2.id, "2", v2.snapshot_id.as_str())
    );
    assert_eq!(
        store.approval_pin(approval.id).await.unwrap(),
        pin(&v2.snapshot_id)
    );
    assert_eq!(moved.status, ExecutionStatus::Paused);
    assert_eq!(moved.version, paused.version + 1);
    let (before, after) = (paused.gate.clone().unwrap(), moved.gate.clone().unwrap());
    assert_eq!(after.step_id, "review");
    assert_eq!(
        (after.approval_id, after.deadline, after.visit, after.reason),
        (
            before.approval_id,
            before.deadline,
            before.visit,
            before.reason
        ),
        "the gate carries over"
    );
    let audit = store.list_resume_requests(paused.id).await.unwrap();
    let row = audit.last().unwrap();
    assert_eq!(
        (row.trigger, row.actor.as_deref(), &row.data),
        (ResumeTrigger::Manual, Some("ops"), &migration.audit)
    );
    // The pending approval is the same request and still decides the execution.
    let decided = decide_as(
        &store,
        approval.id,
        "ann",
        DecisionKind::Approve,
        &manager("ann"),
    )
    .await
    .unwrap();
    assert!(decided.claimed);
    let claimed = store.get_execution(paused.id).await.unwrap();
    assert_eq!(claimed.status, ExecutionStatus::Running);
    assert_eq!(claimed.snapshot_id, v2.snapshot_id);

    // Only gated executions move.
    let again = Migration {
        expected_version: claimed.version,
        ..migration
    };
    assert!(store
        .migrate_execution(paused.id, &again, None, t0())
        .await
        .unwrap_err()
        .is_conflict());
}
