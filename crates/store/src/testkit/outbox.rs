//! The outbox ([`NotificationStore`](crate::NotificationStore)'s claims and settles) and
//! approval ladders ([`ApprovalStore::fire_due_rungs`](crate::ApprovalStore)).

use std::sync::Arc;

use tollgate_model::records::{
    ApprovalRequest, ApprovalRung, DecisionKind, Execution, Notification, Timestamp,
};
use tollgate_model::PauseReason;
use uuid::Uuid;

use super::fixtures::{approval_for, commit, decision, gate, lease, running, secs, t0, workflow};
use crate::{Effect, NotificationFilter, PageRequest, Settle, Store, Transition};

/// An execution stopped at an approval whose commit also queued `notify` and scheduled
/// `rungs`, as the engine does.
async fn gated_with(
    store: &Arc<dyn Store>,
    notify: Vec<Notification>,
    rungs: impl FnOnce(&Execution, &ApprovalRequest) -> Vec<ApprovalRung>,
) -> (Execution, ApprovalRequest) {
    let w = workflow(store, "orders", "1", "order.created").await;
    let e = running(store, &w, "w1").await;
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
    c.effects = notify
        .into_iter()
        .map(|n| {
            Effect::Notify(Notification {
                execution_id: e.id,
                approval_id: Some(approval.id),
                ..n
            })
        })
        .chain(rungs(&e, &approval).into_iter().map(Effect::Rung))
        .collect();
    store.commit_step(c).await.unwrap();
    (store.get_execution(e.id).await.unwrap(), approval)
}

fn email(to: &str, at: Timestamp) -> Notification {
    let mut n = Notification::queued(Uuid::nil(), "gate", "approval", "email", at);
    n.recipients = vec![to.into()];
    n.subject = Some("Approve order o-1".into());
    n.link_user = Some("role:manager".into());
    n
}

async fn notifications(store: &Arc<dyn Store>, e: &Execution) -> Vec<Notification> {
    store
        .list_notifications(
            &NotificationFilter {
                execution_id: Some(e.id),
            },
            &PageRequest::first(50),
        )
        .await
        .unwrap()
        .items
}

pub async fn the_outbox_hands_each_notification_to_one_sender_until_it_is_settled(
    store: Arc<dyn Store>,
) {
    let (e, a) = gated_with(
        &store,
        vec![
            email("ann@example.com", t0()),
            email("bob@example.com", t0()),
        ],
        |_, _| Vec::new(),
    )
    .await;
    let queued = notifications(&store, &e).await;
    assert_eq!(queued.len(), 2, "committed with the gate");
    assert!(queued.iter().all(|n| n.status == "queued"
        && n.kind == "approval"
        && n.approval_id == Some(a.id)
        && n.attempts == 0
        && n.next_attempt_at == Some(t0())
        && n.subject.as_deref() == Some("Approve order o-1")
        && n.link_user.as_deref() == Some("role:manager")));

    // Not due yet: nothing to claim.
    let early = lease("w1", t0() + secs(60));
    assert!(store
        .claim_notifications(t0() - secs(1), &early, 10)
        .await
        .unwrap()
        .is_empty());
    // One sender at a time: what w1 holds, w2 does not get.
    let w1 = store
        .claim_notifications(t0(), &lease("w1", t0() + secs(60)), 1)
        .await
        .unwrap();
    assert_eq!(w1.len(), 1);
    let w2 = store
        .claim_notifications(t0(), &lease("w2", t0() + secs(60)), 10)
        .await
        .unwrap();
    assert_eq!(w2.len(), 1);
    assert_ne!(w1[0].id, w2[0].id);
    assert!(store
        .claim_notifications(t0() + secs(1), &lease("w3", t0() + secs(61)), 10)
        .await
        .unwrap()
        .is_empty());
    // Only the holder settles.
    assert!(store
        .settle_notification(w1[0].id, "w2", t0(), &Settle::Sent)
        .await
        .unwrap_err()
        .is_conflict());
    assert!(store
        .settle_notification(Uuid::now_v7(), "w1", t0(), &Settle::Sent)
        .await
        .unwrap_err()
        .is_not_found());

    // A failed attempt: counted, explained, due again later, the claim released.
    store
        .settle_notification(
            w1[0].id,
            "w1",
            t0() + secs(2),
            &Settle::Retry {
                at: t0() + secs(30),
                error: "SMTP: connection refused".into(),
            },
        )
        .await
        .unwrap();
    let retried = notifications(&store, &e)
        .await
        .into_iter()
        .find(|n| n.id == w1[0].id)
        .unwrap();
    assert_eq!(
        (
            retried.status.as_str(),
            retried.attempts,
            retried.last_error.as_deref(),
            retried.next_attempt_at
        ),
        (
            "queued",
            1,
            Some("SMTP: connection refused"),
            Some(t0() + secs(30))
        )
    );
    assert!(store
        .claim_notifications(t0() + secs(29), &lease("w3", t0() + secs(90)), 10)
        .await
        .unwrap()
        .is_empty());

    // w2 dies holding its claim: once the claim lapses, another sender takes it (the
    // same id: receivers drop the repeat).
    let again = store
        .claim_notifications(t0() + secs(60), &lease("w3", t0() + secs(120)), 10)
        .await
        .unwrap();
    let mut ids: Vec<Uuid> = again.iter().map(|n| n.id).collect();
    ids.sort();
    let mut both = vec![w1[0].id, w2[0].id];
    both.sort();
    assert_eq!(ids, both, "the retry is due and w2's claim lapsed");
    assert!(store
        .settle_notification(w2[0].id, "w2", t0() + secs(60), &Settle::Sent)
        .await
        .unwrap_err()
        .is_conflict());
    store
        .settle_notification(w1[0].id, "w3", t0() + secs(61), &Settle::Sent)
        .await
        .unwrap();
    store
        .settle_notification(
            w2[0].id,
            "w3",
            t0() + secs(61),
            &Settle::Failed {
                error: "the SMTP server refused it: 550 no such user".into(),
            },
        )
        .await
        .unwrap();
    let done = notifications(&store, &e).await;
    let sent = done.iter().find(|n| n.id == w1[0].id).unwrap();
    assert_eq!(
        (
            sent.status.as_str(),
            sent.attempts,
            sent.sent_at,
            sent.next_attempt_at
        ),
        ("sent", 2, Some(t0() + secs(61)), None)
    );
    let failed = done.iter().find(|n| n.id == w2[0].id).unwrap();
    assert_eq!(
        (
            failed.status.as_str(),
            failed.attempts,
            failed.next_attempt_at
        ),
        ("failed", 1, None)
    );
    assert!(store
        .claim_notifications(t0() + secs(3600), &lease("w3", t0() + secs(3700)), 10)
        .await
        .unwrap()
        .is_empty());
    // Settled is settled.
    assert!(store
        .settle_notification(w1[0].id, "w3", t0() + secs(62), &Settle::Sent)
        .await
        .unwrap_err()
        .is_conflict());
}

fn ladder(e: &Execution, a: &ApprovalRequest) -> Vec<ApprovalRung> {
    let rung = |position: u32, kind: &str, after: i64, roles: Vec<String>| ApprovalRung {
        approval_id: a.id,
        execution_id: e.id,
        position,
        kind: kind.into(),
        due_at: t0() + secs(after),
        add_roles: roles,
        add_users: Vec::new(),
        notify: vec![Notification {
            execution_id: e.id,
            kind: kind.into(),
            ..email("ann@example.com", t0())
        }],
        fired_at: None,
        outcome: None,
    };
    vec![
        rung(0, "reminder", 4 * 3600, Vec::new()),
        rung(1, "escalation", 48 * 3600, vec!["director".into()]),
        rung(2, "reminder", 60 * 3600, Vec::new()),
    ]
}

pub async fn ladder_rungs_fire_once_add_approvers_and_skip_decided_requests(store: Arc<dyn Store>) {
    let mut scheduled = Vec::new();
    let (e, a) = gated_with(&store, Vec::new(), |e, a| {
        scheduled = ladder(e, a);
        scheduled.clone()
    })
    .await;
    let rungs = store.list_rungs(a.id).await.unwrap();
    assert_eq!(rungs, scheduled, "scheduled with the gate");
    assert!(store
        .fire_due_rungs(t0() + secs(3600), 10)
        .await
        .unwrap()
        .is_empty());

    // The reminder: fired once, its message queued, due now.
    let at = t0() + secs(4 * 3600);
    let (one, two) = tokio::join!(store.fire_due_rungs(at, 10), store.fire_due_rungs(at, 10));
    let fired: Vec<ApprovalRung> = one.unwrap().into_iter().chain(two.unwrap()).collect();
    assert_eq!(fired.len(), 1, "each rung fires once across callers");
    assert_eq!(
        (
            fired[0].position,
            fired[0].fired_at,
            fired[0].outcome.as_deref()
        ),
        (0, Some(at), Some("fired"))
    );
    let queued = notifications(&store, &e).await;
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (
            queued[0].kind.as_str(),
            queued[0].status.as_str(),
            queued[0].next_attempt_at,
            queued[0].approval_id
        ),
        ("reminder", "queued", Some(at), Some(a.id))
    );

    // The escalation adds its approvers; the earlier ones stay.
    let at = t0() + secs(48 * 3600);
    let fired = store.fire_due_rungs(at, 10).await.unwrap();
    assert_eq!(fired.iter().map(|r| r.position).collect::<Vec<_>>(), [1]);
    let escalated = store.get_approval(a.id).await.unwrap();
    assert_eq!(escalated.approver_roles, ["manager", "director"]);
    assert_eq!(notifications(&store, &e).await.len(), 2);

    // Decided before the last rung: it is skipped and sends nothing.
    store
        .decide(
            a.id,
            decision("dora", DecisionKind::Approve),
            &tollgate_model::records::Principal {
                subject: "dora".into(),
                roles: vec!["director".into()],
            },
            &lease("api", at + secs(30)),
            at,
            None,
        )
        .await
        .unwrap();
    let at = t0() + secs(60 * 3600);
    let fired = store.fire_due_rungs(at, 10).await.unwrap();
    assert_eq!(
        fired
            .iter()
            .map(|r| (r.position, r.outcome.as_deref()))
            .collect::<Vec<_>>(),
        [(2, Some("skipped"))]
    );
    assert_eq!(notifications(&store, &e).await.len(), 2);
    let audit: Vec<(u32, Option<String>)> = store
        .list_rungs(a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.position, r.outcome))
        .collect();
    assert_eq!(
        audit,
        [
            (0, Some("fired".into())),
            (1, Some("fired".into())),
            (2, Some("skipped".into()))
        ]
    );
    assert!(store.fire_due_rungs(at, 10).await.unwrap().is_empty());
    assert!(store
        .list_rungs(Uuid::now_v7())
        .await
        .unwrap_err()
        .is_not_found());
}
