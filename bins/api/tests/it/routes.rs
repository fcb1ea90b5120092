//! Every route of docs/api.md and its error codes, on SQLite and on PostgreSQL.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{order_workflow, Db, TestApp};

macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                use crate::{Db, TestApp};

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_sqlite() {
                    super::$scenario(TestApp::spawn(Db::Sqlite).await).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn on_postgres() {
                    super::$scenario(TestApp::spawn(Db::Postgres).await).await;
                }
            }
        )*
    };
}

// Every route, one scenario per resource, so that one failure does not hide the rest.
on_both_backends!(
    meta_routes,
    key_routes,
    workflow_routes,
    execution_routes,
    operator_commands_and_direct_events,
    failed_executions_are_retried,
    paused_executions_are_migrated,
    unreadable_executions_are_quarantined,
    first_of_gates_through_http,
);

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no envelope>")
}

/// Keys for the roles the scenarios act as, besides the admin's.
struct Keys {
    viewer: String,
    operator: String,
    service: String,
    maria: String,
}

impl Keys {
    async fn new(app: &TestApp) -> Self {
        Self {
            viewer: app.key("viewer", &["viewer"]).await,
            operator: app.key("ops", &["operator"]).await,
            service: app.key("shop", &["service"]).await,
            maria: app.key("maria", &["sales_manager"]).await,
        }
    }
}

/// Health, metrics and OpenAPI (open without a key), and protocol-level errors.
async fn meta_routes(app: TestApp) {
    let admin = app.admin.clone();

    // Health, metrics, OpenAPI: open without a key.
    let (s, b) = app.call(Method::GET, "/health/live", None, None).await;
    assert_eq!((s, b), (StatusCode::OK, json!({"status": "ok"})));
    // The embedded worker loop beats at its first pass (then every 200 ms here).
    let mut ready = Value::Null;
    for _ in 0..100 {
        let (s, b) = app.call(Method::GET, "/health/ready", None, None).await;
        assert_eq!(s, StatusCode::OK);
        ready = b;
        if ready["workers"].as_array().is_some_and(|w| !w.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        (
            &ready["status"],
            &ready["database"],
            &ready["overdue_gates"]
        ),
        (&json!("ready"), &json!("ok"), &json!(0)),
        "{ready}"
    );
    assert!(ready.get("warning").is_none(), "{ready}");
    let worker = &ready["workers"][0];
    assert!(
        worker["worker_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("api")),
        "{ready}"
    );
    for field in ["started_at", "last_heartbeat", "last_claim_at", "claimed"] {
        assert!(worker.get(field).is_some(), "{field}: {ready}");
    }
    let (s, b) = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(b["openapi"].as_str().unwrap().starts_with("3."));

    // Protocol-level errors: all in the envelope, with a request id.
    let res = app
        .client
        .get(app.url("/api/v1/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(code(&res.json().await.unwrap()), "not_found");
    let res = app
        .client
        .patch(app.url("/api/v1/workflows"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "GET, POST");
    assert_eq!(code(&res.json().await.unwrap()), "method_not_allowed");
    let res = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(code(&res.json().await.unwrap()), "unsupported_media_type");
    let huge = json!({"event_type": "x", "payload": {"blob": "a".repeat(100 * 1024)}});
    let (s, b) = app.post("/api/v1/events", &admin, huge).await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (s, b) = app
        .call(Method::GET, "/api/v1/workflows", Some("tg_0000"), None)
        .await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let res = app
        .client
        .get(app.url("/api/v1/workflows"))
        .header("authorization", "Basic abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    app.stop().await;
}

/// API keys: created, refused, listed without their secrets, revoked.
async fn key_routes(app: TestApp) {
    let admin = app.admin.clone();

    // Keys.
    app.key("viewer", &["viewer"]).await;
    let operator = app.key("ops", &["operator"]).await;
    app.key("shop", &["service"]).await;
    app.key("maria", &["sales_manager"]).await;
    let (s, b) = app
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({"name": "maria", "roles": ["x"]}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));
    let (s, b) = app
        .post(
            "/api/v1/api-keys",
            &admin,
            json!({"name": "r", "roles": []}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = app
        .post("/api/v1/api-keys", &admin, json!({"name": "r"}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    assert!(
        b["error"]["message"].as_str().unwrap().contains("roles"),
        "{b}"
    );
    let (s, b) = app
        .post(
            "/api/v1/api-keys",
            &operator,
            json!({"name": "x", "roles": ["admin"]}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, b) = app.get("/api/v1/api-keys", &admin).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b["items"].as_array().unwrap().len(),
        5,
        "admin, viewer, ops, shop, maria"
    );
    assert!(b["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("key").is_none() && k.get("key_hash").is_none()));
    let temp = app.key("temp", &["viewer"]).await;
    let temp_id = app.get("/api/v1/api-keys?limit=500", &admin).await.1["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "temp")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get("/api/v1/workflows", &temp).await.0, StatusCode::OK);
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{temp_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = app.get("/api/v1/workflows", &temp).await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, b) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{temp_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));

    app.stop().await;
}

/// Workflows: create, read, list, replace, enable, disable, execute, delete.
async fn workflow_routes(app: TestApp) {
    let Keys {
        viewer, operator, ..
    } = Keys::new(&app).await;

    // Workflows.
    let (s, b) = app
        .post("/api/v1/workflows", &operator, order_workflow("orders"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let wf = b["id"].as_str().unwrap().to_owned();
    for field in [
        "id",
        "workflow_id",
        "version",
        "name",
        "enabled",
        "tags",
        "trigger",
        "context",
        "timeout",
        "steps",
        "created_at",
        "updated_at",
    ] {
        assert!(b.get(field).is_some(), "workflow lacks {field}: {b}");
    }
    let (s, b) = app
        .post("/api/v1/workflows", &operator, order_workflow("orders"))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));
    // A path names one version by its server id; the author's key there is a 400 that
    // says where that name is accepted, and the list filter accepts it.
    let (s, b) = app.get("/api/v1/workflows/orders", &viewer).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let message = b["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`orders` is not a valid workflow id")
            && message.contains("GET /api/v1/workflows?workflow_id=orders"),
        "{message}"
    );
    let (s, b) = app
        .get("/api/v1/workflows?workflow_id=orders", &viewer)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["items"][0]["id"], wf.as_str());

    // A declared input: a path it does not declare is a warning in the answer, or a
    // validation error under `strict_paths`.
    let declared = |strict: bool| {
        json!({"workflow_id": "claims", "version": if strict { "2" } else { "1" }, "strict_paths": strict,
            "input_schema": {"type": "object", "properties": {"amount": {"type": "number"}}},
            "steps": [{"id": "small", "type": "condition",
                       "condition": {"field": "amout", "operator": "lt", "value": 100},
                       "on_true": "ok", "on_false": "ok"},
                      {"id": "ok", "type": "action", "action": "allow"}]})
    };
    let (s, b) = app
        .post("/api/v1/workflows", &operator, declared(false))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["warnings"][0]["path"], "steps[0].condition.field", "{b}");
    assert!(
        b["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `amount`?"),
        "{b}"
    );
    assert_eq!(b["input_schema"]["properties"]["amount"]["type"], "number");
    assert_eq!(b["strict_paths"], false);
    let (s, b) = app
        .post("/api/v1/workflows", &operator, declared(true))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "validation_failed"),
        "{b}"
    );
    assert_eq!(b["error"]["details"][0]["path"], "steps[0].condition.field");
    let broken = json!({"workflow_id": "b", "version": "1", "steps": [
        {"id": "a", "type": "condition", "condition": {"field": "x", "operator": "nope", "value": 1}, "on_true": "missing"}]});
    let (s, b) = app
        .post("/api/v1/workflows", &operator, broken.clone())
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "validation_failed")
    );
    let paths: Vec<&str> = b["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"steps[0].condition.operator") && paths.contains(&"steps[0].on_true"),
        "{b}"
    );
    let (s, b) = app
        .post("/api/v1/workflows/validate", &viewer, broken)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["valid"], false);
    assert!(b["errors"].as_array().unwrap().len() >= 2);
    let (s, b) = app
        .post("/api/v1/workflows/validate", &viewer, order_workflow("x"))
        .await;
    assert_eq!((s, &b["valid"]), (StatusCode::OK, &json!(true)));
    let res = app
        .client
        .post(app.url("/api/v1/workflows/validate"))
        .bearer_auth(&viewer)
        .header("content-type", "application/json")
        .body("{\"steps\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let b: Value = res.json().await.unwrap();
    assert_eq!(code(&b), "bad_request");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 1 column"),
        "{b}"
    );

    let mut quotes = order_workflow("quotes");
    quotes["tags"] = json!(["sales"]);
    quotes["trigger"] = json!({"type": "manual"});
    let quotes_id = app.workflow(quotes.clone()).await;
    let (_, b) = app.get("/api/v1/workflows?tag=sales", &viewer).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    let (_, b) = app
        .get("/api/v1/workflows?workflow_id=orders", &viewer)
        .await;
    assert_eq!(b["items"][0]["id"], wf.as_str());
    let (_, b) = app.get("/api/v1/workflows?limit=1", &viewer).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    let cursor = b["next_cursor"].as_str().unwrap().to_owned();
    let (_, b2) = app
        .get(
            &format!("/api/v1/workflows?limit=1&cursor={cursor}"),
            &viewer,
        )
        .await;
    assert_ne!(b["items"][0]["id"], b2["items"][0]["id"]);
    let (s, b) = app.get("/api/v1/workflows?cursor=garbage", &viewer).await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = app.get("/api/v1/workflows?enabled=maybe", &viewer).await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = app.get(&format!("/api/v1/workflows/{wf}"), &viewer).await;
    assert_eq!((s, &b["workflow_id"]), (StatusCode::OK, &json!("orders")));
    let unknown = uuid::Uuid::now_v7();
    let (s, b) = app
        .get(&format!("/api/v1/workflows/{unknown}"), &viewer)
        .await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, b) = app.get("/api/v1/workflows/not-a-uuid", &viewer).await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));

    // PUT: a new definition; a taken (workflow_id, version) pair is a conflict.
    let mut renamed = quotes.clone();
    renamed["name"] = json!("Quotes v1");
    let (s, b) = app
        .call(
            Method::PUT,
            &format!("/api/v1/workflows/{quotes_id}"),
            Some(&operator),
            Some(renamed),
        )
        .await;
    assert_eq!((s, &b["name"]), (StatusCode::OK, &json!("Quotes v1")));
    let (s, b) = app
        .call(
            Method::PUT,
            &format!("/api/v1/workflows/{quotes_id}"),
            Some(&operator),
            Some(order_workflow("orders")),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));
    let (s, b) = app
        .call(
            Method::PUT,
            &format!("/api/v1/workflows/{unknown}"),
            Some(&operator),
            Some(order_workflow("zzz")),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));

    // Disable / enable / execute.
    let (s, b) = app
        .post(
            &format!("/api/v1/workflows/{quotes_id}/disable"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!((s, &b["enabled"]), (StatusCode::OK, &json!(false)));
    let (s, b) = app
        .post(
            &format!("/api/v1/workflows/{quotes_id}/execute"),
            &operator,
            json!({"payload": {"total": 5}}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));
    let (s, _) = app
        .post(
            &format!("/api/v1/workflows/{quotes_id}/enable"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = app
        .post(
            &format!("/api/v1/workflows/{quotes_id}/execute?wait=true"),
            &operator,
            json!({"payload": {"total": 5}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        (&b["status"], &b["result"], &b["trigger_event"]),
        (&json!("completed"), &json!("allowed"), &json!("manual"))
    );
    let manual_exec = b["id"].as_str().unwrap().to_owned();
    let (s, b) = app
        .post(
            &format!("/api/v1/workflows/{unknown}/execute"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, b) = app
        .post(
            &format!("/api/v1/workflows/{quotes_id}/execute"),
            &operator,
            json!({"payload": [1]}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/workflows/{quotes_id}"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/v1/workflows/{quotes_id}"), &viewer)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/executions/{manual_exec}"), &viewer)
            .await
            .0,
        StatusCode::OK,
        "executions outlive their workflow"
    );
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/workflows/{quotes_id}"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    app.stop().await;
}

/// Events, executions, approvals and what they leave behind (trace, audit, records,
/// notifications), and the metrics they move.
async fn execution_routes(app: TestApp) {
    let Keys {
        viewer,
        operator,
        service,
        maria,
    } = Keys::new(&app).await;
    let (s, b) = app
        .post("/api/v1/workflows", &operator, order_workflow("orders"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let wf = b["id"].as_str().unwrap().to_owned();
    let unknown = uuid::Uuid::now_v7();

    // Events: start, idempotency, lookup.
    let event = json!({"event_type": "order.created", "payload": {"total": 20000, "order_id": "o-1"}, "source": "shop", "event_id": "o-1-created"});
    let (s, first) = app
        .post("/api/v1/events?wait=true", &service, event.clone())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["started"].as_array().unwrap().len(), 1);
    assert_eq!(first["resumed"], json!([]));
    let exec = first["started"][0].as_str().unwrap().to_owned();
    // The answer says what happened: idempotent, one workflow matched, and (waited for)
    // where the execution stands.
    assert_eq!(
        (&first["idempotent"], &first["matched_workflows"]),
        (&json!(true), &json!(1))
    );
    assert_eq!(
        first["executions"],
        json!([{"id": exec, "status": "paused", "result": null}])
    );
    let (s, again) = app.post("/api/v1/events?wait=true", &service, event).await;
    assert_eq!((s, &again), (StatusCode::OK, &first));
    let (s, b) = app
        .get(
            &format!("/api/v1/events/{}", first["id"].as_str().unwrap()),
            &viewer,
        )
        .await;
    assert_eq!((s, &b["started"]), (StatusCode::OK, &first["started"]));
    assert_eq!(
        app.get(&format!("/api/v1/events/{unknown}"), &viewer)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (s, b) = app
        .post("/api/v1/events", &viewer, json!({"event_type": "x"}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"));
    // Legal, but said: no event_id (a resend would count again), nobody listening.
    let (s, b) = app
        .post(
            "/api/v1/events",
            &service,
            json!({"event_type": "order.craeted"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(
        (&b["idempotent"], &b["matched_workflows"], &b["started"]),
        (&json!(false), &json!(0), &json!([]))
    );
    assert!(b.get("executions").is_none(), "no wait, no states: {b}");
    let (s, b) = app
        .post("/api/v1/events", &service, json!({"payload": {}}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("event_type"),
        "{b}"
    );

    // The execution is paused at the approval, with the contract's fields.
    let (s, e) = app
        .get(&format!("/api/v1/executions/{exec}"), &viewer)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (&e["status"], &e["paused_reason"], &e["paused_step_id"]),
        (&json!("paused"), &json!("approval"), &json!("approve"))
    );
    assert_eq!(e["requested_by"], "shop");
    for field in [
        "id",
        "workflow_id",
        "workflow_key",
        "workflow_version",
        "status",
        "result",
        "trigger_event",
        "trigger_payload",
        "context",
        "current_step_id",
        "paused_at",
        "paused_reason",
        "paused_step_id",
        "wait",
        "deadline",
        "resume_count",
        "last_resumed_at",
        "started_at",
        "completed_at",
        "duration_ms",
        "error",
    ] {
        assert!(e.get(field).is_some(), "execution lacks {field}: {e}");
    }
    let (_, b) = app.get("/api/v1/executions?status=paused", &viewer).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    let (_, b) = app.get("/api/v1/executions?paused_reason=approval&approver_role=sales_manager&workflow_key=orders", &viewer).await;
    assert_eq!(b["items"][0]["id"], exec.as_str());
    let (_, b) = app
        .get(&format!("/api/v1/executions?workflow_id={wf}"), &viewer)
        .await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    // The author's workflow_id names the workflow too (every version of it).
    let (s, b) = app
        .get("/api/v1/executions?workflow_id=orders", &viewer)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    let (s, b) = app
        .get("/api/v1/executions?workflow_id=big_orders", &viewer)
        .await;
    assert_eq!(
        (s, b["items"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    let (s, b) = app
        .get(
            "/api/v1/executions?workflow_id=orders&workflow_key=quotes",
            &viewer,
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = app.get("/api/v1/executions?status=sleeping", &viewer).await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = app
        .get("/api/v1/executions?paused_reason=nap", &viewer)
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = app.get("/api/v1/executions?limit=501", &viewer).await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (_, b) = app.get("/api/v1/executions/paused", &viewer).await;
    assert_eq!(b["items"][0]["id"], exec.as_str());
    assert_eq!(
        app.get(&format!("/api/v1/executions/{unknown}"), &viewer)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    // Approvals: the requester may not decide; another role may not; the manager may.
    let (_, b) = app.get("/api/v1/approvals?mine=true", &maria).await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1, "{b}");
    let approval = b["items"][0]["id"].as_str().unwrap().to_owned();
    let (_, b) = app.get("/api/v1/approvals?mine=true", &operator).await;
    assert_eq!(b["items"], json!([]));
    let (_, b) = app
        .get(
            &format!("/api/v1/approvals?status=pending&role=sales_manager&execution_id={exec}"),
            &viewer,
        )
        .await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    let (s, b) = app.get("/api/v1/approvals?status=maybe", &viewer).await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = app
        .get(&format!("/api/v1/approvals/{approval}"), &viewer)
        .await;
    assert_eq!(
        (s, &b["status"], &b["requested_by"]),
        (StatusCode::OK, &json!("pending"), &json!("shop"))
    );
    // What the approvers decide on: the step's data, rendered at the gate.
    assert_eq!(b["data"]["order"], "o-1", "{b}");
    assert!(b["data"]["total"].to_string().contains("20000"), "{b}");
    assert_eq!(
        app.get(&format!("/api/v1/approvals/{unknown}"), &viewer)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (s, b) = app
        .post(
            &format!("/api/v1/approvals/{approval}/approve"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, b) = app
        .post(
            &format!("/api/v1/approvals/{approval}/reject"),
            &maria,
            json!({}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = app
        .post(
            &format!("/api/v1/approvals/{approval}/reject"),
            &maria,
            json!({"reason": "  "}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = app
        .post(
            &format!("/api/v1/approvals/{approval}/approve?wait=true"),
            &maria,
            json!({"reason": "known customer", "data": {"note": "ok"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (
            &b["approval"]["status"],
            &b["execution"]["status"],
            &b["execution"]["result"]
        ),
        (&json!("approved"), &json!("completed"), &json!("allowed"))
    );
    assert_eq!(b["approval"]["decisions"][0]["decided_by"], "maria");
    let (s, b) = app
        .post(
            &format!("/api/v1/approvals/{approval}/approve"),
            &maria,
            json!({}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));
    let (s, b) = app
        .post(
            &format!("/api/v1/approvals/{unknown}/approve"),
            &maria,
            json!({}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));

    // Trace, audit, records, notifications.
    let (s, t) = app
        .get(&format!("/api/v1/executions/{exec}/trace"), &viewer)
        .await;
    assert_eq!(s, StatusCode::OK);
    let steps: Vec<&str> = t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&"check"));
    assert!(
        steps.contains(&"approve") && steps.contains(&"record") && steps.last() == Some(&"ok"),
        "{steps:?}"
    );
    assert_eq!(t["definition"]["workflow_id"], "orders");
    let (s, r) = app
        .get(
            &format!("/api/v1/executions/{exec}/resume-requests"),
            &viewer,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let rows = r["items"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["trigger"] == "approval"
            && r["outcome"] == "refused"
            && r["actor"] == "ops"),
        "{r}"
    );
    assert!(
        rows.iter().any(|r| r["trigger"] == "approval"
            && r["outcome"] == "resumed"
            && r["actor"] == "maria"),
        "{r}"
    );
    assert_eq!(
        app.get(
            &format!("/api/v1/executions/{unknown}/resume-requests"),
            &viewer
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/executions/{unknown}/trace"), &viewer)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (s, b) = app.get("/api/v1/records/order/o-1", &viewer).await;
    assert_eq!(
        (s, &b["data"]["approved"], &b["version"]),
        (StatusCode::OK, &json!(true), &json!(1))
    );
    let (s, b) = app.get("/api/v1/records/order/o-404", &viewer).await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));
    let (s, b) = app
        .get(
            &format!("/api/v1/notifications?execution_id={exec}"),
            &viewer,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["items"][0]["recipients"], json!(["ops@example.com"]));
    assert_eq!(b["items"][0]["message"], "order o-1 approved");

    // A second order, rejected; a third, cancelled (its approval becomes cancelled).
    let (_, b) = app
        .post(
            "/api/v1/events",
            &service,
            json!({"event_type": "order.created", "payload": {"total": 30000, "order_id": "o-2"}}),
        )
        .await;
    let second = b["started"][0].as_str().unwrap().to_owned();
    app.until(&second, |e| e["status"] == "paused").await;
    let approval2 = app
        .get(&format!("/api/v1/approvals?execution_id={second}"), &viewer)
        .await
        .1["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, b) = app
        .post(
            &format!("/api/v1/approvals/{approval2}/reject?wait=true"),
            &maria,
            json!({"reason": "too risky"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (&b["approval"]["status"], &b["execution"]["result"]),
        (&json!("rejected"), &json!("blocked"))
    );
    let (_, b) = app
        .post(
            "/api/v1/events",
            &service,
            json!({"event_type": "order.created", "payload": {"total": 40000, "order_id": "o-3"}}),
        )
        .await;
    let third = b["started"][0].as_str().unwrap().to_owned();
    app.until(&third, |e| e["status"] == "paused").await;
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{third}/pause"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "conflict"),
        "a paused execution is not running"
    );
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{third}/resume"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "conflict"),
        "approval gates resume by deciding"
    );
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{third}/cancel"),
            &viewer,
            json!({}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{third}/cancel"),
            &operator,
            json!({"reason": "customer withdrew"}),
        )
        .await;
    assert_eq!(
        (s, &b["status"], &b["error"]["kind"]),
        (StatusCode::OK, &json!("cancelled"), &json!("cancelled"))
    );
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{third}/cancel"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));
    let (_, b) = app
        .get(&format!("/api/v1/approvals?execution_id={third}"), &viewer)
        .await;
    assert_eq!(b["items"][0]["status"], "cancelled");
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{unknown}/cancel"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));

    // Metrics reflect what happened.
    let text = app.metrics().await;
    assert!(
        text.contains("tollgate_executions{status=\"completed\"}"),
        "{text}"
    );
    assert!(text.contains("tollgate_http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/v1/executions/{id}\""), "routes are labelled by template");
    assert!(text.contains("tollgate_resume_latency_seconds"));
    assert!(text.contains("tollgate_step_duration_seconds"));
    assert!(
        text.contains("tollgate_decisions_total{channel=\"direct\",decision=\"approve\"}"),
        "decisions are counted by channel: {text}"
    );
    // What waits: nothing is overdue (the embedded worker runs); the gauges are there.
    assert!(text.contains("tollgate_gates_overdue 0"), "{text}");
    assert!(
        text.contains("tollgate_gates_overdue_oldest_seconds 0"),
        "{text}"
    );
    assert!(text.contains("tollgate_approvals_pending "), "{text}");
    if app.db == Db::Sqlite {
        // The writer's commits are counted (this test alone made dozens).
        let commits: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tollgate_sqlite_commits_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no tollgate_sqlite_commits_total: {text}"));
        assert!(commits >= 10.0, "{commits}");
    }
    // Every metric family says what it is and what type it has.
    let families: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("tollgate_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|name| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name)
        })
        .collect();
    assert!(families.len() >= 8, "{families:?}");
    for family in families {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP for {family}"
        );
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no TYPE for {family}"
        );
    }
    app.stop().await;
}

/// A workflow whose first step is slow (so an execution is `running` for a while),
/// then waits for `payment.received`.
fn slow_then_wait(url: &str) -> Value {
    json!({
        "workflow_id": "pay", "version": "1", "trigger": {"type": "manual"},
        "steps": [
            {"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": url}], "next": "pay"},
            {"id": "pay", "type": "wait", "wait": {"event": "payment.received", "timeout": "1h", "on_timeout": "late"}, "next": "done"},
            {"id": "done", "type": "action", "action": "allow"},
            {"id": "late", "type": "action", "action": "block"}
        ]
    })
}

async fn operator_commands_and_direct_events(app: TestApp) {
    let operator = app.key("ops", &["operator"]).await;
    let slow = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(700)))
        .mount(&slow)
        .await;
    let wf = app
        .workflow(slow_then_wait(&format!("{}/hook", slow.uri())))
        .await;

    // Pause while the webhook is in flight: requested, then paused at the boundary.
    let (s, e) = app
        .post(
            &format!("/api/v1/workflows/{wf}/execute"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = e["id"].as_str().unwrap().to_owned();
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{id}/pause"),
            &operator,
            json!({"reason": "checking"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(
        b["status"] == "paused" || b["pause_requested"] == true,
        "{b}"
    );
    let paused = app.until(&id, |e| e["status"] == "paused").await;
    assert_eq!(paused["paused_reason"], "manual");
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{id}/resume"),
            &operator,
            json!({"data": {"checked": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let waiting = app.until(&id, |e| e["status"] == "waiting").await;
    assert_eq!(
        (
            &waiting["paused_reason"],
            &waiting["paused_step_id"],
            &waiting["wait"]["event"]
        ),
        (&json!("event"), &json!("pay"), &json!("payment.received"))
    );
    assert!(waiting["wait"]["deadline"].is_string());
    assert_eq!(waiting["context"]["checked"], true);

    // Direct delivery: the wrong type is a conflict, the right one resumes.
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{id}/events"),
            &operator,
            json!({"event_type": "refund.issued", "payload": {}}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{id}/events?wait=true"),
            &operator,
            json!({"event_type": "payment.received", "payload": {"amount": 5}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (&b["status"], &b["result"]),
        (&json!("completed"), &json!("allowed"))
    );
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{id}/pause"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));
    let (s, b) = app
        .post(
            &format!("/api/v1/executions/{id}/events"),
            &operator,
            json!({"event_type": "payment.received"}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));

    // An event by correlation id resumes the waiting execution: `resumed` lists it.
    let (_, e) = app
        .post(
            &format!("/api/v1/workflows/{wf}/execute"),
            &operator,
            json!({}),
        )
        .await;
    let second = e["id"].as_str().unwrap().to_owned();
    app.until(&second, |e| e["status"] == "waiting").await;
    let (s, b) = app
        .post(
            "/api/v1/events?wait=true",
            &operator,
            json!({"event_type": "payment.received", "payload": {}, "correlation_id": second}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(b["resumed"], json!([second]));
    let done = app.until(&second, |e| e["status"] == "completed").await;
    assert_eq!(done["resume_count"], 1);
    let (_, audit) = app
        .get(
            &format!("/api/v1/executions/{id}/resume-requests"),
            &operator,
        )
        .await;
    let triggers: Vec<(&str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["trigger"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        triggers.contains(&("manual", "resumed"))
            && triggers.contains(&("event", "refused"))
            && triggers.contains(&("event", "resumed")),
        "{triggers:?}"
    );
    app.stop().await;
}

/// A payment that failed while its ledger was down is retried through HTTP: refusals
/// first (viewer, no reason, unknown step), then a bulk dry run, then the retry; the
/// payment runs again under a new idempotency key, and the audit shows who retried.
async fn failed_executions_are_retried(app: TestApp) {
    let operator = app.key("ops", &["operator"]).await;
    let viewer = app.key("viewer", &["viewer"]).await;
    let ledger = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&ledger)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&ledger)
        .await;
    let wf = app
        .workflow(json!({
            "workflow_id": "refund", "version": "1", "trigger": {"type": "manual"},
            "steps": [
                {"id": "pay", "type": "execute", "execute": [{"type": "webhook", "url": format!("{}/pay", ledger.uri())}], "next": "done"},
                {"id": "done", "type": "action", "action": "allow"}]
        }))
        .await;
    let (s, e) = app
        .post(
            &format!("/api/v1/workflows/{wf}/execute?wait=true"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let id = e["id"].as_str().unwrap().to_owned();
    let failed = app.until(&id, |e| e["status"] == "failed").await;
    assert_eq!(failed["error"]["kind"], "step_failed");

    let retry = format!("/api/v1/executions/{id}/retry");
    let (s, b) = app
        .post(&retry, &viewer, json!({"reason": "ledger is back"}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, b) = app.post(&retry, &operator, json!({"reason": ""})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = app
        .post(
            &retry,
            &operator,
            json!({"reason": "x", "from_step": "ship"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("`ship`"),
        "{b}"
    );
    assert_eq!(
        app.until(&id, |_| true).await["status"],
        "failed",
        "nothing changed"
    );

    let (s, preview) = app
        .post(
            "/api/v1/executions/retry",
            &operator,
            json!({"workflow_id": "refund", "failed_step": "pay", "reason": "ledger is back", "dry_run": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    assert_eq!(
        preview["items"],
        json!([{"execution_id": id, "outcome": "would_retry", "from_step": "pay"}])
    );

    let (s, b) = app
        .post(
            &format!("{retry}?wait=true"),
            &operator,
            json!({"reason": "ledger is back"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (&b["status"], &b["result"], &b["context"]["retry"]["reason"]),
        (
            &json!("completed"),
            &json!("allowed"),
            &json!("ledger is back")
        )
    );
    let keys: Vec<String> = ledger
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, [format!("{id}:pay:1"), format!("{id}:pay:2")]);

    let (s, b) = app
        .post(&retry, &operator, json!({"reason": "again"}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));
    let (_, audit) = app
        .get(
            &format!("/api/v1/executions/{id}/resume-requests"),
            &operator,
        )
        .await;
    let rows: Vec<(&str, &str, &str)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["outcome"].as_str().unwrap(),
                r["actor"].as_str().unwrap_or("-"),
                r["data"]["command"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [("resumed", "ops", "retry"), ("refused", "ops", "retry")],
        "{audit}"
    );
    let origin = audit["items"][0]["data"]["origin"].as_str().unwrap();
    assert!(origin.starts_with("api from 127.0.0.1"), "{origin}");
    app.stop().await;
}

/// An order waiting for approval on version 1.0.0 is moved to 2.0.0 through HTTP (dry
/// run first), then approved: it follows 2.0.0's branch. Refusals say why.
async fn paused_executions_are_migrated(app: TestApp) {
    let operator = app.key("ops", &["operator"]).await;
    let viewer = app.key("viewer", &["viewer"]).await;
    let maria = app.key("maria", &["sales_manager"]).await;
    app.workflow(order_workflow("orders")).await;
    let (s, ev) = app
        .post(
            "/api/v1/events?wait=true",
            &operator,
            json!({"event_type": "order.created", "payload": {"total": 25000, "order_id": "o-1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ev}");
    let id = ev["started"][0].as_str().unwrap().to_owned();
    let paused = app.until(&id, |e| e["status"] == "paused").await;
    let mut v2 = order_workflow("orders");
    v2["version"] = json!("2.0.0");
    v2["steps"][1]["on_approve"] = json!("fast");
    v2["steps"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "fast", "type": "execute", "execute": [{"type": "set", "path": "lane", "value": "fast"}], "next": "ok"}));
    app.workflow(v2).await;

    let migrate = format!("/api/v1/executions/{id}/migrate");
    let (s, b) = app
        .post(&migrate, &viewer, json!({"to_version": "2.0.0"}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"));
    let (s, b) = app
        .post(&migrate, &operator, json!({"to_version": "9"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, preview) = app
        .post(
            "/api/v1/executions/migrate",
            &operator,
            json!({"workflow_id": "orders", "from_version": "1.0.0", "to_version": "2.0.0", "dry_run": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    assert_eq!(
        preview["items"],
        json!([{"execution_id": id, "outcome": "would_migrate", "from_version": "1.0.0", "gate_step": "approve"}])
    );
    let (s, b) = app
        .post(
            &migrate,
            &operator,
            json!({"to_version": "2.0.0", "reason": "fast lane"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["outcome"], "migrated");
    let moved = app.until(&id, |_| true).await;
    assert_eq!(moved["workflow_version"], "2.0.0");
    assert_eq!(
        moved["approval_id"], paused["approval_id"],
        "the same request waits"
    );

    let (s, b) = app
        .post(
            &format!(
                "/api/v1/approvals/{}/approve?wait=true",
                paused["approval_id"].as_str().unwrap()
            ),
            &maria,
            json!({"reason": "fine"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let done = app.until(&id, |e| e["status"] == "completed").await;
    assert_eq!(done["context"]["lane"], "fast", "{done}");
    let (s, b) = app
        .post(&migrate, &operator, json!({"to_version": "1.0.0"}))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"));
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("completed"),
        "{b}"
    );
    app.stop().await;
}

/// An execution whose stored row was damaged: reading it says so (500, the column named),
/// the worker loop sets it aside when its gate falls due instead of failing every pass,
/// and operators find it, with the row as it was, at `/executions/quarantined`.
async fn unreadable_executions_are_quarantined(app: TestApp) {
    let operator = app.key("ops", &["operator"]).await;
    let viewer = app.key("viewer", &["viewer"]).await;
    let wf = app
        .workflow(json!({
            "workflow_id": "pay", "version": "1", "trigger": {"type": "manual"},
            "steps": [
                {"id": "pay", "type": "wait", "wait": {"event": "payment.received", "timeout": "2s", "on_timeout": "late"}, "next": "done"},
                {"id": "done", "type": "action", "action": "allow"},
                {"id": "late", "type": "action", "action": "block"}
            ]
        }))
        .await;
    let (s, e) = app
        .post(
            &format!("/api/v1/workflows/{wf}/execute"),
            &operator,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let id = e["id"].as_str().unwrap().to_owned();
    app.until(&id, |e| e["status"] == "waiting").await;
    let damaged = app
        .sql(&format!(
            "UPDATE executions SET cursor = '{{\"not_a_cursor\": true}}' WHERE id = '{id}'"
        ))
        .await;
    assert_eq!(damaged, 1);
    let (s, b) = app
        .get(&format!("/api/v1/executions/{id}"), &operator)
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{b}");

    // The wait's deadline passes: the worker's claim quarantines it.
    let failed = app.until(&id, |e| e["status"] == "failed").await;
    assert_eq!(failed["error"]["kind"], "interrupted", "{failed}");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("quarantined"),
        "{failed}"
    );
    let (s, list) = app.get("/api/v1/executions/quarantined", &operator).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["items"][0]["execution_id"], json!(id), "{list}");
    assert!(list["items"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("cursor"));
    // The row as it was when set aside (claimed for its deadline), the damage included.
    let original = &list["items"][0]["original"];
    assert_eq!(original["gate_event"], "payment.received", "{list}");
    assert!(
        original["cursor"].to_string().contains("not_a_cursor"),
        "{list}"
    );
    let (s, _) = app.get("/api/v1/executions/quarantined", &viewer).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("tollgate_quarantined_executions_total"),
        "{metrics}"
    );
    app.stop().await;
}

/// `POST /mcp` with `tools/list` (stateless, protocol 2025-06-18): status and body.
async fn mcp_tools_list(app: &TestApp, key: Option<&str>) -> (StatusCode, String) {
    let mut req = reqwest::Client::new()
        .post(app.url("/mcp"))
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_endpoint_authenticates_first_and_can_be_switched_off() {
    let app = TestApp::spawn(crate::Db::Sqlite).await;
    let (status, body) = mcp_tools_list(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    let viewer = app.key("auditor", &["viewer"]).await;
    let (status, body) = mcp_tools_list(&app, Some(&viewer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""name":"get_approval""#), "{body}");
    assert!(
        !body.contains(r#""name":"request_approval""#),
        "a viewer sees read tools only: {body}"
    );
    app.stop().await;

    let off = TestApp::spawn_with(crate::Db::Sqlite, |args| args.mcp = false).await;
    let admin = off.admin.clone();
    let (status, body) = mcp_tools_list(&off, Some(&admin)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body.contains("\"not_found\""), "{body}");
    off.stop().await;
}

/// A `first_of` step through the API: the execution waits for an event and a decision at
/// once; the event wins, and its approval is `superseded` — listed under that status,
/// refusing decisions with 409.
async fn first_of_gates_through_http(app: TestApp) {
    let service = app.key("shop", &["service"]).await;
    let maria = app.key("maria", &["sales_manager"]).await;
    app.workflow(json!({
        "workflow_id": "settle", "version": "1", "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "settle", "type": "first_of", "first_of": [
                {"event": "payment.settled", "match": {"field": "event.order_id", "operator": "eq", "value": "{{order_id}}"}, "next": "ship"},
                {"approval": {"approvers": {"role": "sales_manager"}}, "on_approve": "ship", "on_reject": "refund"},
                {"after": "3d", "next": "refund"}]},
            {"id": "ship", "type": "action", "action": "allow"},
            {"id": "refund", "type": "action", "action": "block"}]
    }))
    .await;
    let (s, ev) = app
        .post(
            "/api/v1/events",
            &service,
            json!({"event_type": "order.created", "payload": {"order_id": "o-7"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ev}");
    let id = ev["started"][0].as_str().unwrap().to_owned();
    let waiting = app.until(&id, |e| e["status"] == "waiting").await;
    let approval = waiting["approval_id"].as_str().unwrap().to_owned();
    let (s, pending) = app.get("/api/v1/approvals?status=pending", &maria).await;
    assert_eq!(s, StatusCode::OK, "{pending}");
    assert_eq!(pending["items"][0]["id"], approval.as_str(), "{pending}");

    let (s, paid) = app
        .post(
            "/api/v1/events",
            &service,
            json!({"event_type": "payment.settled", "payload": {"order_id": "o-7"}}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{paid}");
    assert_eq!(paid["resumed"], json!([id]), "{paid}");
    let done = app.until(&id, |e| e["status"] == "completed").await;
    assert_eq!(done["result"], "allowed", "{done}");
    assert_eq!(
        done["context"]["steps"]["settle"]["gate"], "event",
        "{done}"
    );

    let (s, closed) = app
        .get(&format!("/api/v1/approvals/{approval}"), &maria)
        .await;
    assert_eq!(
        (s, closed["status"].as_str()),
        (StatusCode::OK, Some("superseded")),
        "{closed}"
    );
    let (s, listed) = app.get("/api/v1/approvals?status=superseded", &maria).await;
    assert_eq!(s, StatusCode::OK, "{listed}");
    assert_eq!(listed["items"][0]["id"], approval.as_str(), "{listed}");
    let (s, b) = app
        .post(
            &format!("/api/v1/approvals/{approval}/approve"),
            &maria,
            json!({"reason": "late"}),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "conflict"), "{b}");
    app.stop().await;
}
