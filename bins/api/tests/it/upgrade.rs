//! A rolling upgrade: the previous release and this one on one PostgreSQL database while
//! this one migrates it, executions flowing through both, and the previous release
//! restarting on the migrated schema (what a rollback, or an old pod restarting in the
//! middle of a rollout, does).
//!
//! Needs the previous release's binary in `TOLLGATE_PREVIOUS_API_BIN`; `cargo xtask
//! test` builds it from the repository's history (see `xtask`, `previous::RELEASE`).

use std::path::PathBuf;
use std::process::Stdio;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::order_workflow;
use crate::process::{send, Server};

/// Starts an order over the limit on `server` and returns the execution, paused.
async fn big_order(client: &reqwest::Client, key: &str, server: &Server, order: &str) -> String {
    let (s, b) = send(
        client,
        key,
        format!("{}/api/v1/events?wait=true", server.base),
        json!({"event_type": "order.created", "payload": {"total": 50000, "order_id": order}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["executions"][0]["status"], "paused", "{b}");
    b["started"][0].as_str().unwrap().to_owned()
}

/// `GET path` on `server` as `key`, as JSON.
async fn get(client: &reqwest::Client, key: &str, server: &Server, path: &str) -> Value {
    client
        .get(format!("{}{path}", server.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Approves `execution`'s request on `server`, and checks it completed.
async fn approve(client: &reqwest::Client, key: &str, server: &Server, execution: &str) {
    let list = get(
        client,
        key,
        server,
        &format!("/api/v1/approvals?execution_id={execution}"),
    )
    .await;
    let approval = list["items"][0]["id"].as_str().unwrap().to_owned();
    let (s, b) = send(
        client,
        key,
        format!(
            "{}/api/v1/approvals/{approval}/approve?wait=true",
            server.base
        ),
        json!({"reason": "fine"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let done = get(
        client,
        key,
        server,
        &format!("/api/v1/executions/{execution}"),
    )
    .await;
    assert_eq!(done["status"], "completed", "{done}");
}

/// A workflow whose executions wait for their order's payment (a `match` with a
/// correlation key on this release; none on releases before keys).
fn payment_workflow() -> Value {
    json!({
        "workflow_id": "payments", "version": "1",
        "trigger": {"type": "event", "event": "order.placed"},
        "steps": [
            {"id": "paid", "type": "wait", "wait": {"event": "payment.settled",
              "match": {"field": "event.order_id", "operator": "eq", "value": "{{order_id}}"}},
             "next": "ship"},
            {"id": "ship", "type": "action", "action": "allow"}
        ]
    })
}

/// Starts an execution on `server` that waits for `order`'s payment; returns it.
async fn awaiting_payment(
    client: &reqwest::Client,
    key: &str,
    server: &Server,
    order: &str,
) -> String {
    let (s, b) = send(
        client,
        key,
        format!("{}/api/v1/events?wait=true", server.base),
        json!({"event_type": "order.placed", "payload": {"order_id": order}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["executions"][0]["status"], "waiting", "{b}");
    b["started"][0].as_str().unwrap().to_owned()
}

/// Sends `order`'s payment to `server` and checks that it resumed `execution` (and
/// nothing else) to completion.
async fn pay(client: &reqwest::Client, key: &str, server: &Server, order: &str, execution: &str) {
    let (s, b) = send(
        client,
        key,
        format!("{}/api/v1/events?wait=true", server.base),
        json!({"event_type": "payment.settled", "payload": {"order_id": order}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["resumed"], json!([execution]), "{b}");
    assert_eq!(b["executions"][0]["status"], "completed", "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_release_and_this_one_share_a_database_during_the_upgrade() {
    let Some(previous) = std::env::var_os("TOLLGATE_PREVIOUS_API_BIN").map(PathBuf::from) else {
        eprintln!("skipped: TOLLGATE_PREVIOUS_API_BIN is not set (cargo xtask test sets it)");
        return;
    };
    assert!(previous.exists(), "{} does not exist", previous.display());
    let url = crate::fresh_pg_database().await;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let on_db = ["--database-url", url.as_str()];

    // The previous release creates the schema as it knows it, and the first admin key.
    let old_data = dir.path().join("old");
    let old = Server::start_bin(&previous, &old_data, &on_db, "warn", Stdio::null()).await;
    let admin = std::fs::read_to_string(old_data.join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let (s, b) = send(
        &client,
        &admin,
        format!("{}/api/v1/workflows", old.base),
        order_workflow("orders"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = send(
        &client,
        &admin,
        format!("{}/api/v1/workflows", old.base),
        payment_workflow(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let mut keys = Vec::new();
    for (name, role) in [("shop", "service"), ("maria", "sales_manager")] {
        let (s, b) = send(
            &client,
            &admin,
            format!("{}/api/v1/api-keys", old.base),
            json!({"name": name, "roles": [role]}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        keys.push(b["key"].as_str().unwrap().to_owned());
    }
    let (shop, maria) = (keys[0].as_str(), keys[1].as_str());
    let before = big_order(&client, shop, &old, "before").await;
    // Waits stored before the migration have no correlation key.
    let unkeyed = awaiting_payment(&client, shop, &old, "p-before").await;
    let unkeyed_too = awaiting_payment(&client, shop, &old, "p-before-2").await;

    // This release starts on the same database while the previous one runs, and
    // migrates it.
    let new = Server::start_bin(
        std::path::Path::new(env!("CARGO_BIN_EXE_tollgate-api")),
        &dir.path().join("new"),
        &[on_db[0], on_db[1], "--migrate", "auto"],
        "warn",
        Stdio::null(),
    )
    .await;
    let schema = sqlx::PgPool::connect(&url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&schema)
        .await
        .unwrap();
    assert!(
        applied >= 8,
        "this release migrated the schema (now {applied})"
    );

    // Executions flow through both: one paused by the previous release is approved on
    // this one; one paused by this one is approved on the previous one.
    approve(&client, maria, &new, &before).await;
    let during = big_order(&client, shop, &new, "during").await;
    approve(&client, maria, &old, &during).await;
    // A wait the previous release stored (no key) is found by this one's intake, and
    // one this release stored (keyed) by the previous one's scan — and by this one's.
    pay(&client, shop, &new, "p-before", &unkeyed).await;
    let keyed = awaiting_payment(&client, shop, &new, "p-during").await;
    let keyed_too = awaiting_payment(&client, shop, &new, "p-during-2").await;
    pay(&client, shop, &old, "p-during", &keyed).await;
    pay(&client, shop, &new, "p-during-2", &keyed_too).await;
    pay(&client, shop, &new, "p-before-2", &unkeyed_too).await;

    // The previous release restarts on the migrated schema (a rollback, or an old pod
    // restarting mid-rollout) and keeps working.
    old.kill9();
    let old = Server::start_bin(&previous, &old_data, &on_db, "warn", Stdio::null()).await;
    let after = big_order(&client, shop, &old, "after").await;
    approve(&client, maria, &new, &after).await;
    let last = big_order(&client, shop, &new, "last").await;
    approve(&client, maria, &old, &last).await;
    old.kill9();
    new.kill9();
}
