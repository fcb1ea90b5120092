//! Stopping: readiness goes first, and the whole stop fits `--shutdown-timeout` even
//! with an execution stuck in a slow call.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{Db, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_turns_off_before_the_server_stops_serving() {
    let app = TestApp::spawn_with(Db::Sqlite, |args| {
        args.shutdown_grace = Duration::from_millis(800);
    })
    .await;
    let (client, ready, live) = (
        app.client.clone(),
        app.url("/health/ready"),
        app.url("/health/live"),
    );
    assert_eq!(
        client.get(&ready).send().await.unwrap().status(),
        StatusCode::OK
    );
    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    // During the grace: not ready, but still serving.
    let res = client.get(&ready).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("shutting down")),
        "{body}"
    );
    assert_eq!(
        client.get(&live).send().await.unwrap().status(),
        StatusCode::OK
    );
    stopping.await.unwrap();
    assert!(client.get(&live).send().await.is_err(), "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_is_bounded_by_the_shutdown_timeout() {
    // A downstream that answers after 20 s; the step's own timeout is longer.
    let slow = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(20)))
        .mount(&slow)
        .await;
    let app = TestApp::spawn_with(Db::Sqlite, |args| {
        args.shutdown_timeout = Duration::from_secs(1);
    })
    .await;
    let wf = app
        .workflow(json!({
            "workflow_id": "slow", "version": "1", "trigger": {"type": "manual"},
            "steps": [
                {"id": "gate", "type": "approval", "approval": {"approvers": {"role": "m"}, "timeout": "1s", "on_timeout": "approve"},
                 "on_approve": "call", "on_reject": "call"},
                {"id": "call", "type": "execute", "timeout": "1m",
                 "execute": [{"type": "webhook", "url": format!("{}/hook", slow.uri()), "method": "POST", "timeout": "1m"}]}]}))
        .await;
    let admin = app.admin.clone();
    let (s, b) = app
        .post(
            &format!("/api/v1/workflows/{wf}/execute"),
            &admin,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // The worker loop takes the expired gate and sits in the slow call.
    let mut calls = 0;
    for _ in 0..100 {
        calls = slow.received_requests().await.map_or(0, |r| r.len());
        if calls > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(calls, 1, "the worker loop is in the slow call");
    tokio::time::timeout(Duration::from_secs(8), app.stop())
        .await
        .expect("the stop waited for the slow call instead of its 1 s budget");
}
