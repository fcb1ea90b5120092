//! Crashes, retries, `on_error`, step timeouts and the loop guard.

use std::time::Duration;

use serde_json::json;
use tollgate_model::definition::ErrorClass;
use tollgate_model::records::StepStatus;
use tollgate_model::{ErrorKind, ExecutionResult, ExecutionStatus};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::Harness;

fn keys(requests: &[wiremock::Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// A worker dies while a side-effecting step is in flight: another worker takes the
/// execution over once the lease lapses and repeats that step with the same idempotency
/// key; the step committed before it is not run again.
#[tokio::test]
async fn a_dead_workers_step_is_retried_elsewhere_with_the_same_key() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(400)))
        .mount(&api)
        .await;
    let a = Harness::new();
    a.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "check", "type": "condition", "condition": {"field": "x", "operator": "exists"}, "on_true": "charge", "on_false": "charge"},
                              {"id": "charge", "type": "execute", "execute": [{"type": "webhook", "url": format!("{}/charge", api.uri())}], "next": "done"},
                              {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let workflow = a
        .store
        .list_workflows(
            &tollgate_store::WorkflowFilter::default(),
            &tollgate_store::PageRequest::first(1),
        )
        .await
        .unwrap()
        .items
        .remove(0);
    let created = a
        .engine
        .create(tollgate_engine::StartRequest {
            workflow,
            trigger_event: "go".into(),
            payload: json!({"x": 1}),
            event_id: None,
            event_key: None,
            source: None,
            requested_by: None,
        })
        .await
        .unwrap();
    let crashed_id = created.id;
    // Worker A runs `check`, records `charge` as running, and dies mid-request: its task
    // is aborted, so it never commits and never renews its lease.
    let engine_a = a.engine.clone();
    let task = tokio::spawn(async move { engine_a.advance(created).await });
    for _ in 0..200 {
        if a.store
            .list_steps(crashed_id)
            .await
            .unwrap()
            .iter()
            .any(|s| s.step_id == "charge" && s.status == StepStatus::Running)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    let _ = task.await;
    let orphan = a.store.get_execution(crashed_id).await.unwrap();
    assert_eq!(orphan.status, ExecutionStatus::Running);
    assert_eq!(
        orphan.lease.as_ref().and_then(|l| l.owner.as_deref()),
        Some("worker-a")
    );
    assert_eq!(
        orphan.cursor.as_ref().map(|c| c.step_id.as_str()),
        Some("charge")
    );

    let b = Harness::on(a.store.clone(), a.clock.clone(), "worker-b");
    assert_eq!(
        b.worker.tick().await.unwrap().leases,
        0,
        "the lease still protects it"
    );
    a.advance(31);
    assert_eq!(b.worker.tick().await.unwrap().leases, 1);
    let recovered = b.store.get_execution(crashed_id).await.unwrap();
    assert_eq!(
        (recovered.status, recovered.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed))
    );

    let requests = api.received_requests().await.unwrap();
    let key = format!("{crashed_id}:charge:1");
    assert_eq!(
        keys(&requests).iter().filter(|k| **k == key).count(),
        2,
        "at-least-once, with one key for the receiver to deduplicate"
    );
    let steps = b.steps(&recovered).await;
    assert_eq!(
        steps.iter().filter(|(s, _)| s == "check").count(),
        1,
        "the committed step is never re-run"
    );
    assert_eq!(
        steps
            .iter()
            .filter(|(s, _)| s == "charge")
            .collect::<Vec<_>>(),
        [&("charge".to_owned(), StepStatus::Completed)],
        "the running record was completed in place"
    );
}

#[tokio::test]
async fn retries_back_off_on_the_clock_and_keep_the_idempotency_key() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&api)
        .await;
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": api.uri()}],
                               "retry": {"max_attempts": 3, "backoff": "exponential", "initial_interval": "10s", "jitter": false, "retry_on": ["5xx"]},
                               "next": "ok"},
                              {"id": "ok", "type": "action", "action": "allow"}]}))
        .await;
    let first = h.start("go", json!({})).await;
    assert_eq!(
        first.status,
        ExecutionStatus::Running,
        "waiting for its retry with the lease released"
    );
    assert_eq!(
        first
            .lease
            .as_ref()
            .map(|l| (l.owner.clone(), l.expires_at)),
        Some((None, crate::start_time() + chrono::TimeDelta::seconds(10)))
    );
    h.advance(9);
    assert_eq!(h.worker.tick().await.unwrap().leases, 0);
    h.advance(1);
    assert_eq!(
        h.worker.tick().await.unwrap().leases,
        1,
        "attempt 2 at +10s"
    );
    h.advance(19);
    assert_eq!(h.worker.tick().await.unwrap().leases, 0);
    h.advance(1);
    assert_eq!(
        h.worker.tick().await.unwrap().leases,
        1,
        "attempt 3 at +20s more (exponential)"
    );
    let done = h.store.get_execution(first.id).await.unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    let attempts: Vec<(u32, StepStatus)> = h
        .store
        .list_steps(done.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.step_id == "call")
        .map(|s| (s.attempt, s.status))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, StepStatus::Failed),
            (2, StepStatus::Failed),
            (3, StepStatus::Completed)
        ]
    );
    let sent = keys(&api.received_requests().await.unwrap());
    assert_eq!(
        sent,
        vec![format!("{}:call:1", done.id); 3],
        "every retry of a visit carries the same key"
    );
}

#[tokio::test]
async fn failures_route_to_on_error_or_fail_the_execution() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"why": "nope"})))
        .mount(&api)
        .await;
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "routed", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": api.uri()}],
                               "retry": {"max_attempts": 3, "retry_on": ["5xx"]}, "on_error": "fallback", "next": "ok"},
                              {"id": "ok", "type": "action", "action": "allow"},
                              {"id": "fallback", "type": "action", "action": {"type": "block", "reason": "{{steps.call.error.message}}"}}]}))
        .await;
    let routed = h.start("go", json!({})).await;
    assert_eq!(
        (routed.status, routed.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Blocked)),
        "4xx is not retried; on_error continues"
    );
    let records = h.store.list_steps(routed.id).await.unwrap();
    let call = records.iter().find(|s| s.step_id == "call").unwrap();
    assert_eq!(
        (call.status, call.error.as_ref().map(|e| e.class)),
        (StepStatus::Failed, Some(ErrorClass::Client)),
        "the failed record is kept"
    );
    assert_eq!(call.output["actions"][0]["response"]["body"]["why"], "nope");
    assert!(routed.context["steps"]["fallback"]["reason"]
        .as_str()
        .unwrap()
        .contains("422"));

    let h = Harness::new();
    h.deploy(json!({"workflow_id": "unrouted", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": api.uri()}], "next": "ok"},
                              {"id": "ok", "type": "action", "action": "allow"}]}))
        .await;
    let failed = h.start("go", json!({})).await;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.kind, ErrorKind::StepFailed);
    assert!(
        error.message.contains("step `call` failed"),
        "{}",
        error.message
    );

    // continue_on_error keeps the step going.
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "lenient", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "call", "type": "action", "action": "allow",
                               "execute": [{"type": "webhook", "url": api.uri(), "continue_on_error": true}, {"type": "set", "path": "after", "value": 1}]}]}))
        .await;
    let lenient = h.start("go", json!({})).await;
    assert_eq!(
        (lenient.status, lenient.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed))
    );
    assert_eq!(lenient.context["after"], 1);
}

#[tokio::test]
async fn step_timeouts_fail_the_attempt() {
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .mount(&api)
        .await;
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "call", "type": "execute", "timeout": "200ms", "execute": [{"type": "webhook", "url": api.uri()}], "on_error": "late"},
                              {"id": "late", "type": "action", "action": "block"}]}))
        .await;
    let done = h.start("go", json!({})).await;
    assert_eq!(done.result, Some(ExecutionResult::Blocked));
    let call = h
        .store
        .list_steps(done.id)
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.step_id == "call")
        .unwrap();
    assert_eq!(call.error.map(|e| e.class), Some(ErrorClass::Timeout));
}

#[tokio::test]
async fn loops_are_bounded_by_max_steps() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "loop", "version": "1", "max_steps": 10, "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "review", "type": "condition", "condition": {"field": "approved", "operator": "eq", "value": true}, "on_true": "done", "on_false": "revise"},
                              {"id": "revise", "type": "execute", "execute": [{"type": "set", "path": "revisions", "value": "{{steps.review.result}}"}], "next": "review"},
                              {"id": "done", "type": "action", "action": "allow"}]}))
        .await;
    let failed = h.start("go", json!({})).await;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.kind, ErrorKind::MaxStepsExceeded);
    assert!(error.message.contains("10"), "{}", error.message);
    assert_eq!(
        failed.visits.get("review"),
        Some(&5),
        "visits are counted per step"
    );
}

#[tokio::test]
async fn parallel_and_foreach_bodies() {
    let h = Harness::new();
    h.deploy(json!({"workflow_id": "bodies", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [
                        {"id": "checks", "type": "parallel", "parallel": {"strategy": "any_can_pass", "steps": [
                            {"id": "big", "type": "condition", "condition": {"field": "order.total", "operator": "gt", "value": 1000}},
                            {"id": "vip", "type": "condition", "condition": {"field": "customer.vip", "operator": "eq", "value": true}}]},
                         "next": "lines", "on_false": "reject"},
                        {"id": "lines", "type": "foreach", "foreach": {"items": "order.lines", "item_var": "line", "steps": [
                            {"id": "bulky", "type": "condition", "condition": {"field": "line.qty", "operator": "gte", "value": 10}},
                            {"id": "note", "type": "execute", "execute": [
                                {"type": "notify", "recipients": ["warehouse"], "message": "{{index}}: {{line.sku}} x{{line.qty}}"},
                                {"type": "update_record", "entity": "sku", "entity_id": "{{line.sku}}", "data": {"bulk": true}}]}]},
                         "next": "ok"},
                        {"id": "ok", "type": "action", "action": "allow"},
                        {"id": "reject", "type": "action", "action": "block"}]}))
        .await;
    let lines = json!([{"sku": "A", "qty": 20}, {"sku": "B", "qty": 1}, {"sku": "C", "qty": 10}]);
    let done = h
        .start(
            "go",
            json!({"order": {"total": 5, "lines": lines}, "customer": {"vip": true}}),
        )
        .await;
    assert_eq!(
        (done.status, done.result),
        (ExecutionStatus::Completed, Some(ExecutionResult::Allowed)),
        "{:?}",
        done.error
    );
    assert_eq!(done.context["steps"]["checks"]["passes"], 1);
    let notes = h
        .store
        .list_notifications(
            &tollgate_store::NotificationFilter {
                execution_id: Some(done.id),
            },
            &tollgate_store::PageRequest::first(10),
        )
        .await
        .unwrap();
    let messages: Vec<&str> = notes.items.iter().map(|n| n.message.as_str()).collect();
    assert_eq!(
        messages,
        ["0: A x20", "2: C x10"],
        "a false condition filters its item"
    );
    assert!(h.store.get_record("sku", "B").await.is_err());
    let records = h.store.list_steps(done.id).await.unwrap();
    assert!(records
        .iter()
        .any(|r| r.step_id == "note" && r.iteration == Some(1) && r.status == StepStatus::Skipped));

    let rejected = h
        .start(
            "go",
            json!({"order": {"total": 5, "lines": []}, "customer": {"vip": false}}),
        )
        .await;
    assert_eq!(
        rejected.result,
        Some(ExecutionResult::Blocked),
        "any_can_pass failed → on_false"
    );
}

/// A decision is recorded and its execution claimed, and the claimer dies before
/// advancing it: once the lease lapses another worker resolves the stored decision the
/// same way — resolving a gate rides on the next commit, so nothing is lost in between.
#[tokio::test]
async fn a_decision_claimed_by_a_dead_worker_is_resolved_elsewhere() {
    let a = Harness::new();
    let b = Harness::on(a.store.clone(), a.clock.clone(), "worker-b");
    a.deploy(json!({"workflow_id": "spend", "version": "1", "trigger": {"type": "event", "event": "spend"},
                    "steps": [{"id": "gate", "type": "approval", "approval": {"approvers": {"role": "finance"}}, "on_approve": "yes", "on_reject": "no"},
                              {"id": "yes", "type": "action", "action": "allow"},
                              {"id": "no", "type": "action", "action": "block"}]}))
        .await;
    let paused = a.start("spend", json!({})).await;
    let approval = paused.gate.as_ref().and_then(|g| g.approval_id).unwrap();
    let now = tollgate_engine::Clock::now(a.clock.as_ref());
    let dead = tollgate_store::LeaseClaim {
        owner: "worker-dead".into(),
        expires_at: now + chrono::TimeDelta::seconds(30),
    };
    let decided = a
        .store
        .decide(
            approval,
            tollgate_model::records::Decision {
                decided_by: "fin".into(),
                decision: tollgate_model::records::DecisionKind::Reject,
                reason: Some("over budget".into()),
                data: json!({}),
                decided_at: now,
                channel: None,
                delegate: None,
            },
            &tollgate_model::records::Principal {
                subject: "fin".into(),
                roles: vec!["finance".into()],
            },
            &dead,
            now,
            None,
        )
        .await
        .unwrap();
    assert!(decided.claimed);
    // Nobody advances it; the lease lapses; worker b takes over.
    a.advance(31);
    let report = b.worker.tick().await.unwrap();
    assert_eq!(report.leases, 1);
    let done = a.store.get_execution(paused.id).await.unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.result, Some(ExecutionResult::Blocked));
    assert_eq!(done.context["approval"]["reason"], "over budget");
    let steps = b.steps(&done).await;
    assert_eq!(
        steps,
        vec![
            ("gate".to_owned(), StepStatus::Completed),
            ("no".to_owned(), StepStatus::Completed)
        ]
    );
}

/// One slow execution does not stall the worker loop: while it sits in a 5 s webhook,
/// the loop keeps claiming, and a deadline that passes meanwhile is acted on at once.
/// (Before, a pass waited for every execution it had claimed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_execution_does_not_hold_back_deadlines() {
    let h = Harness::new();
    let slow_api = deploy_slow_webhook(&h, Duration::from_secs(5)).await;
    h.deploy(json!({"workflow_id": "fast", "version": "1", "trigger": {"type": "event", "event": "fast.go"},
                    "steps": [{"id": "a", "type": "approval", "approval": {"approvers": {"role": "m"}, "timeout": "10s", "on_timeout": "approve"}, "on_approve": "ok"},
                              {"id": "ok", "type": "action", "action": "allow"}]}))
        .await;
    let slow = h.start("slow.go", json!({})).await;
    assert_eq!(slow.status, ExecutionStatus::Waiting);
    let worker = tollgate_resumer::Worker::new(
        h.engine.clone(),
        tollgate_resumer::WorkerOptions {
            poll_interval: Duration::from_millis(20),
            concurrency: 4,
            ..tollgate_resumer::WorkerOptions::default()
        },
    );
    let waker = worker.waker();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    h.advance(120);
    // The worker takes the slow execution's deadline and sits in its webhook.
    called(&slow_api, Duration::from_secs(5)).await;
    let fast = h.start("fast.go", json!({})).await;
    assert_eq!(fast.status, ExecutionStatus::Paused);
    // Past the fast approval's deadline but within the slow execution's lease (30 s,
    // renewed from the test clock): a longer jump would expire the lease of a webhook
    // that is still in flight, and the loop would rightly take that execution over.
    h.advance(11);
    waker.notify_one();
    let began = std::time::Instant::now();
    let done = loop {
        let now = h.store.get_execution(fast.id).await.unwrap();
        if now.status == ExecutionStatus::Completed {
            break now;
        }
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "the expired approval waited for the slow execution: {:?}",
            now.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(done.result, Some(ExecutionResult::Allowed));
    assert_eq!(
        h.store.get_execution(slow.id).await.unwrap().status,
        ExecutionStatus::Running,
        "the slow execution is still in its webhook"
    );
    shutdown.cancel();
    running.await.unwrap();
    assert_eq!(
        h.store.get_execution(slow.id).await.unwrap().status,
        ExecutionStatus::Completed,
        "the loop finishes what it started before it returns"
    );
}

/// A stopping worker gives up the lease of an execution it claimed but has not started
/// (it waited for a slot), so another process takes it at once instead of when the
/// lease runs out; the execution already running finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_worker_gives_up_claims_it_has_not_started() {
    let h = Harness::new();
    let slow_api = deploy_slow_webhook(&h, Duration::from_secs(3)).await;
    h.deploy(
        json!({"workflow_id": "pay", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "w", "type": "wait", "wait": {"event": "paid"}, "next": "ok"},
                              {"id": "ok", "type": "action", "action": "allow"}]}),
    )
    .await;
    let slow = h.start("slow.go", json!({})).await;
    let queued = h.start("go", json!({})).await;
    let worker = tollgate_resumer::Worker::new(
        h.engine.clone(),
        tollgate_resumer::WorkerOptions {
            poll_interval: Duration::from_millis(20),
            concurrency: 1,
            delivery_grace: Duration::from_secs(5),
            ..tollgate_resumer::WorkerOptions::default()
        },
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));
    // The one slot: the slow execution, in its webhook.
    h.advance(120);
    called(&slow_api, Duration::from_secs(3)).await;
    // A payment its ingesting process never delivered: the worker delivers it, which
    // claims the waiting execution, and it queues for the slot.
    store_undelivered(&h, "paid", json!({})).await;
    // Past the delivery grace, well within the slow execution's lease (the test clock
    // moves leases too).
    h.advance(6);
    let began = std::time::Instant::now();
    loop {
        let now = h.store.get_execution(queued.id).await.unwrap();
        if now.status == ExecutionStatus::Running {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "the payment was not delivered: {:?}",
            now.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    shutdown.cancel();
    let other = tollgate_store::LeaseClaim {
        owner: "worker-b".into(),
        expires_at: tollgate_engine::Clock::now(h.clock.as_ref()) + chrono::TimeDelta::seconds(30),
    };
    let began = std::time::Instant::now();
    let taken = loop {
        let now = tollgate_engine::Clock::now(h.clock.as_ref());
        let taken = h.store.claim_expired_leases(now, &other, 10).await.unwrap();
        if !taken.is_empty() {
            break taken;
        }
        assert!(
            began.elapsed() < Duration::from_secs(1),
            "the stopping worker still holds the lease of an execution it never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].id, queued.id);
    running.await.unwrap();
    assert_eq!(
        h.store.get_execution(slow.id).await.unwrap().status,
        ExecutionStatus::Completed,
        "the execution that had started finished before the loop returned"
    );
}

/// An event stored whose ingesting process died before offering it to the executions
/// waiting for it is delivered by the worker once the grace period is over.
#[tokio::test]
async fn an_event_stored_but_not_delivered_is_delivered_by_the_worker() {
    let h = Harness::new();
    h.deploy(
        json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
                    "steps": [{"id": "w", "type": "wait", "wait": {"event": "paid"}, "next": "ok"},
                              {"id": "ok", "type": "action", "action": "allow"}]}),
    )
    .await;
    let waiting = h.start("go", json!({})).await;
    assert_eq!(waiting.status, ExecutionStatus::Waiting);
    // What a process that died right after storing the event leaves behind.
    let event = store_undelivered(&h, "paid", json!({"amount": 1})).await;
    assert_eq!(
        h.worker.tick().await.unwrap().events,
        0,
        "within the grace period"
    );
    assert_eq!(
        h.store.get_execution(waiting.id).await.unwrap().status,
        ExecutionStatus::Waiting
    );
    h.advance(31);
    let report = h.worker.tick().await.unwrap();
    assert_eq!(
        report.events, 2,
        "the starting event and the payment are marked"
    );
    let done = h.store.get_execution(waiting.id).await.unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.consumed_events, [event.id]);
    assert_eq!(
        h.store.get_event(event.id).await.unwrap().resumed,
        [waiting.id]
    );
    assert_eq!(h.worker.tick().await.unwrap().events, 0, "marked delivered");
}

/// The same for an execution at a `first_of` step, when no plain wait awaits the type:
/// the worker's "does anybody wait for this type" probe must count `first_of` gates too,
/// or the payment would be marked delivered without being offered.
#[tokio::test]
async fn an_event_stored_but_not_delivered_reaches_a_first_of_step() {
    let h = Harness::new();
    h.deploy(
        json!({"workflow_id": "w", "version": "1", "trigger": {"type": "event", "event": "go"},
        "steps": [{"id": "settle", "type": "first_of", "first_of": [
                      {"event": "paid", "next": "ok"},
                      {"after": "3d", "next": "late"}]},
                  {"id": "ok", "type": "action", "action": "allow"},
                  {"id": "late", "type": "action", "action": "block"}]}),
    )
    .await;
    let waiting = h.start("go", json!({})).await;
    assert_eq!(waiting.status, ExecutionStatus::Waiting);
    let event = store_undelivered(&h, "paid", json!({"amount": 1})).await;
    h.advance(31);
    h.worker.tick().await.unwrap();
    let done = h.store.get_execution(waiting.id).await.unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.consumed_events, [event.id]);
    assert_eq!(done.context["steps"]["settle"]["branch"], json!(0));
    assert_eq!(
        h.store.get_event(event.id).await.unwrap().resumed,
        [waiting.id]
    );
}

/// A stored definition this release cannot compile (here a regular expression the
/// validator of the day would refuse, stored before it did) will not compile on a retry
/// either: the worker that takes the execution over quarantines it (failed, `interrupted`,
/// listed with its stored row) instead of taking it over again on every lease expiry.
#[tokio::test]
async fn an_execution_whose_definition_no_longer_compiles_is_quarantined() {
    use std::sync::Arc;
    use tollgate_engine::StartRequest;
    use tollgate_model::records::{snapshot_id, Workflow};
    use tollgate_store::PageRequest;

    let h = Harness::new();
    // Read as stored definitions are read (leniently, not re-validated).
    let definition: tollgate_model::WorkflowDefinition = serde_json::from_value(json!({
        "workflow_id": "legacy", "version": "1",
        "steps": [
            {"id": "check", "type": "condition", "condition": {"field": "sku", "operator": "regex", "value": "(unclosed"},
             "on_true": "yes", "on_false": "no"},
            {"id": "yes", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}
        ]
    }))
    .unwrap();
    let definition = Arc::new(definition);
    let now = tollgate_engine::Clock::now(h.clock.as_ref());
    let workflow = h
        .store
        .create_workflow(Workflow {
            id: uuid::Uuid::now_v7(),
            snapshot_id: snapshot_id(&definition),
            enabled: true,
            definition,
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap();
    // Created by a process that died before running it.
    let created = h
        .engine
        .create(StartRequest {
            workflow,
            trigger_event: "manual".into(),
            payload: json!({"sku": "A-1"}),
            event_id: None,
            event_key: None,
            source: None,
            requested_by: None,
        })
        .await
        .unwrap();

    h.advance(60);
    let report = h.worker.tick().await.unwrap();
    assert_eq!(report.leases, 1);
    let stored = h.store.get_execution(created.id).await.unwrap();
    assert_eq!(stored.status, ExecutionStatus::Failed);
    let error = stored.error.unwrap();
    assert_eq!(error.kind, ErrorKind::Interrupted);
    assert!(error.message.contains("quarantined"), "{}", error.message);
    assert!(error.message.contains("unclosed"), "{}", error.message);
    let listed = h
        .store
        .list_quarantined(&PageRequest {
            limit: 10,
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].execution_id, created.id);

    // Nothing left to take over.
    h.advance(60);
    assert_eq!(h.worker.tick().await.unwrap().total(), 0);
}

/// Deploys `slow`: a wait that times out after a minute into a webhook answering after
/// `delay`; returns the webhook's server.
async fn deploy_slow_webhook(h: &Harness, delay: Duration) -> MockServer {
    let slow_api = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(delay))
        .mount(&slow_api)
        .await;
    h.deploy(json!({"workflow_id": "slow", "version": "1", "trigger": {"type": "event", "event": "slow.go"},
                    "steps": [{"id": "w", "type": "wait", "wait": {"event": "never", "timeout": "1m", "on_timeout": "call"}},
                              {"id": "call", "type": "action", "action": "allow",
                               "execute": [{"type": "webhook", "url": format!("{}/slow", slow_api.uri())}]}]}))
        .await;
    slow_api
}

/// Waits until `server` received a request, at most `within`.
async fn called(server: &MockServer, within: Duration) {
    let began = std::time::Instant::now();
    while server.received_requests().await.unwrap().is_empty() {
        assert!(
            began.elapsed() < within,
            "the slow webhook was never called"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Stores an event as a process that died right after storing it leaves it: not
/// offered to the executions waiting for it.
async fn store_undelivered(
    h: &Harness,
    event_type: &str,
    payload: serde_json::Value,
) -> tollgate_model::records::Event {
    let event = tollgate_model::records::Event {
        id: uuid::Uuid::now_v7(),
        event_id: Some("pay-1".into()),
        event_type: event_type.into(),
        payload,
        source: None,
        correlation_id: None,
        submitted_by: Some("shop".into()),
        received_at: tollgate_engine::Clock::now(h.clock.as_ref()),
        started: Vec::new(),
        resumed: Vec::new(),
    };
    h.store
        .insert_event_starting(event.clone(), Vec::new())
        .await
        .unwrap();
    event
}
