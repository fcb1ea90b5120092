//! PostgreSQL-specific behaviour: claims under concurrency, the schema, wake-ups.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::{ConnectOptions, Row};
use tollgate_model::records::{DecisionKind, StepStatus};
use tollgate_model::status::ExecutionStatus;
use tollgate_store::testkit::{
    commit, decide_as, decision, lease, manager, paused_at_approval, running, step_record, t0,
    workflow,
};
use tollgate_store::{Store, Transition};

use crate::fresh_database;
use tollgate_postgres::{PgOptions, PgStore};

/// Two workers claim 10,000 due timers at once: each is claimed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_claim_ten_thousand_due_timers_exactly_once() {
    let (store, _) = fresh_database().await;
    let pool = store.pool().clone();
    let store: Arc<dyn Store> = Arc::new(store);
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (template, _) = paused_at_approval(&store, &w, 1, Some(t0())).await;
    // 9,999 copies of the paused execution (fresh ids, no approval rows: the claim then
    // only resumes them), in one statement.
    sqlx::query(
        "INSERT INTO executions SELECT gen_random_uuid(), workflow_id, workflow_key, workflow_version, snapshot_id, status, result, trigger_event, \
         trigger_payload, context, cursor, visits, steps_run, version, lease_owner, lease_expires_at, gate - 'approval_id', gate_reason, \
         gate_deadline - make_interval(secs => n), gate_event, NULL, paused_at, wake, pause_requested, deadline, resume_count, last_resumed_at, \
         started_at, completed_at, updated_at, error, requested_by, consumed_events, commit_token FROM executions, generate_series(1, 9999) AS n WHERE id = $1",
    )
    .bind(template.id)
    .execute(&pool)
    .await
    .unwrap();
    let mut workers = Vec::new();
    for name in ["worker-1", "worker-2"] {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_due_gates(
                        t0() + chrono::TimeDelta::days(1),
                        &lease(name, t0() + chrono::TimeDelta::days(2)),
                        250,
                    )
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|e| e.id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut per_worker = Vec::new();
    for worker in workers {
        let ids = worker.await.unwrap();
        per_worker.push(ids.len());
        for id in ids {
            assert!(seen.insert(id), "{id} claimed twice");
        }
    }
    assert_eq!(seen.len(), 10_000, "claimed per worker: {per_worker:?}");
    let left: i64 = sqlx::query("SELECT count(*) AS n FROM executions WHERE status = 'paused'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("n");
    assert_eq!(left, 0);
}

/// The tables have exactly the columns the code reads and writes.
#[tokio::test]
async fn the_schema_matches_what_the_code_expects() {
    let (store, _) = fresh_database().await;
    let columns = |table: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query("SELECT column_name FROM information_schema.columns WHERE table_name = $1 ORDER BY ordinal_position")
                .bind(table)
                .fetch_all(&pool)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("column_name"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    assert_eq!(
        columns("executions").await,
        "id, workflow_id, workflow_key, workflow_version, snapshot_id, status, result, trigger_event, trigger_payload, context, cursor, visits, \
         steps_run, version, lease_owner, lease_expires_at, gate, gate_reason, gate_deadline, gate_event, gate_approval_id, paused_at, wake, \
         pause_requested, deadline, resume_count, last_resumed_at, started_at, completed_at, updated_at, error, requested_by, consumed_events, commit_token"
    );
    assert_eq!(columns("approvals").await, "id, execution_id, step_id, visit, entity_type, entity_id, approver_roles, approver_users, required, status, reason, data, decisions, requested_by, allow_self_approval, requested_at, expires_at, decided_at");
    assert_eq!(columns("step_records").await, "seq, id, execution_id, step_id, step_type, parent_step_id, iteration, visit, attempt, status, input, output, warnings, started_at, completed_at, error");
    assert_eq!(columns("schedules").await, "id, workflow_id, cron, timezone, enabled, catch_up, from_trigger, next_fire_at, last_fired_at, created_at, updated_at");
    assert_eq!(columns("schedule_ticks").await, "id, schedule_id, tick_time, status, owner, lease_expires_at, claimed_at, started_at, execution_id, error");
    for table in [
        "snapshots",
        "workflows",
        "events",
        "resume_requests",
        "records",
        "notifications",
        "api_keys",
        "console_sessions",
        "execution_formats",
        "quarantined_executions",
    ] {
        assert!(!columns(table).await.is_empty(), "{table}");
    }
    // Running the migrations again is a no-op.
    store.migrate().await.unwrap();
}

/// A commit that releases a lease wakes listening workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_leases_notify_listening_workers() {
    let (store, _) = fresh_database().await;
    let wakeups = store.wakeups();
    let store: Arc<dyn Store> = Arc::new(store);
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    // The listener connects in the background and signals once when it is ready.
    tokio::time::timeout(Duration::from_secs(10), wakeups.notified())
        .await
        .expect("listener ready");
    let mut c = commit(&e, "w1", e.version, Transition::Release { at: t0() });
    c.records = vec![step_record(e.id, "s", StepStatus::Failed)];
    store.commit_step(c).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), wakeups.notified())
        .await
        .expect("woken by NOTIFY");
    assert_eq!(store.list_steps(e.id).await.unwrap().len(), 1);
}

/// Every connection of the pool — and the batch writers' own connections — is killed
/// (as a server restart would): calls in flight may fail, nothing committed is lost, and
/// both the pool and the batch writers recover by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_after_its_connections_are_killed() {
    let (store, url) = fresh_database().await;
    let pool = store.pool().clone();
    let store: Arc<dyn Store> = Arc::new(store);
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (paused, _) = paused_at_approval(&store, &w, 1, None).await;
    let (other, other_request) = paused_at_approval(&store, &w, 1, None).await;
    // Warm the pool so several connections exist, and open the decision writer's own
    // connection; then kill them all from outside.
    for _ in 0..4 {
        store.get_execution(paused.id).await.unwrap();
    }
    let ann = manager("ann");
    decide_as(&store, other_request.id, "ann", DecisionKind::Approve, &ann)
        .await
        .unwrap();
    let database = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let admin: sqlx::postgres::PgConnectOptions = crate::admin_url().parse().unwrap();
    let mut killer: sqlx::PgConnection = sqlx::ConnectOptions::connect(&admin).await.unwrap();
    let killed: i64 = sqlx::query("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1) k")
        .bind(&database)
        .fetch_one(&mut killer)
        .await
        .unwrap()
        .get(0);
    assert!(killed >= 1, "no connection was killed");
    let mut recovered = false;
    for _ in 0..10 {
        if store.get_execution(paused.id).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the pool did not recover");
    let after = store.get_execution(paused.id).await.unwrap();
    assert_eq!(after, paused, "committed state is intact");
    assert!(!pool.is_closed());
    assert_eq!(
        store.get_execution(other.id).await.unwrap().status,
        ExecutionStatus::Running,
        "the decision before the kill is intact"
    );
    // The decision writer reopens its connection: a decision may fail while it finds
    // its connection dead, then one succeeds — once.
    let (_, request) = paused_at_approval_retrying(&store, &w).await;
    let mut claimed = None;
    for _ in 0..10 {
        match decide_as(&store, request.id, "ann", DecisionKind::Approve, &ann).await {
            Ok(decided) => {
                claimed = Some(decided.claimed);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(claimed, Some(true), "the decision writer did not recover");
}

/// [`paused_at_approval`], retried while the step-commit writer finds its connection
/// dead.
async fn paused_at_approval_retrying(
    store: &Arc<dyn Store>,
    w: &tollgate_model::records::Workflow,
) -> (
    tollgate_model::records::Execution,
    tollgate_model::records::ApprovalRequest,
) {
    for _ in 0..10 {
        let store = store.clone();
        let w = w.clone();
        if let Ok(paused) =
            tokio::spawn(async move { paused_at_approval(&store, &w, 1, None).await }).await
        {
            return paused;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the step-commit writer did not recover");
}

/// Concurrent event lookups are answered in batches (one statement for the lookups
/// queued at one moment): each caller still gets exactly its own answer — its event
/// type's waiting executions, its page — and the workflows its event type triggers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_event_lookups_answer_each_caller_its_own() {
    let (store, _) = fresh_database().await;
    let pool = store.pool().clone();
    let store: Arc<dyn Store> = Arc::new(store);
    let w = workflow(&store, "orders", "1", "order.created").await;
    workflow(&store, "refunds", "1", "refund.requested").await;
    let mut by_type = std::collections::BTreeMap::<String, Vec<uuid::Uuid>>::new();
    for i in 0..30 {
        let e = tollgate_store::testkit::waiting(&store, &w, None).await;
        let event_type = format!("type.{}", i % 3);
        sqlx::query("UPDATE executions SET gate_event = $1 WHERE id = $2")
            .bind(&event_type)
            .bind(e.id)
            .execute(&pool)
            .await
            .unwrap();
        by_type.entry(event_type).or_default().push(e.id);
    }
    let mut tasks = Vec::new();
    for round in 0..40 {
        let store = store.clone();
        let by_type = by_type.clone();
        tasks.push(tokio::spawn(async move {
            let event_type = format!("type.{}", round % 4); // type.3 has no waiters
            let expected = by_type.get(&event_type).cloned().unwrap_or_default();
            // Page through in pages of 3, starting after the `round % 5`-th id.
            let skip = (round % 5).min(expected.len());
            let mut after = skip.checked_sub(1).map(|i| expected[i]);
            let mut seen = Vec::new();
            loop {
                let page = store
                    .waiting_for_event(&event_type, after, 3, tollgate_store::testkit::t0())
                    .await
                    .unwrap();
                seen.extend(page.iter().map(|e| e.id));
                if page.len() < 3 {
                    break;
                }
                after = page.last().map(|e| e.id);
            }
            assert_eq!(seen, expected[skip..], "{event_type} after {skip}");
            let triggered = store.workflows_for_event("refund.requested").await.unwrap();
            assert_eq!(
                triggered
                    .iter()
                    .map(tollgate_model::records::Workflow::workflow_id)
                    .collect::<Vec<_>>(),
                ["refunds"]
            );
            assert!(store
                .workflows_for_event("nothing")
                .await
                .unwrap()
                .is_empty());
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Two processes decide the same requests at once (each batches its own decisions):
/// quorum requests end with both decisions and one claim; single-approver requests are
/// claimed by exactly one process, the other refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_deciding_the_same_requests_claim_each_once() {
    let (first, url) = fresh_database().await;
    let second = tollgate_postgres::PgStore::connect(&tollgate_postgres::PgOptions::new(url))
        .await
        .unwrap();
    let a: Arc<dyn Store> = Arc::new(first);
    let b: Arc<dyn Store> = Arc::new(second);
    let w = workflow(&a, "orders", "1", "order.created").await;
    let mut quorum = Vec::new();
    let mut single = Vec::new();
    for _ in 0..20 {
        quorum.push(paused_at_approval(&a, &w, 2, None).await);
        single.push(paused_at_approval(&a, &w, 1, None).await);
    }
    let decide = |store: &Arc<dyn Store>, approval: uuid::Uuid, who: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .decide(
                    approval,
                    decision(who, DecisionKind::Approve),
                    &manager(who),
                    &lease(who, t0() + chrono::TimeDelta::seconds(30)),
                    t0(),
                    None,
                )
                .await
        })
    };
    let mut tasks = Vec::new();
    for ((_, q), (_, s)) in quorum.iter().zip(&single) {
        tasks.push((q.id, decide(&a, q.id, "ann"), true));
        tasks.push((q.id, decide(&b, q.id, "bob"), true));
        tasks.push((s.id, decide(&a, s.id, "ann"), false));
        tasks.push((s.id, decide(&b, s.id, "bob"), false));
    }
    let mut claims: HashMap<uuid::Uuid, usize> = HashMap::new();
    let mut refused = 0;
    for (approval, task, is_quorum) in tasks {
        match task.await.unwrap() {
            Ok(decided) => *claims.entry(approval).or_default() += usize::from(decided.claimed),
            Err(err) => {
                assert!(!is_quorum, "a quorum decision was refused: {err}");
                assert!(err.is_conflict(), "{err}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 20, "one of each single-approver pair is refused");
    for (e, approval) in quorum.iter().chain(&single) {
        assert_eq!(claims.get(&approval.id), Some(&1), "claimed exactly once");
        let stored = a.get_approval(approval.id).await.unwrap();
        assert_eq!(
            stored.status,
            tollgate_model::records::ApprovalStatus::Approved
        );
        assert_eq!(stored.decisions.len(), approval.required as usize);
        let execution = a.get_execution(e.id).await.unwrap();
        assert_eq!(execution.resume_count, 1);
        assert_eq!(execution.version, e.version + 1);
        assert_eq!(a.list_resume_requests(e.id).await.unwrap().len(), 1);
    }
}

/// Whatever a decider writes — quotes, backslashes, SQL, dollar quotes, unicode, control
/// characters — passes through a decision batch's JSON recordsets and is stored exactly
/// as written, executing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_text_is_stored_exactly_as_written() {
    let (store, _) = fresh_database().await;
    let store: Arc<dyn Store> = Arc::new(store);
    let w = workflow(&store, "orders", "1", "order.created").await;
    let nasty = [
        "it's fine",
        "'); DROP TABLE approvals; --",
        "back\\slash \\' and \\\\'' quotes",
        "$$ $tag$ dollar $tag$ $$",
        "naïve 🚦 ünïcödé \u{202e}rtl",
        "line\nbreak\ttab\r\u{1} control",
        "E'\\x41' ::jsonb",
    ];
    for (i, text) in nasty.iter().enumerate() {
        let (paused, request) = paused_at_approval(&store, &w, 1, None).await;
        let who = format!("{text} #{i}");
        let mut d = decision(&who, DecisionKind::Reject);
        d.reason = Some((*text).to_owned());
        d.data = serde_json::json!({ *text: [text, {"nested": text}] });
        let decided = store
            .decide(
                request.id,
                d.clone(),
                &manager(&who),
                &lease("api", t0() + chrono::Duration::seconds(30)),
                t0(),
                None,
            )
            .await
            .unwrap();
        assert!(decided.claimed);
        let stored = store.get_approval(request.id).await.unwrap();
        assert_eq!(stored.decisions.len(), 1);
        assert_eq!(stored.decisions[0].decided_by, who);
        assert_eq!(stored.decisions[0].reason.as_deref(), Some(*text));
        assert_eq!(stored.decisions[0].data, d.data);
        let audit = store.list_resume_requests(paused.id).await.unwrap();
        assert_eq!(
            audit.last().and_then(|r| r.actor.clone()),
            Some(who.clone())
        );
        assert_eq!(
            audit.last().map(|r| r.data["reason"].clone()),
            Some(serde_json::json!(text))
        );
    }
    // Nothing was executed: every table is still there.
    assert!(store.get_workflow(w.id).await.is_ok());
    assert_eq!(
        store
            .list_approvals(
                &tollgate_store::ApprovalFilter::default(),
                &tollgate_store::PageRequest::default()
            )
            .await
            .unwrap()
            .items
            .len(),
        nasty.len()
    );
}

/// Decisions, cancellations and deadline claims on the same executions at once, from
/// two processes: every call either succeeds or is refused as a conflict — none fails
/// with a deadlock (40P01). Every path locks an execution before its approval requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decisions_cancellations_and_deadlines_never_deadlock() {
    let (first, url) = fresh_database().await;
    let second = tollgate_postgres::PgStore::connect(&tollgate_postgres::PgOptions::new(url))
        .await
        .unwrap();
    let a: Arc<dyn Store> = Arc::new(first);
    let b: Arc<dyn Store> = Arc::new(second);
    let w = workflow(&a, "orders", "1", "order.created").await;
    let deadline = t0() + chrono::TimeDelta::seconds(10);
    let later = t0() + chrono::TimeDelta::seconds(20);
    for round in 0..5 {
        let mut paused = Vec::new();
        for _ in 0..40 {
            paused.push(paused_at_approval(&a, &w, 1, Some(deadline)).await);
        }
        let mut tasks = Vec::new();
        for (i, (e, approval)) in paused.iter().enumerate() {
            let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            let store = first.clone();
            let approval_id = approval.id;
            tasks.push(tokio::spawn(async move {
                store
                    .decide(
                        approval_id,
                        decision("ann", DecisionKind::Approve),
                        &manager("ann"),
                        &lease("ann", t0() + chrono::TimeDelta::seconds(30)),
                        t0(),
                        None,
                    )
                    .await
                    .map(|_| ())
            }));
            let store = second.clone();
            let id = e.id;
            tasks.push(tokio::spawn(async move {
                store
                    .cancel_execution(id, Some("ops"), None, t0())
                    .await
                    .map(|_| ())
            }));
            if i % 8 == 0 {
                let store = first.clone();
                tasks.push(tokio::spawn(async move {
                    store
                        .claim_due_gates(later, &lease("timer", later), 10)
                        .await
                        .map(|_| ())
                }));
                let store = second.clone();
                tasks.push(tokio::spawn(async move {
                    store.time_out_overdue(later, 10).await.map(|_| ())
                }));
            }
        }
        for task in tasks {
            if let Err(err) = task.await.unwrap() {
                assert!(
                    err.is_conflict(),
                    "round {round}: a call failed instead of losing its race: {err}"
                );
            }
        }
        for (e, _) in &paused {
            let stored = a.get_execution(e.id).await.unwrap();
            assert!(
                matches!(
                    stored.status,
                    ExecutionStatus::Cancelled | ExecutionStatus::Running
                ),
                "{:?}",
                stored.status
            );
        }
    }
}

/// A log sink for one test.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Closing the store ends its wake-up listener quietly: a clean shutdown (or `migrate`,
/// which opens and closes the store) is not a lost connection and logs no warning.
#[tokio::test(flavor = "current_thread")]
async fn closing_the_store_stops_the_wakeup_listener_without_a_warning() {
    let logs = Captured::default();
    let writer = logs.clone();
    // A current-thread runtime: the listener task runs on this thread, under this
    // subscriber.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (store, _) = fresh_database().await;
    let wakeups = store.wakeups();
    // The listener signals once when its LISTEN is in place.
    tokio::time::timeout(Duration::from_secs(5), wakeups.notified())
        .await
        .expect("the listener is listening");
    store.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("wake-up listener"), "{text}");
}

/// Every connection carries the session limits, so a stuck statement fails instead of
/// holding its connection; migrations run without the statement limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_carry_their_time_limits_and_name() {
    let url = tollgate_postgres::testing::fresh_database_url("limits")
        .await
        .unwrap();
    let store = PgStore::connect(&PgOptions {
        max_connections: 2,
        session: tollgate_postgres::PgSession {
            statement_timeout: Duration::from_millis(300),
            lock_timeout: Duration::from_millis(200),
            idle_in_transaction_timeout: Duration::from_secs(7),
            application_name: "tollgate-test".into(),
        },
        ..PgOptions::new(&url)
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let show = |name: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(show("statement_timeout").await, "300ms");
    assert_eq!(show("lock_timeout").await, "200ms");
    assert_eq!(show("idle_in_transaction_session_timeout").await, "7s");
    assert_eq!(show("application_name").await, "tollgate-test");
    let err = sqlx::query("SELECT pg_sleep(2)")
        .execute(store.pool())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("statement timeout"),
        "a long statement is cancelled: {err}"
    );
    // The migration connection was closed, not returned with its limit lifted.
    for _ in 0..4 {
        assert_eq!(show("statement_timeout").await, "300ms");
    }
}

/// The `LISTEN` connection is not one of the pool's: a pool of one still serves calls
/// while the listener waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wakeup_listener_does_not_take_a_pool_connection() {
    let url = tollgate_postgres::testing::fresh_database_url("listen")
        .await
        .unwrap();
    let name = format!("tollgate-listen-{}", uuid::Uuid::now_v7().simple());
    let store = PgStore::connect(&PgOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_millis(500),
        session: tollgate_postgres::PgSession {
            application_name: name.clone(),
            ..tollgate_postgres::PgSession::default()
        },
        ..PgOptions::new(&url)
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let _wakeups = store.wakeups();
    let observer = sqlx::PgPool::connect(&url).await.unwrap();
    let mut listening = false;
    for _ in 0..100 {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND query LIKE 'LISTEN%'",
        )
        .bind(&name)
        .fetch_one(&observer)
        .await
        .unwrap();
        if n > 0 {
            listening = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listening, "the listener connected");
    for _ in 0..3 {
        sqlx::query("SELECT 1")
            .execute(store.pool())
            .await
            .expect("the pool's only connection is free for calls");
    }
    store.close().await;
    observer.close().await;
}

/// `--migrate check` refuses a schema that lacks this release's migrations; a schema
/// with a newer release's migrations opens in every mode (rolling upgrades, rollbacks),
/// unless that release declared this one too old for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_policies_and_a_newer_schema() {
    use tollgate_store::SchemaPolicy;
    let url = tollgate_postgres::testing::fresh_database_url("schema")
        .await
        .unwrap();
    let store = PgStore::connect(&PgOptions::new(&url)).await.unwrap();
    let refused = store.prepare_schema(SchemaPolicy::Check).await.unwrap_err();
    assert!(
        matches!(&refused, tollgate_postgres::ConnectError::SchemaBehind(missing) if missing.len() == tollgate_postgres::MIGRATOR.iter().count()),
        "{refused}"
    );
    store.prepare_schema(SchemaPolicy::Apply).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', now(), TRUE, '\\x00'::bytea, 0)",
    )
    .execute(store.pool())
    .await
    .unwrap();
    for schema in [SchemaPolicy::Apply, SchemaPolicy::Check, SchemaPolicy::Skip] {
        store
            .prepare_schema(schema)
            .await
            .unwrap_or_else(|e| panic!("{schema:?}: {e}"));
    }
    // `migrate` itself (the subcommand) also runs on the newer schema.
    store.migrate().await.unwrap();
    // A release after that one declared that a release knowing only this one's
    // migrations cannot run on its schema: refused, whatever the policy.
    sqlx::query("UPDATE schema_compatibility SET min_reader_migration = 99990101000000")
        .execute(store.pool())
        .await
        .unwrap();
    let knows = tollgate_postgres::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap();
    for schema in [SchemaPolicy::Apply, SchemaPolicy::Check, SchemaPolicy::Skip] {
        let refused = store.prepare_schema(schema).await.unwrap_err();
        assert!(
            matches!(&refused, tollgate_postgres::ConnectError::SchemaAhead { needs: 99_990_101_000_000, knows: k } if *k == knows),
            "{schema:?}: {refused}"
        );
        assert!(refused.to_string().contains("upgrade"), "{refused}");
    }
    store.close().await;
}

/// A store on a fresh database, and a way to run SQL on it behind its back (to damage
/// rows as a bug, a hand edit or a newer release would).
async fn store_and_sql() -> (
    Arc<dyn Store>,
    impl Fn(String) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    let (store, url) = fresh_database().await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let sql = move |statement: String| {
        let pool = pool.clone();
        Box::pin(async move {
            let done = sqlx::query(&statement).execute(&pool).await.unwrap();
            assert_eq!(done.rows_affected(), 1, "{statement}");
        }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
    };
    (Arc::new(store) as Arc<dyn Store>, sql)
}

tollgate_store::sql_rule_tests!(store_and_sql);

/// The network to the database goes silent under load: batched writes and readiness
/// answer `Unavailable` within their bounds instead of waiting for TCP to give up (about
/// 15 minutes), nothing committed is lost, and writes succeed again within seconds of
/// the network's return. (Before, a batch call had no client-side bound: the step
/// committer, and every commit queued behind it, hung while readiness stayed green.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_network_fails_batched_writes_fast_and_recovers() {
    let (direct, url) = fresh_database().await;
    let direct: Arc<dyn Store> = Arc::new(direct);
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let partition = tollgate_postgres::testing::Partition::to((
        options.get_host().to_owned(),
        options.get_port(),
    ))
    .await
    .unwrap();
    let proxied_url = options
        .host("127.0.0.1")
        .port(partition.port)
        .to_url_lossy()
        .to_string();
    let store = PgStore::connect(&PgOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(2),
        session: tollgate_postgres::PgSession {
            statement_timeout: Duration::from_secs(1),
            ..tollgate_postgres::PgSession::default()
        },
        ..PgOptions::new(&proxied_url)
    })
    .await
    .unwrap();
    let bound = PgOptions {
        session: tollgate_postgres::PgSession {
            statement_timeout: Duration::from_secs(1),
            ..tollgate_postgres::PgSession::default()
        },
        ..PgOptions::new(&proxied_url)
    }
    .call_timeout();
    let store: Arc<dyn Store> = Arc::new(store);
    let w = workflow(&direct, "orders", "1", "order.created").await;
    let mut executions = Vec::new();
    for _ in 0..8 {
        executions.push(running(&direct, &w, "w1").await);
    }
    // Under load: every execution commits steps in a loop, each with the version its
    // last commit returned.
    let mut versions: Vec<i64> = executions.iter().map(|e| e.version).collect();
    let committed_before = {
        let mut n = 0;
        for (e, v) in executions.iter().zip(versions.iter_mut()) {
            let done = store
                .commit_step(commit(e, "w1", *v, Transition::Continue))
                .await
                .unwrap();
            *v = done.version;
            n += 1;
        }
        n
    };
    assert_eq!(committed_before, 8);
    store.ping().await.unwrap();

    partition.set_down(true);
    // One bound for the batch in flight, one more at most for the batch queued behind it
    // (plus the pings that find the connection dead): not TCP's quarter of an hour.
    let writes =
        futures_util::future::join_all(executions.iter().zip(versions.iter()).map(|(e, v)| {
            let store = store.clone();
            let c = commit(e, "w1", *v, Transition::Continue);
            async move { store.commit_step(c).await }
        }));
    let during = tokio::time::timeout(bound * 3, writes)
        .await
        .unwrap_or_else(|_| panic!("batched writes still waiting after {:?}", bound * 3));
    for result in &during {
        assert!(
            matches!(result, Err(tollgate_store::Error::Unavailable(_))),
            "{result:?}"
        );
    }
    let ready = tokio::time::timeout(Duration::from_secs(10), store.ping()).await;
    assert!(
        matches!(ready, Ok(Err(_))),
        "readiness must fail while the database is unreachable: {ready:?}"
    );

    partition.set_down(false);
    // Service returns: a commit succeeds again within seconds (the outcome of the commits
    // that timed out is unknown to the caller; the version says which happened).
    let recovered = std::time::Instant::now();
    let mut ok = false;
    while recovered.elapsed() < Duration::from_secs(30) {
        let e = &executions[0];
        let stored = direct.get_execution(e.id).await.unwrap();
        if store
            .commit_step(commit(e, "w1", stored.version, Transition::Continue))
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ok,
        "no commit succeeded within 30 s of the network's return"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(10), store.ping())
            .await
            .is_ok_and(|r| r.is_ok()),
        "readiness must return once the database answers again"
    );
    // Nothing committed before the partition was lost.
    for (e, v) in executions.iter().zip(versions.iter()) {
        let stored = direct.get_execution(e.id).await.unwrap();
        assert!(stored.version >= *v, "{} lost commits", e.id);
        assert_eq!(stored.steps_run, 1, "{stored:?}");
    }
}

/// The next release may add columns to existing tables: this release reads by named
/// columns, so its prepared statements survive a column added under them while it
/// runs. (The previous release read whole rows and failed every such statement with
/// "cached plan must not change result type" — the rolling-upgrade test's 500.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_columns_a_newer_release_adds() {
    let (setup, url) = fresh_database().await;
    let pool = setup.pool().clone();
    // One connection, so the reads after the change run on the statements prepared before.
    let store = PgStore::connect(&PgOptions {
        max_connections: 1,
        ..PgOptions::new(&url)
    })
    .await
    .unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let w = workflow(&store, "orders", "1", "order.created").await;
    let (paused, approval) = paused_at_approval(&store, &w, 1, Some(t0())).await;
    let page = tollgate_store::PageRequest {
        limit: 10,
        cursor: None,
    };
    let reads = || async {
        store.get_workflow(w.id).await.unwrap();
        store
            .list_workflows(&tollgate_store::WorkflowFilter::default(), &page)
            .await
            .unwrap();
        store.get_execution(paused.id).await.unwrap();
        store
            .list_executions(&tollgate_store::ExecutionFilter::default(), &page)
            .await
            .unwrap();
        store.list_gated(&page).await.unwrap();
        store.list_steps(paused.id).await.unwrap();
        store.get_approval(approval.id).await.unwrap();
        store
            .list_approvals(&tollgate_store::ApprovalFilter::default(), &page)
            .await
            .unwrap();
        store.list_resume_requests(paused.id).await.unwrap();
    };
    reads().await;
    for table in [
        "workflows",
        "executions",
        "step_records",
        "approvals",
        "resume_requests",
        "events",
        "schedules",
        "schedule_ticks",
    ] {
        sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN added_later int"))
            .execute(&pool)
            .await
            .unwrap();
    }
    reads().await;
    // Claims too (`RETURNING`): the gate is due, and comes back decoded.
    let claim = lease("w2", t0() + chrono::TimeDelta::seconds(90));
    let claimed = store
        .claim_due_gates(t0() + chrono::TimeDelta::seconds(60), &claim, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
}

/// One node purges at a time: while another transaction holds the purge lock, a purge
/// deletes nothing and returns at once instead of queueing; afterwards it proceeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_purges_at_a_time() {
    let (store, _) = fresh_database().await;
    let pool = store.pool().clone();
    let store: Arc<dyn Store> = Arc::new(store);
    let w = workflow(&store, "orders", "1", "order.created").await;
    let e = running(&store, &w, "w1").await;
    let finish = Transition::Finish {
        status: ExecutionStatus::Completed,
        error: None,
    };
    store
        .commit_step(commit(&e, "w1", e.version, finish))
        .await
        .unwrap();
    let purge = tollgate_store::Purge {
        default_before: Some(t0() + chrono::TimeDelta::days(1)),
        per_workflow: Vec::new(),
        only: None,
    };
    // Another node's purge, in flight.
    let mut other = pool.begin().await.unwrap();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(0x746f_6c6c_7075_7267_i64)
        .fetch_one(&mut *other)
        .await
        .unwrap();
    assert!(locked);
    let skipped = tokio::time::timeout(Duration::from_secs(5), store.purge_ended(&purge, 10))
        .await
        .expect("a purge never waits for another node's")
        .unwrap();
    assert!(skipped.is_empty());
    assert!(store.get_execution(e.id).await.is_ok());
    other.rollback().await.unwrap();
    let purged = store.purge_ended(&purge, 10).await.unwrap();
    assert_eq!(
        purged.iter().map(|p| p.execution_id).collect::<Vec<_>>(),
        [e.id]
    );
}

/// The batch connections plan each of their statements once, and that plan — made
/// when the tables are new and empty, as at a server's first start, and kept while they
/// grow — reaches rows by index, never by a sequential scan of a table that can hold
/// millions. Every statement is prepared on empty tables and its kept plan shown with
/// parameters it does not know yet (`NULL`s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_statements_are_planned_once_with_index_lookups() {
    let (_store, url) = fresh_database().await;
    let options = tollgate_postgres::testing::keyed_batch_options(&url).unwrap();
    let statements = tollgate_postgres::testing::keyed_batch_statements();
    let mut conn = options.connect().await.unwrap();
    let placeholder = regex::Regex::new(r"\$(\d+)").unwrap();
    for (n, (name, sql)) in statements.iter().enumerate() {
        let params = placeholder
            .captures_iter(sql)
            .filter_map(|c| c[1].parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        sqlx::raw_sql(&format!("PREPARE kept_{n} AS {sql}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let nulls = vec!["NULL"; params].join(", ");
        let execute = if params == 0 {
            format!("EXPLAIN EXECUTE kept_{n}")
        } else {
            format!("EXPLAIN EXECUTE kept_{n}({nulls})")
        };
        let plan: Vec<String> = sqlx::query_scalar(&execute)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let plan = plan.join("\n");
        let (generic, custom): (i64, i64) = sqlx::query_as(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = $1",
        )
        .bind(format!("kept_{n}"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(
            generic == 1 && custom == 0,
            "{name} is planned for each execution's values ({custom} custom plans), not once"
        );
        assert!(
            !plan.contains("Seq Scan"),
            "{name} scans a whole table:\n{plan}"
        );
    }
}
