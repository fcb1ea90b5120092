//! Thousands of generated bad requests: never a 5xx, always the error envelope on a 4xx.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{order_workflow, Db, TestApp};

fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("' OR 1=1; DROP TABLE executions; --".to_owned()),
        Just("\u{0000}\u{202e}😀\u{fffd}".to_owned()),
        Just("a".repeat(70_000)),
        Just("{{secrets.x}}".to_owned()),
        Just("../../etc/passwd".to_owned()),
        "\\PC{0,40}",
    ]
}

fn nasty_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("event_type".to_owned()),
                    Just("payload".to_owned()),
                    Just("steps".to_owned()),
                    Just("workflow_id".to_owned()),
                    Just("reason".to_owned()),
                    Just("data".to_owned()),
                    Just("name".to_owned()),
                    Just("roles".to_owned()),
                    Just("event_id".to_owned()),
                    Just("correlation_id".to_owned()),
                    "[a-z_]{1,12}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Body {
    None,
    Json(Value),
    Raw(String, &'static str),
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::None),
        nasty_value().prop_map(Body::Json),
        nasty_string().prop_map(|s| Body::Raw(s, "application/json")),
        nasty_string().prop_map(|s| Body::Raw(s, "text/plain")),
    ]
}

#[test]
fn generated_bad_requests_never_break_the_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, ids) = runtime.block_on(async {
        let app = TestApp::spawn(Db::Sqlite).await;
        let wf = app.workflow(order_workflow("orders")).await;
        let (_, ev) = app
            .post(
                "/api/v1/events?wait=true",
                &app.admin.clone(),
                json!({"event_type": "order.created", "payload": {"total": 50000}}),
            )
            .await;
        let exec = ev["started"][0].as_str().unwrap().to_owned();
        let (_, a) = app
            .get(
                &format!("/api/v1/approvals?execution_id={exec}"),
                &app.admin.clone(),
            )
            .await;
        let approval = a["items"][0]["id"].as_str().unwrap().to_owned();
        (app, vec![wf, exec, approval])
    });
    let routes = tollgate_api::routes::registered();
    let segment = prop_oneof![
        prop::sample::select(ids.clone()),
        Just(uuid::Uuid::now_v7().to_string()),
        nasty_string().prop_map(|s| s
            .chars()
            .filter(|c| !c.is_control() && *c != '/' && *c != '?' && *c != '#')
            .take(60)
            .collect::<String>()),
    ];
    let query = prop_oneof![
        Just(String::new()),
        Just("?limit=-1".to_owned()),
        Just("?limit=99999999999".to_owned()),
        Just("?cursor=%FF%FE".to_owned()),
        Just("?status=';--&wait=maybe".to_owned()),
        Just("?workflow_id=x&mine=2&enabled=yes".to_owned()),
        "[a-z=&%0-9]{0,30}".prop_map(|q| format!("?{q}")),
    ];
    let strategy = (0..routes.len(), segment, query, body(), any::<bool>());
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    });
    let client = reqwest::Client::new();
    runner
        .run(&strategy, |(route, seg, query, body, with_key)| {
            let (method, template) = &routes[route];
            let path = template
                .replace("{id}", &urlencode(&seg))
                .replace("{entity}", &urlencode(&seg))
                .replace("{entity_id}", "x");
            let url = format!("{}{}", app.url(&path), query);
            let method = Method::from_bytes(method.as_str().as_bytes()).unwrap();
            let (status, text) = runtime.block_on(async {
                let mut req = client.request(method.clone(), &url);
                if with_key {
                    req = req.bearer_auth(&app.admin);
                }
                req = match &body {
                    Body::None => req,
                    Body::Json(v) => req.json(v),
                    Body::Raw(s, ct) => req.header("content-type", *ct).body(s.clone()),
                };
                let res = req.send().await.unwrap();
                (res.status(), res.text().await.unwrap())
            });
            prop_assert!(
                !status.is_server_error(),
                "{method} {url} -> {status}: {text}"
            );
            if status.is_client_error() {
                let v: Value = serde_json::from_str(&text).map_err(|_| {
                    TestCaseError::fail(format!("{method} {url} -> {status} non-JSON: {text}"))
                })?;
                prop_assert!(
                    v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                    "{method} {url}: {text}"
                );
            }
            Ok(())
        })
        .unwrap();
    // Still healthy afterwards.
    runtime.block_on(async {
        let (s, _) = app.call(Method::GET, "/health/ready", None, None).await;
        assert_eq!(s, StatusCode::OK);
        app.stop().await;
    });
}

fn urlencode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
