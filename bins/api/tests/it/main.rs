//! `tollgate-api` through real HTTP: the server runs in-process on port 0 (or as a child
//! process for the kill tests) against a fresh SQLite file or a fresh PostgreSQL
//! database per test.
//!
//! PostgreSQL tests need `TOLLGATE_TEST_DATABASE_URL` (an account that may create
//! databases); `cargo xtask test` provides it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::many_single_char_names,
    clippy::format_push_string,
    missing_docs
)]

mod admin_key;
mod assignments;
mod auth_matrix;
mod bulk;
mod comments;
mod console;
mod delegations;
mod forms;
mod links;
mod notify;
mod openapi;
mod partition;
mod process;
mod robustness;
mod routes;
mod schedules;
mod shutdown;
mod sla;
mod upgrade;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tollgate_api::app::{self, AdminKey, Running};
use tollgate_api::config::{DatabaseArgs, LogFormat, ServeArgs, WorkerArgs};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A new empty database; returns its URL.
pub async fn fresh_pg_database() -> String {
    tollgate_postgres::testing::fresh_database_url("apitest")
        .await
        .unwrap()
}

/// Server settings for a test.
pub fn serve_args(data_dir: PathBuf, database_url: Option<String>) -> ServeArgs {
    ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: DatabaseArgs {
            data_dir,
            database_url,
            database_max_connections: 8,
            database_statement_timeout: Duration::from_secs(30),
            database_lock_timeout: Duration::from_secs(10),
            database_idle_in_transaction_timeout: Duration::from_secs(60),
            migrate: tollgate_bootstrap::MigrateMode::Auto,
            max_clock_skew: Duration::from_secs(5),
            sqlite_synchronous: tollgate_bootstrap::config::SqliteSync::Normal,
        },
        embedded_worker: true,
        worker: WorkerArgs {
            poll_interval: Duration::from_millis(100),
            worker_concurrency: 8,
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_millis(200),
            worker_pass_timeout: Duration::from_secs(60),
            retention: None,
            retention_batch: 500,
            retention_interval: Duration::from_secs(60),
            archive_dir: None,
            event_retention: tollgate_bootstrap::DurationOrOff(Some(
                tollgate_resumer::DEFAULT_EVENT_RETENTION,
            )),
            notification_claim: Duration::from_secs(120),
        },
        max_body_size: 64 * 1024,
        wait_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        mcp: true,
        mcp_wait_limit: Duration::from_secs(60),
        key_cache_ttl: Duration::from_secs(1),
        metrics_terminal_refresh: Duration::from_secs(60),
        ready_overdue_warning: Duration::from_secs(300),
        ready_worker_warning: Duration::from_secs(60),
        bootstrap_admin_key: tollgate_api::app::BootstrapAdminKey::Auto,
        admin_key_file: None,
        http_workers: Some(2),
        log_format: LogFormat::Text,
        config: None,
        shutdown_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::ZERO,
        links: tollgate_api::config::LinkArgs::default(),
    }
}

/// A server for one test, with an HTTP client and its admin key.
pub struct TestApp {
    pub addr: SocketAddr,
    pub admin: String,
    pub client: reqwest::Client,
    pub db: Db,
    pub database_url: Option<String>,
    pub dir: tempfile::TempDir,
    running: Option<Running>,
}

impl TestApp {
    pub async fn spawn(db: Db) -> Self {
        Self::spawn_with(db, |_| {}).await
    }

    pub async fn spawn_with(db: Db, tweak: impl FnOnce(&mut ServeArgs)) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            tollgate_bootstrap::init_logging(LogFormat::Text);
        }
        let dir = tempfile::tempdir().unwrap();
        let database_url = match db {
            Db::Sqlite => None,
            Db::Postgres => Some(fresh_pg_database().await),
        };
        let mut args = serve_args(dir.path().join("data"), database_url.clone());
        tweak(&mut args);
        let running = app::start(&args, false).await.unwrap();
        let admin = match &running.admin_key {
            AdminKey::Created { key, .. } => key.clone(),
            AdminKey::Existing { path }
            | AdminKey::Unknown { path }
            | AdminKey::Supplied { path } => {
                std::fs::read_to_string(path).unwrap().trim().to_owned()
            }
            other => panic!("a test server needs an admin key it can read: {other:?}"),
        };
        Self {
            addr: running.addr,
            admin,
            client: reqwest::Client::new(),
            db,
            database_url,
            dir,
            running: Some(running),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request; returns status, headers and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let plain = res
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/plain"));
        let text = res.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else if plain && status.is_success() {
            Value::String(text)
        } else {
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("{path} answered {status} with non-JSON: {text}"))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// Creates a key with `roles`; returns the secret.
    pub async fn key(&self, name: &str, roles: &[&str]) -> String {
        let (status, body) = self
            .post(
                "/api/v1/api-keys",
                &self.admin.clone(),
                json!({"name": name, "roles": roles}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["key"].as_str().unwrap().to_owned()
    }

    /// Creates a workflow; returns its uuid.
    pub async fn workflow(&self, definition: Value) -> String {
        let (status, body) = self
            .post("/api/v1/workflows", &self.admin.clone(), definition)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// Polls an execution until `done` holds (10 s at most).
    pub async fn until(&self, execution: &str, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/api/v1/executions/{execution}");
        for _ in 0..200 {
            let (_, body) = self.get(&path, &self.admin.clone()).await;
            if done(&body) {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, last) = self.get(&path, &self.admin.clone()).await;
        panic!("execution {execution} never reached the expected state; it is {last}");
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Runs one statement on the server's database behind its back (to damage a row as a
    /// bug or a hand edit would); returns the rows it changed.
    pub async fn sql(&self, statement: &str) -> u64 {
        match &self.database_url {
            Some(url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                sqlx::query(statement)
                    .execute(&pool)
                    .await
                    .unwrap()
                    .rows_affected()
            }
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(self.dir.path().join("data").join("tollgate.db"))
                    .busy_timeout(Duration::from_secs(10));
                let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
                sqlx::query(statement)
                    .execute(&pool)
                    .await
                    .unwrap()
                    .rows_affected()
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }
}

/// The approval workflow most tests use: amount > 10,000 needs a sales manager.
/// Sends `event_type` with `payload` as `key`, waiting until the execution it starts
/// stops; returns the execution's id and its pending approval's.
pub async fn start_at_approval(
    app: &TestApp,
    key: &str,
    event_type: &str,
    payload: Value,
) -> (String, String) {
    let (s, b) = app
        .post(
            "/api/v1/events?wait=true",
            key,
            json!({"event_type": event_type, "payload": payload}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let execution = b["started"][0].as_str().unwrap().to_owned();
    let (s, a) = app
        .get(
            &format!("/api/v1/approvals?execution_id={execution}"),
            &app.admin,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{a}");
    let approval = a["items"][0]["id"].as_str().unwrap().to_owned();
    (execution, approval)
}

/// The execution once it completed (within 5 s, or the test fails).
pub async fn until_completed(app: &TestApp, execution: &str) -> Value {
    for _ in 0..100 {
        let (_, e) = app
            .get(&format!("/api/v1/executions/{execution}"), &app.admin)
            .await;
        if e["status"] == "completed" {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("execution {execution} did not complete");
}

pub fn order_workflow(workflow_id: &str) -> Value {
    json!({
        "workflow_id": workflow_id, "version": "1.0.0", "name": "Big orders",
        "tags": ["orders"],
        "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "check", "type": "condition",
             "condition": {"field": "total", "operator": "gt", "value": 10000},
             "on_true": "approve", "on_false": "ok"},
            {"id": "approve", "type": "approval",
             "approval": {"approvers": {"role": "sales_manager"}, "timeout": "1h", "on_timeout": "reject",
                          "data": {"order": "{{order_id}}", "total": "{{total}}"}},
             "on_approve": "record", "on_reject": "no"},
            {"id": "record", "type": "execute", "execute": [
                {"type": "update_record", "entity": "order", "entity_id": "{{order_id}}", "data": {"approved": true}},
                {"type": "notify", "recipients": ["ops@example.com"], "message": "order {{order_id}} approved"}],
             "next": "ok"},
            {"id": "ok", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}
        ]
    })
}

/// A busy port fails the start before anything else happens: no database is opened (or
/// created), and no worker loop starts that would claim executions and be dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_fails_the_start_before_the_database_is_opened() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(dir.path().join("data"), None);
    args.listen = taken.local_addr().unwrap();
    let Err(err) = app::start(&args, false).await else {
        panic!("started on a port that is taken");
    };
    assert!(format!("{err:#}").contains("cannot listen on"), "{err:#}");
    assert!(!dir.path().join("data").exists(), "nothing was opened");
}
