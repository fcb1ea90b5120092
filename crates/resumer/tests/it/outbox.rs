//! The outbox on the test clock (docs/notifications.md): an approval's messages are
//! queued with its gate and sent by whichever worker claims them, retried with backoff;
//! reminders and escalations fire once across workers; a worker that dies holding a
//! claim loses nothing.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tollgate_engine::{Clock, Engine, EngineOptions, Notifier, Outgoing, SendError};
use tollgate_model::records::{DecisionKind, Notification};
use tollgate_model::ExecutionStatus;
use tollgate_resumer::{Worker, WorkerOptions};
use tollgate_store::{LeaseClaim, NotificationFilter, PageRequest};

use crate::Harness;

/// Records every attempt; fails the first `failures` attempts with a retryable error.
#[derive(Debug, Default)]
struct Inbox {
    attempts: Mutex<Vec<Outgoing>>,
    failures: Mutex<u32>,
}

impl Inbox {
    fn sent(&self) -> Vec<Notification> {
        self.attempts
            .lock()
            .unwrap()
            .iter()
            .map(|o| o.notification.clone())
            .collect()
    }
}

#[async_trait::async_trait]
impl Notifier for Inbox {
    fn channel(&self, requested: Option<&str>) -> Option<String> {
        requested.map(str::to_owned)
    }

    async fn send(&self, outgoing: &Outgoing) -> Result<(), SendError> {
        self.attempts.lock().unwrap().push(outgoing.clone());
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err(SendError::Retry("the SMTP server is down".into()));
        }
        Ok(())
    }
}

/// A worker on `h`'s store and clock, named `id`, sending with `inbox`.
fn worker(h: &Harness, id: &str, inbox: &Arc<Inbox>) -> Worker {
    let engine = Engine::builder(h.store.clone())
        .clock(h.clock.clone())
        .notifier(inbox.clone())
        .options(EngineOptions {
            worker_id: id.into(),
            ..EngineOptions::default()
        })
        .build()
        .unwrap();
    Worker::new(engine, WorkerOptions::default())
}

fn ladder() -> Value {
    json!({"workflow_id": "orders", "version": "1", "trigger": {"type": "event", "event": "order.created"},
    "steps": [
        {"id": "approve", "type": "approval",
         "approval": {"approvers": {"role": "sales_manager"}, "timeout": "72h", "on_timeout": "reject",
                      "entity": {"type": "order", "id": "{{order_id}}"},
                      "notify": [{"channel": "email", "to": "{{manager_email}}", "subject": "Order {{order_id}} needs you"}],
                      "reminders": ["4h", "24h"],
                      "escalate": [{"after": "48h", "approvers": {"role": "director"},
                                    "notify": [{"channel": "slack"}]}]},
         "on_approve": "ok", "on_reject": "no"},
        {"id": "ok", "type": "action", "action": "allow"},
        {"id": "no", "type": "action", "action": "block"}
    ]})
}

async fn notifications(h: &Harness, execution: uuid::Uuid) -> Vec<Notification> {
    h.store
        .list_notifications(
            &NotificationFilter {
                execution_id: Some(execution),
            },
            &PageRequest::first(50),
        )
        .await
        .unwrap()
        .items
}

/// Both workers pass at once, as two processes would.
async fn both(a: &Worker, b: &Worker) {
    let (x, y) = tokio::join!(a.tick(), b.tick());
    x.unwrap();
    y.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_and_escalation_fire_once_across_two_workers_on_the_clock() {
    let h = Harness::new();
    let inbox = Arc::new(Inbox::default());
    let (a, b) = (worker(&h, "w-a", &inbox), worker(&h, "w-b", &inbox));
    h.deploy(ladder()).await;
    let paused = h
        .start(
            "order.created",
            json!({"order_id": "o-7", "manager_email": "mia@example.com"}),
        )
        .await;
    assert_eq!(paused.status, ExecutionStatus::Paused);
    let queued = notifications(&h, paused.id).await;
    assert_eq!(
        queued.len(),
        1,
        "queued with the gate, not sent by the step"
    );
    assert_eq!(
        (
            queued[0].status.as_str(),
            queued[0].kind.as_str(),
            queued[0].recipients.as_slice(),
            queued[0].subject.as_deref(),
            queued[0].link_user.as_deref()
        ),
        (
            "queued",
            "approval",
            &["mia@example.com".to_owned()][..],
            Some("Order o-7 needs you"),
            Some("role:sales_manager")
        )
    );
    assert!(inbox.sent().is_empty());

    both(&a, &b).await;
    let sent = inbox.sent();
    assert_eq!(sent.len(), 1, "one sender: {sent:?}");
    let first = inbox.attempts.lock().unwrap()[0].clone();
    assert_eq!(
        first.approval.as_ref().map(|a| a.id),
        queued[0].approval_id,
        "sent with its request"
    );
    assert_eq!(notifications(&h, paused.id).await[0].status, "sent");

    // Reminders at 4 h and 24 h, each once although both workers pass.
    for (hours, expected) in [(3, 1), (4, 2), (5, 2), (24, 3), (30, 3)] {
        h.clock
            .set(crate::start_time() + chrono::TimeDelta::hours(hours));
        both(&a, &b).await;
        both(&a, &b).await;
        assert_eq!(inbox.sent().len(), expected, "after {hours} h");
    }
    let kinds: Vec<String> = inbox.sent().iter().map(|n| n.kind.clone()).collect();
    assert_eq!(kinds, ["approval", "reminder", "reminder"]);

    // The escalation at 48 h adds the director, and tells Slack.
    h.clock
        .set(crate::start_time() + chrono::TimeDelta::hours(48));
    both(&a, &b).await;
    both(&a, &b).await;
    let sent = inbox.sent();
    assert_eq!(sent.len(), 4);
    assert_eq!(
        (
            sent[3].kind.as_str(),
            sent[3].channel.as_str(),
            sent[3].link_user.as_deref()
        ),
        ("escalation", "slack", Some("role:director"))
    );
    let approval_id = queued[0].approval_id.unwrap();
    let rungs = h.store.list_rungs(approval_id).await.unwrap();
    assert_eq!(
        rungs
            .iter()
            .map(|r| (r.kind.as_str(), r.outcome.as_deref()))
            .collect::<Vec<_>>(),
        [
            ("reminder", Some("fired")),
            ("reminder", Some("fired")),
            ("escalation", Some("fired"))
        ]
    );
    let approval = h.store.get_approval(approval_id).await.unwrap();
    assert_eq!(approval.approver_roles, ["sales_manager", "director"]);

    // The director decides; a sales manager could have too.
    let paused = h.store.get_execution(paused.id).await.unwrap();
    let done = h
        .decide(&paused, "dora", &["director"], DecisionKind::Approve, None)
        .await
        .unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_send_is_retried_after_its_backoff_and_a_decided_request_drops_the_rest() {
    let h = Harness::new();
    let inbox = Arc::new(Inbox::default());
    *inbox.failures.lock().unwrap() = 1;
    let a = worker(&h, "w-a", &inbox);
    h.deploy(ladder()).await;
    let paused = h
        .start(
            "order.created",
            json!({"order_id": "o-8", "manager_email": "mia@example.com"}),
        )
        .await;
    a.tick().await.unwrap();
    let after_one = notifications(&h, paused.id).await.remove(0);
    assert_eq!(
        (
            after_one.status.as_str(),
            after_one.attempts,
            after_one.last_error.as_deref()
        ),
        ("queued", 1, Some("the SMTP server is down"))
    );
    let due = after_one.next_attempt_at.unwrap();
    assert_eq!(due, h.clock.now() + chrono::TimeDelta::seconds(30));
    a.tick().await.unwrap();
    assert_eq!(inbox.sent().len(), 1, "not before its backoff");
    h.clock.set(due);
    a.tick().await.unwrap();
    let sent = notifications(&h, paused.id).await.remove(0);
    assert_eq!((sent.status.as_str(), sent.attempts), ("sent", 2));
    assert_eq!(inbox.sent().len(), 2);
    assert_eq!(
        inbox.sent()[0].id,
        inbox.sent()[1].id,
        "the same id each attempt"
    );

    // Decided before the reminder: the rung is skipped and nothing more is sent.
    h.decide(
        &paused,
        "mia",
        &["sales_manager"],
        DecisionKind::Approve,
        None,
    )
    .await
    .unwrap();
    h.clock
        .set(crate::start_time() + chrono::TimeDelta::hours(30));
    a.tick().await.unwrap();
    assert_eq!(inbox.sent().len(), 2);
    let rungs = h.store.list_rungs(sent.approval_id.unwrap()).await.unwrap();
    assert!(rungs
        .iter()
        .take(2)
        .all(|r| r.outcome.as_deref() == Some("skipped")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_holding_a_claim_loses_nothing() {
    let h = Harness::new();
    let inbox = Arc::new(Inbox::default());
    h.deploy(ladder()).await;
    let paused = h
        .start(
            "order.created",
            json!({"order_id": "o-9", "manager_email": "mia@example.com"}),
        )
        .await;
    // A worker claims the message and dies before sending it (or before recording the
    // send): its claim holds for two minutes.
    let dead = h
        .store
        .claim_notifications(
            h.clock.now(),
            &LeaseClaim {
                owner: "dead".into(),
                expires_at: h.clock.now() + chrono::TimeDelta::seconds(120),
            },
            10,
        )
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    let b = worker(&h, "w-b", &inbox);
    b.tick().await.unwrap();
    assert!(inbox.sent().is_empty(), "the claim still holds");
    h.clock.set(h.clock.now() + chrono::TimeDelta::seconds(121));
    b.tick().await.unwrap();
    b.tick().await.unwrap();
    let sent = inbox.sent();
    assert_eq!(sent.len(), 1, "sent once after the claim lapsed");
    assert_eq!(sent[0].id, dead[0].id);
    assert_eq!(notifications(&h, paused.id).await[0].status, "sent");
}
