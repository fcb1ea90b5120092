//! The pluggable parts: context providers, the webhook notifier, and the worker loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tollgate_engine::{Engine, EngineOptions, HttpContextProvider, WebhookNotifier};
use tollgate_model::{ExecutionResult, ExecutionStatus};
use tollgate_resumer::{Worker, WorkerOptions};
use tollgate_store::{NotificationFilter, PageRequest};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::Harness;

#[tokio::test]
async fn context_is_loaded_from_providers_and_unconfigured_resources_are_skipped() {
    let crm = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/customers/c-7"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"tier": "gold", "name": "Ada"})),
        )
        .mount(&crm)
        .await;
    let base = Harness::new();
    let provider = HttpContextProvider::new(
        HashMap::from([(
            "customer.profile".to_owned(),
            format!("{}/customers/{{{{customer.id}}}}", crm.uri()),
        )]),
        Duration::from_secs(5),
    )
    .unwrap();
    let engine = Engine::builder(base.store.clone())
        .clock(base.clock.clone())
        .context_provider(Arc::new(provider))
        .options(EngineOptions {
            worker_id: "w".into(),
            ..EngineOptions::default()
        })
        .build()
        .unwrap();
    let workflow = base
        .deploy(json!({"workflow_id": "ctx", "version": "1", "trigger": {"type": "event", "event": "go"}, "context": {"load": ["customer.profile", "customer.credit"]},
                       "steps": [{"id": "vip", "type": "condition", "condition": {"field": "customer.profile.tier", "operator": "eq", "value": "gold"}, "on_true": "ok"},
                                 {"id": "ok", "type": "action", "action": "allow"}]}))
        .await;
    let done = engine
        .start(tollgate_engine::StartRequest {
            workflow,
            trigger_event: "go".into(),
            payload: json!({"customer": {"id": "c-7"}}),
            event_id: None,
            event_key: None,
            source: None,
            requested_by: None,
        })
        .await
        .unwrap();
    assert_eq!(
        (done.status, done.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed))
    );
    assert_eq!(
        done.context["customer"]["id"], "c-7",
        "loading keeps the payload's keys"
    );
    let load = base.store.list_steps(done.id).await.unwrap().remove(0);
    assert_eq!(load.step_id, "$context");
    assert_eq!(load.output, json!({"loaded": ["customer.profile"]}));
    assert!(
        load.warnings[0].contains("customer.credit"),
        "{:?}",
        load.warnings
    );
}

#[tokio::test]
async fn the_webhook_notifier_posts_with_a_stable_key_and_records_the_outcome() {
    let hook = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("content-type", "application/json"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&hook)
        .await;
    let base = Harness::new();
    let engine = Engine::builder(base.store.clone())
        .clock(base.clock.clone())
        .notifier(Arc::new(
            WebhookNotifier::new(hook.uri(), Duration::from_secs(5))
                .unwrap()
                .signed_with("whsec-test"),
        ))
        .build()
        .unwrap();
    let workflow = base
        .deploy(json!({"workflow_id": "n", "version": "1", "trigger": {"type": "event", "event": "go"},
                       "steps": [{"id": "tell", "type": "execute", "execute": [{"type": "notify", "recipients": ["ops"], "message": "hi {{name}} {{secrets.nope}}"}]}]}))
        .await;
    let done = engine
        .start(tollgate_engine::StartRequest {
            workflow,
            trigger_event: "go".into(),
            payload: json!({"name": "Bo"}),
            event_id: None,
            event_key: None,
            source: None,
            requested_by: None,
        })
        .await
        .unwrap();
    // Queued with the step; the worker sends it.
    let worker = Worker::new(engine.clone(), WorkerOptions::default());
    worker.tick().await.unwrap();
    let notes = base
        .store
        .list_notifications(
            &NotificationFilter {
                execution_id: Some(done.id),
            },
            &PageRequest::first(5),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            notes.items[0].channel.as_str(),
            notes.items[0].status.as_str(),
            notes.items[0].message.as_str()
        ),
        ("webhook", "sent", "hi Bo ")
    );
    let sent = &hook.received_requests().await.unwrap()[0];
    assert_eq!(
        sent.headers
            .get("idempotency-key")
            .unwrap()
            .to_str()
            .unwrap(),
        notes.items[0].id.to_string()
    );
    // Signed: the receiver's check passes with the secret, and fails for a changed
    // body, another secret, or a signature replayed ten minutes later.
    let signed = sent
        .headers
        .get(tollgate_engine::SIGNATURE_HEADER)
        .unwrap()
        .to_str()
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    assert!(tollgate_engine::verify_signature(
        "whsec-test",
        signed,
        &sent.body,
        now,
        300
    ));
    assert!(!tollgate_engine::verify_signature(
        "whsec-test",
        signed,
        b"{}",
        now,
        300
    ));
    assert!(!tollgate_engine::verify_signature(
        "other", signed, &sent.body, now, 300
    ));
    assert!(!tollgate_engine::verify_signature(
        "whsec-test",
        signed,
        &sent.body,
        now + 600,
        300
    ));
    let body: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["message"], "hi Bo ");
}

#[tokio::test]
async fn the_worker_loop_wakes_polls_and_shuts_down_gracefully() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "gate", "type": "approval", "approval": {"approvers": {"role": "m"}, "timeout": "1m", "on_timeout": "approve"}}]}))
        .await;
    let paused = h.start("go", json!({})).await;
    let worker = Worker::new(
        h.engine.clone(),
        WorkerOptions {
            poll_interval: Duration::from_secs(3600),
            ..WorkerOptions::default()
        },
    );
    let waker = worker.waker();
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.advance(60);
    // With an hour's poll interval, only the wake-up can make it notice the deadline now.
    waker.notify_one();
    let mut status = ExecutionStatus::Paused;
    for _ in 0..200 {
        status = h.store.get_execution(paused.id).await.unwrap().status;
        if status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(status, ExecutionStatus::Completed);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the loop stops when cancelled")
        .unwrap();
}

/// A clock that panics once when asked to: a stand-in for a bug in the worker loop.
#[derive(Debug)]
struct PanicOnce {
    inner: Arc<tollgate_engine::TestClock>,
    armed: std::sync::atomic::AtomicBool,
}

impl tollgate_engine::Clock for PanicOnce {
    fn now(&self) -> tollgate_model::records::Timestamp {
        assert!(
            !self.armed.swap(false, std::sync::atomic::Ordering::SeqCst),
            "a bug in the worker loop"
        );
        self.inner.now()
    }
}

/// A loop that panics is started again: a deadline that comes after the panic is still
/// handled, instead of the process staying up with no loop claiming anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_worker_loop_is_started_again() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "gate", "type": "approval", "approval": {"approvers": {"role": "m"}, "timeout": "1m", "on_timeout": "approve"}}]}))
        .await;
    let paused = h.start("go", json!({})).await;
    let clock = Arc::new(PanicOnce {
        inner: h.clock.clone(),
        armed: std::sync::atomic::AtomicBool::new(false),
    });
    let engine = Engine::builder(h.store.clone())
        .clock(clock.clone())
        .options(EngineOptions {
            worker_id: "supervised".into(),
            ..EngineOptions::default()
        })
        .build()
        .unwrap();
    let worker = Worker::new(
        engine,
        WorkerOptions {
            poll_interval: Duration::from_millis(20),
            ..WorkerOptions::default()
        },
    );
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run_supervised(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(60)).await;
    clock.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !clock.armed.load(std::sync::atomic::Ordering::SeqCst),
        "the loop hit the panic"
    );
    h.advance(60);
    let mut status = ExecutionStatus::Paused;
    for _ in 0..300 {
        status = h.store.get_execution(paused.id).await.unwrap().status;
        if status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        status,
        ExecutionStatus::Completed,
        "the restarted loop handled the deadline"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the supervisor stops when cancelled")
        .unwrap();
}

/// A slow context provider is waited for with the lease renewed, as any step is: the
/// execution is not taken for abandoned while `context.load` runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_loading_renews_the_lease() {
    let crm = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"tier": "gold"}))
                .set_delay(Duration::from_millis(600)),
        )
        .mount(&crm)
        .await;
    let base = Harness::new();
    let provider = HttpContextProvider::new(
        HashMap::from([("customer.profile".to_owned(), format!("{}/c", crm.uri()))]),
        Duration::from_secs(5),
    )
    .unwrap();
    let engine = Engine::builder(base.store.clone())
        .clock(base.clock.clone())
        .context_provider(Arc::new(provider))
        .options(EngineOptions {
            worker_id: "w".into(),
            lease: Duration::from_millis(90),
            ..EngineOptions::default()
        })
        .build()
        .unwrap();
    let workflow = base
        .deploy(json!({"workflow_id": "ctx", "version": "1", "trigger": {"type": "event", "event": "go"}, "context": {"load": ["customer.profile"]},
                       "steps": [{"id": "ok", "type": "action", "action": "allow"}]}))
        .await;
    let created = engine
        .create(tollgate_engine::StartRequest {
            workflow,
            trigger_event: "go".into(),
            payload: json!({}),
            event_id: None,
            event_key: None,
            source: None,
            requested_by: None,
        })
        .await
        .unwrap();
    let first_expiry = created.lease.as_ref().unwrap().expires_at;
    let id = created.id;
    let running = tokio::spawn({
        let engine = engine.clone();
        async move { engine.advance(created).await }
    });
    // While the provider answers (600 ms), the clock moves on: the lease must follow.
    tokio::time::sleep(Duration::from_millis(50)).await;
    base.advance(10);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let during = base.store.get_execution(id).await.unwrap();
    assert_eq!(during.status, ExecutionStatus::Running);
    assert!(
        during.lease.as_ref().unwrap().expires_at > first_expiry + chrono::TimeDelta::seconds(9),
        "the lease was not renewed during context loading: {:?}",
        during.lease
    );
    let done = running.await.unwrap().unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
}

/// Shuts the worker loop down when a step queues a notification: the shutdown and the
/// end of the execution in flight arrive at the same moment.
#[derive(Debug)]
struct ShutdownOnNotify(CancellationToken);

#[async_trait::async_trait]
impl tollgate_engine::Notifier for ShutdownOnNotify {
    fn channel(&self, _requested: Option<&str>) -> Option<String> {
        self.0.cancel();
        None
    }

    async fn send(
        &self,
        _outgoing: &tollgate_engine::Outgoing,
    ) -> Result<(), tollgate_engine::SendError> {
        Ok(())
    }
}

/// The loop stops cleanly when its shutdown comes together with the end of the last
/// execution in flight (that task's end, which woke the loop, was not awaited twice —
/// before, half of these runs panicked with "`JoinHandle` polled after completion").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_loop_stops_cleanly_when_shutdown_meets_a_finishing_execution() {
    for round in 0..16 {
        let base = Harness::new();
        let shutdown = CancellationToken::new();
        let engine = Engine::builder(base.store.clone())
            .clock(base.clock.clone())
            .notifier(Arc::new(ShutdownOnNotify(shutdown.clone())))
            .options(EngineOptions {
                worker_id: "w".into(),
                ..EngineOptions::default()
            })
            .build()
            .unwrap();
        base.deploy(json!({"workflow_id": "n", "version": "1", "trigger": {"type": "event", "event": "go"},
                           "steps": [{"id": "a", "type": "approval", "approval": {"approvers": {"role": "m"}, "timeout": "1m", "on_timeout": "approve"}, "on_approve": "tell"},
                                     {"id": "tell", "type": "action", "action": "allow",
                                      "execute": [{"type": "notify", "recipients": ["ops"], "message": "done"}]}]}))
            .await;
        let paused = base.start("go", json!({})).await;
        base.advance(120);
        let worker = Worker::new(
            engine,
            WorkerOptions {
                concurrency: 1,
                poll_interval: Duration::from_millis(10),
                ..WorkerOptions::default()
            },
        );
        let running = tokio::spawn(worker.run(shutdown.clone()));
        assert!(
            tokio::time::timeout(Duration::from_secs(10), running)
                .await
                .unwrap_or_else(|_| panic!("round {round}: the loop did not stop"))
                .is_ok(),
            "round {round}: the worker loop panicked"
        );
        assert_eq!(
            base.store.get_execution(paused.id).await.unwrap().status,
            ExecutionStatus::Completed
        );
    }
}
