//! The example service as a user runs it: its binary, its routes, SQLite and PostgreSQL,
//! and a `kill -9` in the middle of an approval.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running copy of the service.
struct Service {
    child: Child,
    base: String,
}

impl Service {
    /// Starts the binary on `database_url` and waits for the address it prints.
    async fn start(database_url: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_order-service"))
            .args(["--database-url", database_url, "--listen", "127.0.0.1:0"])
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the service prints its address")
            .unwrap()
            .expect("the service exited before listening");
        let base = line
            .strip_prefix("order-service listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        Self { child, base }
    }

    /// `kill -9`: nothing gets to finish.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut request = client.request(method, format!("{}{path}", self.base));
        if let Some(user) = user {
            request = request.header("X-User", user);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A small order is released at once; a large one waits for a sales manager, through a
/// `kill -9` of the service; after the restart a clerk may not decide it, a manager
/// approves, and the order is released.
async fn order_through_a_restart(database_url: &str) {
    let service = Service::start(database_url).await;
    let (status, small) = service
        .call(
            reqwest::Method::POST,
            "/orders",
            None,
            Some(json!({"order_id": "small-1", "customer": "acme", "total": 900})),
        )
        .await;
    assert_eq!(status, 201, "{small}");
    assert_eq!(small["status"], "released", "{small}");
    assert_eq!(small["execution_status"], "completed", "{small}");

    let (status, big) = service
        .call(
            reqwest::Method::POST,
            "/orders",
            None,
            Some(json!({"order_id": "big-1", "customer": "acme", "total": 25000})),
        )
        .await;
    assert_eq!(status, 201, "{big}");
    assert_eq!(big["status"], "received", "{big}");
    assert_eq!(big["execution_status"], "paused", "{big}");
    assert!(big["awaiting_decision"]["approval_id"].is_string(), "{big}");
    service.kill().await;

    let service = Service::start(database_url).await;
    let (status, resent) = service
        .call(
            reqwest::Method::POST,
            "/orders",
            None,
            Some(json!({"order_id": "big-1", "customer": "acme", "total": 25000})),
        )
        .await;
    assert_eq!(status, 200, "a resent order starts nothing new: {resent}");
    assert_eq!(resent["execution_id"], big["execution_id"]);

    let (status, _) = service
        .call(reqwest::Method::GET, "/inbox", None, None)
        .await;
    assert_eq!(status, 401, "the service's own users only");
    let (status, inbox) = service
        .call(reqwest::Method::GET, "/inbox", Some("maria"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(inbox[0]["order_id"], "big-1", "{inbox}");
    let (status, refused) = service
        .call(
            reqwest::Method::POST,
            "/orders/big-1/decision",
            Some("sam"),
            Some(json!({"approve": true})),
        )
        .await;
    assert_eq!(status, 403, "a clerk may not decide: {refused}");

    let (status, approved) = service
        .call(
            reqwest::Method::POST,
            "/orders/big-1/decision",
            Some("maria"),
            Some(json!({"approve": true, "reason": "known customer"})),
        )
        .await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["status"], "released", "{approved}");
    assert_eq!(approved["execution_status"], "completed", "{approved}");

    let (status, again) = service
        .call(
            reqwest::Method::POST,
            "/orders/big-1/decision",
            Some("mia"),
            Some(json!({"approve": false, "reason": "too late"})),
        )
        .await;
    assert_eq!(status, 409, "decided already: {again}");
    let (status, missing) = service
        .call(reqwest::Method::GET, "/orders/nope", None, None)
        .await;
    assert_eq!(status, 404, "{missing}");
    service.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("orders.db").display());
    order_through_a_restart(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres() {
    let url = tollgate_postgres::testing::fresh_database_url("orders")
        .await
        .expect("PostgreSQL for the tests (TOLLGATE_TEST_DATABASE_URL)");
    order_through_a_restart(&url).await;
}
