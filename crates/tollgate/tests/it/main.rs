//! The embedding handle on every backend: the approval cycle, typed errors, schedules,
//! the worker loop with its shutdown, and processes sharing one PostgreSQL database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tollgate::builder::{Approval, Cond, StepBuilder, WorkflowBuilder};
use tollgate::layers::engine::TestClock;
use tollgate::{
    Error, ExecutionResult, ExecutionStatus, NewEvent, NewSchedule, PageRequest, Principal,
    Tollgate, WorkerOptions,
};

const WAIT: Duration = Duration::from_secs(10);

async fn pg_url(prefix: &str) -> String {
    tollgate_postgres::testing::fresh_database_url(prefix)
        .await
        .expect("PostgreSQL for the tests (TOLLGATE_TEST_DATABASE_URL)")
}

fn big_orders(version: &str) -> WorkflowBuilder {
    WorkflowBuilder::new("big_orders", version)
        .on_event("order.created")
        .step(
            StepBuilder::condition("check", Cond::field("total").gt(10_000))
                .on_true("manager")
                .on_false("ship"),
        )
        .step(
            StepBuilder::approval(
                "manager",
                Approval::role("sales_manager")
                    .reason("Order {{order_id}} is large")
                    .timeout("1h"),
            )
            .on_approve("ship")
            .on_reject("refuse"),
        )
        .step(StepBuilder::allow("ship"))
        .step(StepBuilder::block("refuse"))
}

fn maria() -> Principal {
    Principal {
        subject: "maria".into(),
        roles: vec!["sales_manager".into()],
    }
}

fn order(id: &str, total: u32) -> NewEvent {
    NewEvent {
        event_type: "order.created".into(),
        payload: json!({"order_id": id, "total": total}),
        event_id: Some(id.into()),
        source: Some("shop".into()),
        submitted_by: Some("shop".into()),
        ..NewEvent::default()
    }
}

/// Event → approval gate → inbox → decision → completed, and a repeated `event_id`
/// that starts nothing again.
async fn approval_cycle(tollgate: &Tollgate) {
    tollgate.create_workflow(big_orders("1")).await.unwrap();
    let sent = tollgate.send_event(order("o-1", 25_000)).await.unwrap();
    assert!(!sent.duplicate);
    let id = sent.started[0].id;
    let paused = tollgate.wait_until_stopped(id, WAIT).await.unwrap();
    assert_eq!(paused.status, ExecutionStatus::Paused);

    let again = tollgate.send_event(order("o-1", 25_000)).await.unwrap();
    assert!(again.duplicate);
    assert!(again.started.is_empty());

    let inbox = tollgate
        .inbox(&maria(), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(inbox.items.len(), 1);
    assert_eq!(inbox.items[0].reason.as_deref(), Some("Order o-1 is large"));
    tollgate
        .approve(inbox.items[0].id, &maria(), Some("known customer"))
        .await
        .unwrap();
    let done = tollgate.wait_until_stopped(id, WAIT).await.unwrap();
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.result, Some(ExecutionResult::Allowed));
    let steps: Vec<String> = tollgate
        .steps(id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.step_id)
        .collect();
    assert_eq!(steps, ["check", "manager", "ship"]);
    assert!(!tollgate.audit(id).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_cycle_on_temporary_sqlite() {
    let tollgate = Tollgate::open("sqlite::memory:").await.unwrap();
    assert_eq!(tollgate.backend(), tollgate::Kind::Sqlite);
    approval_cycle(&tollgate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_cycle_on_postgres() {
    let tollgate = Tollgate::open(pg_url("embed_cycle").await).await.unwrap();
    assert_eq!(tollgate.backend(), tollgate::Kind::Postgres);
    approval_cycle(&tollgate).await;
}

/// A paused execution outlives the handle (and the process): a new handle on the same
/// file decides it and it completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_after_reopening_completes_the_execution() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("t.db").display());
    let first = Tollgate::open(&url).await.unwrap();
    first.create_workflow(big_orders("1")).await.unwrap();
    let id = first
        .send_event(order("o-2", 50_000))
        .await
        .unwrap()
        .started[0]
        .id;
    first.wait_until_stopped(id, WAIT).await.unwrap();
    first.close(WAIT).await;
    drop(first);

    let second = Tollgate::open(&url).await.unwrap();
    // A copy taken while in use opens on its own with the paused execution in it.
    let copy = dir.path().join("copy.db");
    second.backup(&copy).await.unwrap();
    let restored = Tollgate::open(format!("sqlite:{}", copy.display()))
        .await
        .unwrap();
    assert_eq!(
        restored.execution(id).await.unwrap().status,
        ExecutionStatus::Paused
    );
    let approval = second
        .inbox(&maria(), &PageRequest::first(10))
        .await
        .unwrap()
        .items[0]
        .id;
    second
        .reject(approval, &maria(), "over the credit limit")
        .await
        .unwrap();
    let done = second.wait_until_stopped(id, WAIT).await.unwrap();
    assert_eq!(done.result, Some(ExecutionResult::Blocked));
}

/// Each refusal is its own variant with the reason, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed() {
    let tollgate = Tollgate::open("sqlite::memory:").await.unwrap();
    let invalid = tollgate
        .create_workflow(json!({"workflow_id": "w", "version": "1",
            "steps": [{"id": "a", "type": "condition",
                       "condition": {"field": "x", "operator": "eq", "value": 1},
                       "on_true": "nowhere"}]}))
        .await
        .unwrap_err();
    let Error::Validation { problems, .. } = invalid else {
        panic!("{invalid:?}")
    };
    assert!(
        problems.iter().any(|p| p.path == "steps[0].on_true"),
        "{problems:?}"
    );

    let workflow = tollgate.create_workflow(big_orders("1")).await.unwrap();
    let taken = tollgate.create_workflow(big_orders("1")).await.unwrap_err();
    assert!(matches!(taken, Error::Conflict(_)), "{taken:?}");

    let id = tollgate
        .send_event(order("o-3", 20_000))
        .await
        .unwrap()
        .started[0]
        .id;
    tollgate.wait_until_stopped(id, WAIT).await.unwrap();
    let approval = tollgate
        .inbox(&maria(), &PageRequest::first(1))
        .await
        .unwrap()
        .items[0]
        .id;
    let clerk = Principal {
        subject: "carl".into(),
        roles: vec!["clerk".into()],
    };
    let forbidden = tollgate.approve(approval, &clerk, None).await.unwrap_err();
    assert!(matches!(forbidden, Error::Forbidden(_)), "{forbidden:?}");
    let no_reason = tollgate.reject(approval, &maria(), " ").await.unwrap_err();
    assert!(matches!(no_reason, Error::Invalid(_)), "{no_reason:?}");
    tollgate.approve(approval, &maria(), None).await.unwrap();
    let twice = tollgate
        .approve(approval, &maria(), None)
        .await
        .unwrap_err();
    assert!(matches!(twice, Error::Conflict(_)), "{twice:?}");

    let missing = tollgate.execution(uuid::Uuid::now_v7()).await.unwrap_err();
    assert!(matches!(missing, Error::NotFound(_)), "{missing:?}");

    tollgate
        .set_workflow_enabled(workflow.id, false)
        .await
        .unwrap();
    let disabled = tollgate
        .execute(workflow.id, json!({}), None)
        .await
        .unwrap_err();
    assert!(matches!(disabled, Error::Conflict(_)), "{disabled:?}");

    let bad = tollgate
        .create_schedule(
            workflow.id,
            NewSchedule {
                timezone: Some("Mars/Olympus".into()),
                ..NewSchedule::cron("61 * * * *")
            },
        )
        .await
        .unwrap_err();
    let Error::Validation { problems, .. } = bad else {
        panic!("{bad:?}")
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["cron", "timezone"]);
    let schedule = tollgate
        .create_schedule(workflow.id, NewSchedule::cron("0 9 * * *"))
        .await
        .unwrap();
    assert_eq!(tollgate.next_fires(schedule.id, 3).await.unwrap().len(), 3);
    let off = tollgate
        .set_schedule_enabled(schedule.id, false)
        .await
        .unwrap();
    assert!(!off.enabled);
}

/// The worker loop runs deadlines on the host's runtime and stops when the host says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_runs_deadlines_and_stops_on_shutdown() {
    let clock = Arc::new(TestClock::new(chrono::Utc::now()));
    let tollgate = Tollgate::builder("sqlite::memory:")
        .clock(clock.clone())
        .worker_options(WorkerOptions {
            poll_interval: Duration::from_millis(20),
            ..WorkerOptions::default()
        })
        .open()
        .await
        .unwrap();
    tollgate.create_workflow(big_orders("1")).await.unwrap();
    let id = tollgate
        .send_event(order("o-4", 30_000))
        .await
        .unwrap()
        .started[0]
        .id;
    tollgate.wait_until_stopped(id, WAIT).await.unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn({
        let tollgate = tollgate.clone();
        async move {
            tollgate
                .run_worker(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    clock.advance(Duration::from_secs(2 * 3600));
    let mut expired = tollgate.execution(id).await.unwrap();
    for _ in 0..500 {
        if expired.status.is_terminal() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        expired = tollgate.execution(id).await.unwrap();
    }
    assert_eq!(
        expired.result,
        Some(ExecutionResult::Blocked),
        "{expired:?}"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, worker)
        .await
        .expect("run_worker returns after shutdown")
        .unwrap()
        .unwrap();
}

/// Two processes on one PostgreSQL database: one sees what the other paused, and of
/// two decisions racing for the last vote exactly one is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_on_one_postgres_cooperate() {
    let url = pg_url("embed_two").await;
    let a = Tollgate::builder(&url).worker_id("a").open().await.unwrap();
    let b = Tollgate::builder(&url).worker_id("b").open().await.unwrap();
    a.create_workflow(big_orders("1")).await.unwrap();
    let id = a.send_event(order("o-5", 99_000)).await.unwrap().started[0].id;
    a.wait_until_stopped(id, WAIT).await.unwrap();

    let approval = b
        .inbox(&maria(), &PageRequest::first(1))
        .await
        .unwrap()
        .items[0]
        .id;
    let mia = Principal {
        subject: "mia".into(),
        roles: vec!["sales_manager".into()],
    };
    let maria = maria();
    let (first, second) = tokio::join!(
        a.approve(approval, &maria, None),
        b.reject(approval, &mia, "no"),
    );
    assert!(
        first.is_ok() != second.is_ok(),
        "exactly one decision wins: {first:?} / {second:?}"
    );
    let loser = first.err().or(second.err()).unwrap();
    assert!(matches!(loser, Error::Conflict(_)), "{loser:?}");
    let done = b.wait_until_stopped(id, WAIT).await.unwrap();
    assert!(done.status.is_terminal());
}

/// A schema that a newer release declared this one too old for is refused when the
/// handle opens, with both sides named; nothing runs on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_too_new_for_the_library_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let url = format!("sqlite:{}", path.display());
    Tollgate::open(&url).await.unwrap().close(WAIT).await;
    {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        sqlx::query("UPDATE schema_compatibility SET min_reader_migration = 99990101000000")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let refused = Tollgate::open(&url).await.unwrap_err();
    let chain = {
        let mut text = refused.to_string();
        let mut cause = std::error::Error::source(&refused);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    };
    assert!(matches!(refused, Error::Backend(_)), "{chain}");
    assert!(
        chain.contains("needs a release that knows migration 99990101000000"),
        "{chain}"
    );
}
