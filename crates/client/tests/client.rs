//! The client's own behaviour under a scripted server: retries only where safe, typed
//! errors with the request id, timeouts, pages followed as a stream. (Every route against
//! the real server is exercised by the CLI's tests, which are built on this client.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::TryStreamExt;
use tollgate_client::wire::{ExecutionQuery, NewEventDto};
use tollgate_client::{Client, Error, PageRequest};

/// One scripted answer: status, extra headers, body, delay.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

/// A server that answers requests with `script` in order (the last one repeats) and
/// records each request's first line.
fn scripted(script: Vec<Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let a = script[n.min(script.len() - 1)].clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let read = stream.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..read]).into_owned();
                log.lock()
                    .unwrap()
                    .push(request.lines().next().unwrap_or_default().to_owned());
                std::thread::sleep(a.delay);
                let mut head = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    a.status,
                    a.body.len()
                );
                for (k, v) in &a.headers {
                    head.push_str(k);
                    head.push_str(": ");
                    head.push_str(v);
                    head.push_str("\r\n");
                }
                let _ = stream.write_all(format!("{head}\r\n{}", a.body).as_bytes());
            });
        }
    });
    (base, seen)
}

fn client(base: &str) -> Client {
    Client::builder(base)
        .key("tg_test")
        .retries(2, Duration::from_millis(10))
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

const UNAVAILABLE: &str = r#"{"error": {"code": "unavailable", "message": "the database cannot be reached", "details": []}}"#;

#[tokio::test]
async fn reads_are_retried_after_a_transient_failure() {
    let (base, seen) = scripted(vec![
        answer(503, UNAVAILABLE),
        answer(503, UNAVAILABLE),
        answer(200, r#"{"name": "ops", "roles": ["operator"]}"#),
    ]);
    let me = client(&base).whoami().await.unwrap();
    assert_eq!(me.name, "ops");
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn an_event_without_an_id_is_sent_once_with_an_id_it_is_retried() {
    let (base, seen) = scripted(vec![answer(503, UNAVAILABLE)]);
    let c = client(&base);
    let err = c
        .send_event(&NewEventDto::new("x", serde_json::json!({})), false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("unavailable"));
    assert!(err.is_transient());
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "not safe to repeat: sent once"
    );

    let err = c
        .send_event(
            &NewEventDto::new("x", serde_json::json!({})).with_id("e-1"),
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(
        seen.lock().unwrap().len(),
        1 + 3,
        "with an event_id: 1 + 2 retries"
    );
}

#[tokio::test]
async fn decisions_are_not_retried() {
    let (base, seen) = scripted(vec![answer(503, UNAVAILABLE)]);
    let id = uuid::Uuid::now_v7();
    let err = client(&base)
        .approve(id, &tollgate_client::wire::DecisionBody::default(), true)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0],
        format!("POST /api/v1/approvals/{id}/approve?wait=true HTTP/1.1")
    );
}

#[tokio::test]
async fn a_refusal_is_typed_with_its_details_and_request_id() {
    let mut a = answer(
        400,
        r#"{"error": {"code": "validation_failed", "message": "the workflow definition has 1 error(s)",
            "details": [{"path": "steps[0].on_true", "message": "no step `x`"}]}}"#,
    );
    a.headers.push(("x-request-id", "req-42".to_owned()));
    let (base, _) = scripted(vec![a]);
    let err = client(&base)
        .create_workflow(&serde_json::json!({}))
        .await
        .unwrap_err();
    match &err {
        Error::Api {
            status,
            code,
            details,
            request_id,
            ..
        } => {
            assert_eq!(*status, 400);
            assert_eq!(code, "validation_failed");
            assert_eq!(details[0].path, "steps[0].on_true");
            assert_eq!(request_id.as_deref(), Some("req-42"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(err.to_string(), "the workflow definition has 1 error(s)");
    assert_eq!(err.request_id(), Some("req-42"));
}

#[tokio::test]
async fn an_answer_that_is_not_the_api_is_a_protocol_error() {
    let mut a = answer(502, "<html>bad gateway</html>");
    a.headers.push(("x-request-id", "proxy-1".to_owned()));
    let (base, _) = scripted(vec![a]);
    let err = Client::builder(&base)
        .retries(0, Duration::ZERO)
        .build()
        .unwrap()
        .execution(uuid::Uuid::now_v7())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Protocol { status: 502, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("<html>bad gateway"), "{err}");
}

#[tokio::test]
async fn a_slow_server_is_a_timeout_and_nobody_listening_is_connect() {
    let mut slow = answer(200, "{}");
    slow.delay = Duration::from_secs(3);
    let (base, seen) = scripted(vec![slow]);
    let c = Client::builder(&base)
        .timeout(Duration::from_millis(200))
        .retries(1, Duration::from_millis(10))
        .build()
        .unwrap();
    let err = c.whoami().await.unwrap_err();
    assert!(
        matches!(err, Error::Timeout { timeout, .. } if timeout == Duration::from_millis(200)),
        "{err:?}"
    );
    let err = c
        .with_timeout(Duration::from_millis(50))
        .whoami()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { timeout, .. } if timeout == Duration::from_millis(50)),
        "{err:?}"
    );
    assert!(err.is_unreachable());
    assert_eq!(seen.lock().unwrap().len(), 4, "each read is retried once");

    // Port 1 (tcpmux) has no listener; a port freed by `bind(0)` could be taken
    // meanwhile by another test's scripted server.
    let port = 1;
    let err = client(&format!("http://127.0.0.1:{port}"))
        .whoami()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(err
        .to_string()
        .starts_with(&format!("cannot connect to http://127.0.0.1:{port}")));
}

#[tokio::test]
async fn streams_follow_the_cursors_and_filters_become_the_query() {
    let page = |ids: &[&str], next: Option<&str>| {
        let items: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| serde_json::json!({"id": id, "name": "k", "roles": [], "created_at": "2026-01-01T00:00:00Z"}))
            .collect();
        answer(
            200,
            &serde_json::json!({"items": items, "next_cursor": next}).to_string(),
        )
    };
    let a = uuid::Uuid::now_v7().to_string();
    let b = uuid::Uuid::now_v7().to_string();
    let c = uuid::Uuid::now_v7().to_string();
    let (base, seen) = scripted(vec![page(&[&a, &b], Some("cur 1")), page(&[&c], None)]);
    let keys: Vec<_> = client(&base).api_keys_stream().try_collect().await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.id.to_string()).collect::<Vec<_>>(),
        [a, b, c]
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], "GET /api/v1/api-keys?limit=200 HTTP/1.1");
    assert_eq!(
        seen[1],
        "GET /api/v1/api-keys?limit=200&cursor=cur+1 HTTP/1.1"
    );

    let (base, seen) = scripted(vec![answer(200, r#"{"items": [], "next_cursor": null}"#)]);
    let filter = ExecutionQuery {
        status: Some("paused".into()),
        workflow_id: Some("big orders".into()),
        ..ExecutionQuery::default()
    };
    client(&base)
        .executions(&filter, &PageRequest::first(5))
        .await
        .unwrap();
    assert_eq!(
        seen.lock().unwrap()[0],
        "GET /api/v1/executions?status=paused&workflow_id=big+orders&limit=5 HTTP/1.1"
    );
}

#[test]
fn a_base_url_must_be_http() {
    for bad in ["ftp://x", "not a url", "http://"] {
        let err = Client::builder(bad).build().unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{bad}: {err:?}");
    }
    let err = Client::builder("http://x")
        .key("bad\nkey")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("header"), "{err}");
}
