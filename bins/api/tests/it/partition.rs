//! The network to PostgreSQL goes silent under load: requests are answered `503` within
//! their bound instead of hanging, readiness says so, nothing accepted before is lost,
//! and service returns within seconds of the network.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::ConnectOptions;
use tollgate_postgres::testing::Partition;

use crate::{fresh_pg_database, order_workflow, Db, TestApp};

/// How long the network stays down: a minute, so that every bound fires many times over
/// (requests 3 s, batch calls 6 s) and pools, batch writers and the wake-up listener all
/// give up on their connections before it returns. The test runs beside the others, so
/// it costs CI little wall time.
const OUTAGE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_database_network_fails_requests_fast_and_service_returns() {
    let url = fresh_pg_database().await;
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let partition = Partition::to((options.get_host().to_owned(), options.get_port()))
        .await
        .unwrap();
    let proxied = options
        .host("127.0.0.1")
        .port(partition.port)
        .to_url_lossy()
        .to_string();
    let app = TestApp::spawn_with(Db::Postgres, |args| {
        args.database.database_url = Some(proxied);
        args.database.database_statement_timeout = Duration::from_secs(1);
        args.request_timeout = Duration::from_secs(3);
    })
    .await;
    let feeder = app.key("feeder", &["service"]).await;
    app.workflow(order_workflow("big")).await;
    // Before: executions paused at an approval.
    let mut paused = Vec::new();
    for i in 0..4 {
        let (s, b) = app
            .post(
                "/api/v1/events?wait=true",
                &feeder,
                json!({"event_type": "order.created", "payload": {"order_id": format!("o-{i}"), "total": 50000}}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        paused.push(b["started"][0].as_str().unwrap().to_owned());
    }

    partition.set_down(true);
    let cut = Instant::now();
    // Under load: reads, events and listings from several callers at once, repeatedly,
    // for the whole outage. Every answer must come within the request bound (plus a
    // margin for the client), and be a 503.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut callers = Vec::new();
    for n in 0..6 {
        let client = client.clone();
        let base = app.url("");
        let key = feeder.clone();
        let admin = app.admin.clone();
        let first = paused[0].clone();
        callers.push(tokio::spawn(async move {
            let mut answers: Vec<(u16, Duration)> = Vec::new();
            while cut.elapsed() < OUTAGE {
                let began = Instant::now();
                let request = match n % 3 {
                    0 => client
                        .post(format!("{base}/api/v1/events"))
                        .bearer_auth(&key)
                        .json(&json!({"event_type": "order.created", "payload": {"order_id": "late", "total": 50000}})),
                    1 => client
                        .get(format!("{base}/api/v1/executions/{first}"))
                        .bearer_auth(&admin),
                    _ => client
                        .get(format!("{base}/api/v1/executions"))
                        .bearer_auth(&admin),
                };
                let status = request
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                answers.push((status, began.elapsed()));
            }
            answers
        }));
    }
    let mut answers = Vec::new();
    for caller in callers {
        answers.extend(caller.await.unwrap());
    }
    assert!(answers.len() >= 6, "{answers:?}");
    eprintln!(
        "{} answers during a {OUTAGE:?} outage, the slowest after {:?}",
        answers.len(),
        answers
            .iter()
            .map(|(_, took)| *took)
            .max()
            .unwrap_or_default()
    );
    for (status, took) in &answers {
        assert_eq!(
            *status, 503,
            "every call during the outage is a 503: {answers:?}"
        );
        assert!(
            *took < Duration::from_secs(8),
            "answered after {took:?}: {answers:?}"
        );
    }
    let (s, _) = app.get("/health/ready", "").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let metrics = app.metrics().await;
    // The scrape still works, and says the database did not answer.
    assert!(
        metrics.contains("tollgate_database_reachable 0"),
        "{metrics}"
    );

    partition.set_down(false);
    let back = Instant::now();
    let mut served = false;
    while back.elapsed() < Duration::from_secs(30) {
        let (s, _) = app.get("/health/ready", "").await;
        let (e, _) = app.get("/api/v1/executions", &app.admin.clone()).await;
        if s == StatusCode::OK && e == StatusCode::OK {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(served, "not serving 30 s after the network returned");
    eprintln!(
        "serving again {:?} after the network returned",
        back.elapsed()
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tollgate_database_reachable 1"),
        "{metrics}"
    );
    // Nothing accepted before the outage was lost: the paused executions are still
    // paused at their approvals, and the service takes new events again.
    for id in &paused {
        let (s, e): (StatusCode, Value) = app
            .get(&format!("/api/v1/executions/{id}"), &app.admin.clone())
            .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(e["status"], "paused", "{e}");
    }
    let (s, b) = app
        .post(
            "/api/v1/events?wait=true",
            &feeder,
            json!({"event_type": "order.created", "payload": {"order_id": "after", "total": 50000}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    app.stop().await;
}
