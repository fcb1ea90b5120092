//! `tollgate-resume-worker` as a real process beside an API whose embedded worker is
//! off, on PostgreSQL (`TOLLGATE_TEST_DATABASE_URL`, provided by `cargo xtask test`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tollgate_api::app::{self, AdminKey, Running};
use tollgate_api::config::{DatabaseArgs, LogFormat, ServeArgs, WorkerArgs};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn fresh_database() -> String {
    tollgate_postgres::testing::fresh_database_url("workertest")
        .await
        .unwrap()
}

struct Api {
    running: Running,
    base: String,
    admin: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Api {
    /// The API on `url` with its embedded worker off.
    async fn start(url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let args = ServeArgs {
            listen: "127.0.0.1:0".parse().unwrap(),
            database: DatabaseArgs {
                data_dir: dir.path().to_path_buf(),
                database_url: Some(url.to_owned()),
                database_max_connections: 8,
                database_statement_timeout: Duration::from_secs(30),
                database_lock_timeout: Duration::from_secs(10),
                database_idle_in_transaction_timeout: Duration::from_secs(60),
                migrate: tollgate_bootstrap::MigrateMode::Auto,
                max_clock_skew: Duration::from_secs(5),
                sqlite_synchronous: tollgate_bootstrap::config::SqliteSync::Normal,
            },
            embedded_worker: false,
            worker: WorkerArgs {
                poll_interval: Duration::from_millis(100),
                worker_concurrency: 4,
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
            max_body_size: 1 << 20,
            wait_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            mcp: true,
            mcp_wait_limit: Duration::from_secs(60),
            key_cache_ttl: Duration::from_secs(1),
            metrics_terminal_refresh: Duration::from_secs(60),
            ready_overdue_warning: Duration::from_millis(500),
            ready_worker_warning: Duration::from_secs(1),
            bootstrap_admin_key: tollgate_api::app::BootstrapAdminKey::Auto,
            admin_key_file: None,
            http_workers: Some(2),
            log_format: LogFormat::Text,
            config: None,
            shutdown_timeout: Duration::from_secs(5),
            shutdown_grace: Duration::ZERO,
            links: tollgate_api::config::LinkArgs::default(),
        };
        let running = app::start(&args, false).await.unwrap();
        let AdminKey::Created { key, .. } = &running.admin_key else {
            panic!("a fresh data dir creates the admin key")
        };
        Self {
            base: format!("http://{}", running.addr),
            admin: key.clone(),
            running,
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let res = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Starts one execution of a fresh workflow; returns its id once it is paused.
    async fn start_paused(&self, definition: Value) -> String {
        let (s, wf) = self.post("/api/v1/workflows", definition).await;
        assert_eq!(s, StatusCode::CREATED, "{wf}");
        let (s, e) = self
            .post(
                &format!(
                    "/api/v1/workflows/{}/execute?wait=true",
                    wf["id"].as_str().unwrap()
                ),
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{e}");
        assert_eq!(e["status"], "paused", "{e}");
        e["id"].as_str().unwrap().to_owned()
    }

    async fn until(&self, id: &str, done: impl Fn(&Value) -> bool, within: Duration) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let e = self.get(&format!("/api/v1/executions/{id}")).await;
            if done(&e) {
                return e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "execution never got there: {e}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A worker process, killed when dropped so a failing test leaves none behind.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn worker(url: &str, id: &str, lease: &str) -> Proc {
    worker_with(url, id, lease, &[])
}

fn worker_with(url: &str, id: &str, lease: &str, extra: &[&str]) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_tollgate-resume-worker"))
            .args([
                "--database-url",
                url,
                "--worker-id",
                id,
                "--poll-interval",
                "100ms",
                "--lease",
                lease,
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_worker_handles_an_approval_deadline() {
    let url = fresh_database().await;
    let api = Api::start(&url).await;
    let id = api
        .start_paused(json!({
            "workflow_id": "deadline", "version": "1", "trigger": {"type": "manual"},
            "steps": [
                {"id": "gate", "type": "approval", "approval": {"approvers": {"role": "finance"}, "timeout": "1s", "on_timeout": "reject"},
                 "on_approve": "ok", "on_reject": "no"},
                {"id": "ok", "type": "action", "action": "allow"},
                {"id": "no", "type": "action", "action": "block"}]}))
        .await;
    // Without any worker, the deadline passes unnoticed: the API does not poll — but its
    // metrics say a gate is overdue.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        api.get(&format!("/api/v1/executions/{id}")).await["status"],
        "paused"
    );
    let scrape =
        |url: String| async move { reqwest::get(url).await.unwrap().text().await.unwrap() };
    let api_metrics = scrape(format!("{}/metrics", api.base)).await;
    assert!(
        api_metrics.contains("tollgate_gates_overdue 1"),
        "{api_metrics}"
    );
    // Readiness still answers ready, and warns: the deadline passed over 0.5 s ago.
    let ready: Value =
        serde_json::from_str(&scrape(format!("{}/health/ready", api.base)).await).unwrap();
    assert_eq!(
        (&ready["status"], &ready["overdue_gates"]),
        (&json!("ready"), &json!(1))
    );
    assert!(
        ready["warning"]
            .as_str()
            .is_some_and(|w| w.contains("is a worker loop running")),
        "{ready}"
    );
    // No loop has ever beaten against this database: readiness says so, and lists none.
    assert!(
        ready["warning"].as_str().is_some_and(|w| w
            .contains("No worker loop has recorded a heartbeat for 1s (none in the last hour)")),
        "{ready}"
    );
    assert_eq!(ready["workers"], json!([]));
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let mut w = worker_with(
        &url,
        "w-deadline",
        "30s",
        &["--metrics-listen", &metrics_listen],
    );
    let done = api
        .until(&id, |e| e["status"] == "completed", Duration::from_secs(15))
        .await;
    assert_eq!(done["result"], "blocked");
    let approvals = api
        .get(&format!("/api/v1/approvals?execution_id={id}"))
        .await;
    assert_eq!(approvals["items"][0]["status"], "expired");
    let audit = api
        .get(&format!("/api/v1/executions/{id}/resume-requests"))
        .await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "timer" && r["outcome"] == "resumed"),
        "{audit}"
    );
    // The worker's own metrics: the deadline it claimed, described.
    let worker_metrics = scrape(format!("http://{metrics_listen}/metrics")).await;
    assert!(
        worker_metrics.contains("tollgate_timer_lag_seconds_count 1"),
        "{worker_metrics}"
    );
    assert!(worker_metrics.contains("# HELP tollgate_timer_lag_seconds "));
    assert!(worker_metrics.contains("tollgate_executions_ended_total"));
    let api_metrics = scrape(format!("{}/metrics", api.base)).await;
    assert!(
        api_metrics.contains("tollgate_gates_overdue 0"),
        "{api_metrics}"
    );
    // The worker's heartbeat (every 200 ms here) reports the deadline it claimed.
    let mut ready = Value::Null;
    for _ in 0..50 {
        ready = serde_json::from_str(&scrape(format!("{}/health/ready", api.base)).await).unwrap();
        if ready["workers"][0]["claimed"]
            .as_u64()
            .is_some_and(|n| n >= 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready.get("warning").is_none(), "{ready}");
    assert_eq!(ready["workers"][0]["worker_id"], "w-deadline", "{ready}");
    assert!(ready["workers"][0]["last_claim_at"].is_string(), "{ready}");
    let api_metrics = scrape(format!("{}/metrics", api.base)).await;
    assert!(
        api_metrics.contains("tollgate_workers_alive 1"),
        "{api_metrics}"
    );
    assert!(api_metrics.contains("# HELP tollgate_worker_heartbeat_age_seconds "));
    // SIGTERM: a graceful stop.
    Command::new("kill")
        .args(["-TERM", &w.0.id().to_string()])
        .status()
        .unwrap();
    let status = w.0.wait().unwrap();
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    // With the worker gone, readiness names the silent loop once its beat is 1 s old.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ready: Value =
        serde_json::from_str(&scrape(format!("{}/health/ready", api.base)).await).unwrap();
    assert!(
        ready["warning"]
            .as_str()
            .is_some_and(|w| w.contains("the last one came from `w-deadline`")),
        "{ready}"
    );
    api.running.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_holding_a_lease_is_taken_over() {
    let url = fresh_database().await;
    let api = Api::start(&url).await;
    let slow = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(4)))
        .mount(&slow)
        .await;
    let id = api
        .start_paused(json!({
            "workflow_id": "slow", "version": "1", "trigger": {"type": "manual"},
            "steps": [
                {"id": "gate", "type": "approval", "approval": {"approvers": {"role": "finance"}, "timeout": "1s", "on_timeout": "call"},
                 "on_approve": "ok", "on_reject": "ok"},
                {"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": format!("{}/slow", slow.uri()), "timeout": "10s"}], "next": "ok"},
                {"id": "ok", "type": "action", "action": "allow"}]}))
        .await;
    // Worker A claims the expired gate and starts the slow call: it holds the lease.
    let mut a = worker(&url, "w-a", "2s");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while slow
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "worker A never made the call"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = api.get(&format!("/api/v1/executions/{id}")).await;
    assert_eq!(held["status"], "running", "{held}");
    a.0.kill().unwrap(); // SIGKILL while the step is in flight
    a.0.wait().unwrap();

    // Worker B takes over once A's lease lapses and runs the step again, with the same
    // idempotency key.
    let b = worker(&url, "w-b", "2s");
    let done = api
        .until(&id, |e| e["status"] == "completed", Duration::from_secs(30))
        .await;
    assert_eq!(done["result"], "allowed");
    let calls = slow.received_requests().await.unwrap();
    assert!(calls.len() >= 2, "the interrupted call is made again");
    let keys: Vec<_> = calls
        .iter()
        .map(|r| r.headers.get("idempotency-key").cloned())
        .collect();
    assert!(
        keys[0].is_some() && keys.iter().all(|k| k == &keys[0]),
        "same Idempotency-Key on every attempt: {keys:?}"
    );
    // The rerun replaced the interrupted attempt's record (same step, visit, attempt).
    let trace = api.get(&format!("/api/v1/executions/{id}/trace")).await;
    let call: Vec<_> = trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step_id"] == "call")
        .collect();
    assert_eq!(call.len(), 1, "{trace}");
    assert_eq!(call[0]["status"], "completed");
    drop(b);
    api.running.stop().await.unwrap();
}

#[test]
fn refuses_sqlite_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-resume-worker"))
        .args(["--database-url", "sqlite:/tmp/x.db"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs PostgreSQL") && err.contains("embedded"),
        "{err}"
    );
}
