//! Scheduled triggers: through HTTP, and worker loops racing on PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tollgate_api::config::DatabaseArgs;
use tollgate_engine::{Engine, EngineOptions, TestClock};
use tollgate_model::records::{snapshot_id, Workflow};
use tollgate_model::schedule::{CatchUp, Schedule};
use tollgate_resumer::{Worker, WorkerOptions};
use tollgate_store::{ExecutionFilter, LeaseClaim, PageRequest, Store};
use uuid::Uuid;

use crate::{fresh_pg_database, Db, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_through_http_on_sqlite() {
    schedules_through_http(TestApp::spawn(Db::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_through_http_on_postgres() {
    schedules_through_http(TestApp::spawn(Db::Postgres).await).await;
}

async fn ticks(app: &TestApp, schedule: &str) -> Vec<serde_json::Value> {
    let (s, b) = app
        .get(
            &format!("/api/v1/schedules/{schedule}/ticks?limit=500"),
            &app.admin.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b["items"].as_array().unwrap().clone()
}

async fn schedules_through_http(app: TestApp) {
    let admin = app.admin.clone();
    let viewer = app.key("viewer", &["viewer"]).await;
    let wf = app
        .workflow(
            json!({"workflow_id": "tick", "version": "1", "trigger": {"type": "manual"},
                         "steps": [{"id": "done", "type": "action", "action": "allow"}]}),
        )
        .await;

    // Validation: every problem with its field.
    let (s, b) = app
        .post(
            &format!("/api/v1/workflows/{wf}/schedules"),
            &admin,
            json!({"cron": "61 * * * *", "timezone": "Mars/Base"}),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("validation_failed")),
        "{b}"
    );
    let paths: Vec<&str> = b["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["cron", "timezone"]);
    let (s, _) = app
        .post(
            &format!("/api/v1/workflows/{wf}/schedules"),
            &admin,
            json!({"cron": "@daily", "catch_up": "sometimes"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = app
        .post(
            &format!("/api/v1/workflows/{}/schedules", Uuid::now_v7()),
            &admin,
            json!({"cron": "@daily"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .post(
            &format!("/api/v1/workflows/{wf}/schedules"),
            &viewer,
            json!({"cron": "@daily"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Every second.
    let (s, created) = app
        .post(
            &format!("/api/v1/workflows/{wf}/schedules"),
            &admin,
            json!({"cron": "* * * * * *"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (
            created["timezone"].as_str(),
            created["catch_up"].as_str(),
            created["enabled"].as_bool()
        ),
        (Some("UTC"), Some("skip"), Some(true))
    );
    let (s, next) = app
        .get(&format!("/api/v1/schedules/{id}/next?count=5"), &viewer)
        .await;
    assert_eq!(s, StatusCode::OK);
    let times: Vec<chrono::DateTime<chrono::Utc>> = next["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(times.len(), 5);
    assert!(
        times
            .windows(2)
            .all(|w| w[1] - w[0] == chrono::TimeDelta::seconds(1)),
        "{times:?}"
    );
    assert_eq!(
        app.get(&format!("/api/v1/schedules/{id}/next?count=0"), &viewer)
            .await
            .0,
        StatusCode::BAD_REQUEST
    );

    // Ticks arrive, one execution each.
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = ticks(&app, &id).await;
        if seen.iter().filter(|t| t["outcome"] == "completed").count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done: Vec<_> = seen
        .iter()
        .filter(|t| t["outcome"] == "completed")
        .collect();
    assert!(done.len() >= 3, "{seen:?}");
    let mut executions: Vec<&str> = done
        .iter()
        .map(|t| t["execution_id"].as_str().unwrap())
        .collect();
    executions.sort_unstable();
    executions.dedup();
    assert_eq!(executions.len(), done.len(), "one execution per tick");
    let (_, e) = app
        .get(&format!("/api/v1/executions/{}", executions[0]), &viewer)
        .await;
    assert_eq!(e["trigger_event"], "schedule");
    assert_eq!(e["trigger_payload"]["schedule"]["id"], id.as_str());

    // Disable: the ticks stop.
    let (s, b) = app
        .call(
            Method::PUT,
            &format!("/api/v1/schedules/{id}"),
            Some(&admin),
            Some(json!({"cron": "* * * * * *", "enabled": false})),
        )
        .await;
    assert_eq!((s, &b["enabled"]), (StatusCode::OK, &json!(false)));
    tokio::time::sleep(Duration::from_millis(400)).await; // a pass that claimed before the PUT finishes
    let before = ticks(&app, &id).await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        ticks(&app, &id).await.len(),
        before,
        "a disabled schedule fires nothing"
    );

    // Lists, the workflow's own trigger schedule, and deletion.
    let (_, list) = app
        .get(&format!("/api/v1/workflows/{wf}/schedules"), &viewer)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let mut def = json!({"workflow_id": "report", "version": "1", "trigger": {"type": "schedule", "cron": "0 */6 * * *", "timezone": "Europe/Berlin"},
                         "steps": [{"id": "done", "type": "action", "action": "allow"}]});
    let report = app.workflow(def.clone()).await;
    let (_, own) = app
        .get(&format!("/api/v1/workflows/{report}/schedules"), &viewer)
        .await;
    let own = own["items"][0].clone();
    assert_eq!(
        (
            own["from_trigger"].as_bool(),
            own["cron"].as_str(),
            own["timezone"].as_str()
        ),
        (Some(true), Some("0 */6 * * *"), Some("Europe/Berlin"))
    );
    let own_id = own["id"].as_str().unwrap();
    let (s, b) = app
        .call(
            Method::PUT,
            &format!("/api/v1/schedules/{own_id}"),
            Some(&admin),
            Some(json!({"cron": "@hourly", "timezone": "Europe/Berlin"})),
        )
        .await;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (s, b) = app
        .call(
            Method::PUT,
            &format!("/api/v1/schedules/{own_id}"),
            Some(&admin),
            Some(json!({"cron": "0 */6 * * *", "timezone": "Europe/Berlin", "catch_up": "all"})),
        )
        .await;
    assert_eq!((s, b["catch_up"].as_str()), (StatusCode::OK, Some("all")));
    def["trigger"]["cron"] = json!("@hourly");
    let (s, _) = app
        .call(
            Method::PUT,
            &format!("/api/v1/workflows/{report}"),
            Some(&admin),
            Some(def),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, own) = app
        .get(&format!("/api/v1/schedules/{own_id}"), &viewer)
        .await;
    assert_eq!(
        (own["cron"].as_str(), own["catch_up"].as_str()),
        (Some("@hourly"), Some("all")),
        "follows the definition, keeps its policy"
    );
    let (_, all) = app.get("/api/v1/schedules", &viewer).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (_, filtered) = app
        .get(&format!("/api/v1/schedules?workflow_id={report}"), &viewer)
        .await;
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/schedules/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/schedules/{id}"), &viewer).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/schedules/{id}/ticks"), &viewer)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/workflows/{report}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/schedules/{own_id}"), &viewer)
            .await
            .0,
        StatusCode::NOT_FOUND,
        "deleting a workflow deletes its schedules"
    );

    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("tollgate_schedule_ticks_fired_total"));
    assert!(text.contains("tollgate_schedule_tick_lag_seconds_bucket"));
    app.stop().await;
}

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

async fn pg_store() -> Arc<dyn Store> {
    let url = fresh_pg_database().await;
    let backend = DatabaseArgs {
        data_dir: std::env::temp_dir(),
        database_url: Some(url),
        database_max_connections: 16,
        database_statement_timeout: Duration::from_secs(30),
        database_lock_timeout: Duration::from_secs(10),
        database_idle_in_transaction_timeout: Duration::from_secs(60),
        migrate: tollgate_bootstrap::MigrateMode::Auto,
        max_clock_skew: Duration::from_secs(5),
        sqlite_synchronous: tollgate_bootstrap::config::SqliteSync::Normal,
    }
    .open()
    .await
    .unwrap();
    backend.store
}

fn worker(store: &Arc<dyn Store>, clock: &Arc<TestClock>, id: &str) -> Worker {
    let engine = Engine::builder(store.clone())
        .clock(clock.clone())
        .options(EngineOptions {
            worker_id: id.into(),
            ..EngineOptions::default()
        })
        .build()
        .unwrap();
    Worker::new(
        engine,
        WorkerOptions {
            batch: 50,
            concurrency: 8,
            poll_interval: Duration::from_millis(50),
            ..WorkerOptions::default()
        },
    )
}

async fn every_second_workflow(store: &Arc<dyn Store>) -> Workflow {
    let doc = json!({"workflow_id": "race", "version": "1", "trigger": {"type": "manual"},
                     "steps": [{"id": "done", "type": "action", "action": "allow"}]});
    let definition = Arc::new(tollgate_model::load(&doc).unwrap().definition);
    store
        .create_workflow(Workflow {
            id: Uuid::now_v7(),
            snapshot_id: snapshot_id(&definition),
            enabled: true,
            definition,
            created_at: t0(),
            updated_at: t0(),
        })
        .await
        .unwrap()
}

fn every_second(w: &Workflow) -> Schedule {
    Schedule {
        id: Uuid::now_v7(),
        workflow_id: w.id,
        cron: "* * * * * *".into(),
        timezone: "UTC".into(),
        enabled: true,
        catch_up: CatchUp::Skip,
        from_trigger: false,
        next_fire_at: Some(t0()),
        last_fired_at: None,
        created_at: t0(),
        updated_at: t0(),
    }
}

/// Three worker loops race over 200 schedules due in the same second, for 30 simulated
/// seconds: every tick starts exactly one execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_start_every_tick_exactly_once_on_postgres() {
    let store = pg_store().await;
    let clock = Arc::new(TestClock::new(t0()));
    let w = every_second_workflow(&store).await;
    let mut schedules = Vec::new();
    for _ in 0..200 {
        schedules.push(store.create_schedule(every_second(&w)).await.unwrap().id);
    }
    let workers: Vec<Worker> = ["a", "b", "c"]
        .iter()
        .map(|id| worker(&store, &clock, id))
        .collect();
    let mut started = 0;
    for second in 0..30 {
        clock.set(t0() + chrono::TimeDelta::seconds(second));
        // Each loop passes until it finds nothing, all three at once.
        let passes = workers.iter().map(|w| async move {
            let mut n = 0;
            loop {
                let report = w.tick().await.unwrap();
                n += report.ticks;
                if report.ticks == 0 {
                    return n;
                }
            }
        });
        started += futures_util::future::join_all(passes)
            .await
            .into_iter()
            .sum::<usize>();
    }
    assert_eq!(started, 200 * 30);
    for id in &schedules {
        let ticks = store
            .list_ticks(*id, &PageRequest::first(100))
            .await
            .unwrap()
            .items;
        assert_eq!(ticks.len(), 30, "schedule {id}");
        assert!(ticks.iter().all(|t| t.tick.execution_id.is_some()));
    }
    let mut executions = 0;
    let mut page = PageRequest::first(500);
    loop {
        let got = store
            .list_executions(&ExecutionFilter::default(), &page)
            .await
            .unwrap();
        executions += got.items.len();
        match got.next_cursor {
            Some(c) => page = PageRequest::after(500, c),
            None => break,
        }
    }
    assert_eq!(executions, 200 * 30, "exactly one execution per tick");
}

/// A worker that claimed ticks and died before starting them: after its lease, another
/// worker starts each tick exactly once, and the dead one's late start is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_claimed_by_a_dead_worker_still_starts_once_on_postgres() {
    let store = pg_store().await;
    let clock = Arc::new(TestClock::new(t0()));
    let w = every_second_workflow(&store).await;
    for _ in 0..5 {
        store.create_schedule(every_second(&w)).await.unwrap();
    }
    let dead = LeaseClaim {
        owner: "dead".into(),
        expires_at: t0() + chrono::TimeDelta::seconds(30),
    };
    let orphaned = store.claim_ticks(t0(), &dead, 100).await.unwrap();
    assert_eq!(orphaned.len(), 5);
    let survivor = worker(&store, &clock, "survivor");
    clock.set(t0() + chrono::TimeDelta::milliseconds(500));
    assert_eq!(
        survivor.tick().await.unwrap().ticks,
        0,
        "held by the dead worker's lease"
    );
    clock.set(t0() + chrono::TimeDelta::seconds(31));
    let report = survivor.tick().await.unwrap();
    // Five orphaned ticks, plus each schedule's latest tick (missed ones collapse).
    assert_eq!(report.ticks, 10);
    let execution = tollgate_store::testkit::new_execution(&w, "dead");
    for claimed in &orphaned {
        let late = store
            .start_tick(claimed.tick.id, "dead", execution.clone(), t0())
            .await;
        assert!(late.unwrap_err().is_conflict());
        let ticks = store
            .list_ticks(claimed.schedule.id, &PageRequest::first(10))
            .await
            .unwrap()
            .items;
        let tick = ticks.iter().find(|t| t.tick.id == claimed.tick.id).unwrap();
        assert!(tick.tick.execution_id.is_some());
    }
    let all = store
        .list_executions(&ExecutionFilter::default(), &PageRequest::first(500))
        .await
        .unwrap();
    assert_eq!(all.items.len(), 10);
}
