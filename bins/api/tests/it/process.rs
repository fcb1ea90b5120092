//! The real binary as a child process: first start, kill -9, restart on the same data.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::order_workflow;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Server {
    child: Child,
    pub base: String,
    /// Everything the server wrote to stdout (its log), read as it comes: a pipe nobody
    /// reads fills up and freezes a server that logs at `debug`.
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    async fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, &[], "warn", Stdio::null()).await
    }

    /// With extra arguments, a log level and where its log (stderr) goes.
    async fn start_with(data_dir: &Path, args: &[&str], log: &str, stderr: Stdio) -> Self {
        Self::start_bin(
            Path::new(env!("CARGO_BIN_EXE_tollgate-api")),
            data_dir,
            args,
            log,
            stderr,
        )
        .await
    }

    /// `bin` (this release's `tollgate-api` or another's) on `data_dir`, ready.
    pub async fn start_bin(
        bin: &Path,
        data_dir: &Path,
        args: &[&str],
        log: &str,
        stderr: Stdio,
    ) -> Self {
        let port = free_port();
        let mut child = Command::new(bin)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--poll-interval", "100ms"])
            .args(args)
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = child.stdout.take().map(|mut stdout| {
            let out = out.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut chunk = [0u8; 8192];
                while let Ok(n) = stdout.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    out.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            })
        });
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(res) = client.get(format!("{base}/health/ready")).send().await {
                if res.status() == StatusCode::OK {
                    return Self {
                        child,
                        base,
                        out,
                        reader,
                    };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("tollgate-api did not become ready");
    }

    pub fn kill9(mut self) -> String {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let out = std::mem::take(&mut *self.out.lock().unwrap());
        String::from_utf8(out).unwrap()
    }
}

/// A test that fails midway still stops its servers (which would otherwise outlive it,
/// holding the test harness's output open).
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn send(
    client: &reqwest::Client,
    key: &str,
    url: String,
    body: Value,
) -> (StatusCode, Value) {
    let res = client
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_executions_survive_kill_9_and_complete_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();

    let first = Server::start(&data).await;
    let key_file = data.join("admin.key");
    let admin = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "admin.key must be private");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700, "the data directory must be private");
        let mut files = 0;
        for entry in std::fs::read_dir(&data).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{} must be private", path.display());
            files += 1;
        }
        assert!(files >= 3, "admin.key, the database and its WAL files");
    }
    let (s, _) = send(
        &client,
        &admin,
        format!("{}/api/v1/workflows", first.base),
        order_workflow("orders"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, manager) = send(
        &client,
        &admin,
        format!("{}/api/v1/api-keys", first.base),
        json!({"name": "maria", "roles": ["sales_manager"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let manager = manager["key"].as_str().unwrap().to_owned();
    let mut executions = Vec::new();
    for i in 0..20 {
        let (s, b) = send(
            &client,
            &admin,
            format!("{}/api/v1/events?wait=true", first.base),
            json!({"event_type": "order.created", "payload": {"total": 20000 + i, "order_id": format!("o-{i}")}}),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        executions.push(b["started"][0].as_str().unwrap().to_owned());
    }
    // A console session, signed in before the kill.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = no_redirect
        .get(format!("{}/sign-in", first.base))
        .send()
        .await
        .unwrap();
    let pre = form.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let html = form.text().await.unwrap();
    let token = html
        .split("name=\"_csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let signed = no_redirect
        .post(format!("{}/sign-in", first.base))
        .header("cookie", pre)
        .form(&[("_csrf", token.as_str()), ("key", admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let session = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("tg_session="))
        .unwrap();

    let printed = first.kill9();
    assert!(printed.contains("admin API key (shown once"), "{printed}");
    assert!(
        printed.contains(&admin),
        "the first start prints the key once"
    );

    let second = Server::start(&data).await;
    let inbox = no_redirect
        .get(format!("{}/", second.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(
        inbox.status(),
        StatusCode::OK,
        "console sessions survive a restart"
    );
    let (_, paused) = {
        let res = client
            .get(format!(
                "{}/api/v1/executions/paused?limit=100",
                second.base
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        (res.status(), res.json::<Value>().await.unwrap())
    };
    assert_eq!(
        paused["items"].as_array().unwrap().len(),
        20,
        "every paused execution survived"
    );
    let approvals = client
        .get(format!(
            "{}/api/v1/approvals?mine=true&limit=100",
            second.base
        ))
        .bearer_auth(&manager)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let approvals = approvals["items"].as_array().unwrap().clone();
    assert_eq!(approvals.len(), 20);
    for approval in approvals {
        let (s, b) = send(
            &client,
            &manager,
            format!(
                "{}/api/v1/approvals/{}/approve?wait=true",
                second.base,
                approval["id"].as_str().unwrap()
            ),
            json!({"reason": "after restart"}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["execution"]["status"], "completed", "{b}");
    }
    for id in &executions {
        let e = client
            .get(format!("{}/api/v1/executions/{id}", second.base))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(
            (&e["status"], &e["result"]),
            (&json!("completed"), &json!("allowed"))
        );
    }
    let printed = second.kill9();
    assert!(printed.contains("admin API key: in"), "{printed}");
    assert!(
        !printed.contains(&admin),
        "later starts never print the key"
    );
}

#[test]
fn validate_subcommand_reports_every_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"workflow_id": "w", "version": "1", "steps": [{"id": "a", "type": "condition", "condition": {"field": "x", "operator": "nope", "value": 1}, "on_true": "gone"}]}"#,
    )
    .unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/workflows/original/high-value-order-approval.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-api"))
        .arg("validate")
        .arg(&good)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("valid (high_value_order"), "{text}");
    assert!(
        text.contains("steps[0].condition.operator") && text.contains("steps[0].on_true"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-api"))
        .arg("validate")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn nonsense_settings_are_refused_at_start_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, value) in [
        ("--poll-interval", "0s"),
        ("--lease", "0ms"),
        ("--heartbeat-interval", "0s"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate-api"))
            .args(["--data-dir"])
            .arg(dir.path())
            .args([flag, value, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let text = String::from_utf8(out.stderr).unwrap();
        assert!(
            text.contains(flag) && text.contains("must be longer than zero"),
            "{text}"
        );
        assert!(
            !dir.path().join("tollgate.db").exists(),
            "nothing is opened before the settings are checked"
        );
    }
}

#[test]
fn keys_create_and_migrate_subcommands_work_on_a_fresh_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-api"))
        .arg("migrate")
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-api"))
        .args([
            "keys",
            "create",
            "--name",
            "billing",
            "--roles",
            "service,viewer",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("tg_") && l.len() == 67),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-api"))
        .args([
            "keys",
            "create",
            "--name",
            "billing",
            "--roles",
            "viewer",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a taken name is refused");
    // A backup of the data directory, then a restore: the copy knows the key.
    let copy = dir.path().join("copy.db");
    let backup = || {
        Command::new(env!("CARGO_BIN_EXE_tollgate-api"))
            .arg("backup")
            .arg(&copy)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap()
    };
    let out = backup();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = backup();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("never overwrites"));
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    std::fs::copy(&copy, restored.join("tollgate.db")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-api"))
        .args([
            "keys",
            "create",
            "--name",
            "billing",
            "--roles",
            "viewer",
            "--data-dir",
        ])
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("billing"),
        "the restored database has the key made before the backup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-api"))
        .args(["--database-url", "mysql://x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is neither `sqlite:PATH`"));
}

/// A secret in a webhook's URL, header and body, sent to a closed port and to a server
/// answering 500: its value appears in no API answer, nowhere in the database files and
/// nowhere in the log — though both failures are recorded, with their URLs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_leave_the_process_in_errors_answers_files_or_logs() {
    const SECRET: &str = "s3cr3t-T0ken-7f1e9a";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        json!({"secrets": {"api_token": SECRET}}).to_string(),
    )
    .unwrap();
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let failing = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(500).set_body_string("upstream broke"))
        .mount(&failing)
        .await;
    let closed = free_port();
    let server = Server::start_with(
        &data,
        &["--config", config.to_str().unwrap()],
        "debug",
        Stdio::from(log),
    )
    .await;
    let admin = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let hook = |url: String| {
        json!({"type": "webhook", "url": url,
               "headers": {"Authorization": "Bearer {{secrets.api_token}}"},
               "body": {"token": "{{secrets.api_token}}", "order": "{{order_id}}"}})
    };
    let workflow = json!({
        "workflow_id": "leaky", "version": "1",
        "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "closed", "type": "action", "action": "execute",
             "retry": {"max_attempts": 1},
             "execute": [hook(format!("http://127.0.0.1:{closed}/hook?token={{{{secrets.api_token}}}}"))],
             "on_error": "failing"},
            {"id": "failing", "type": "action", "action": "execute",
             "retry": {"max_attempts": 1},
             "execute": [hook(format!("{}/hook/{{{{secrets.api_token}}}}", failing.uri()))]}
        ]
    });
    let (s, b) = send(
        &client,
        &admin,
        format!("{}/api/v1/workflows", server.base),
        workflow,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = send(
        &client,
        &admin,
        format!("{}/api/v1/events?wait=true", server.base),
        json!({"event_type": "order.created", "payload": {"order_id": "o-1"}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["started"][0].as_str().unwrap().to_owned();
    let get = |path: String| {
        let client = client.clone();
        let admin = admin.clone();
        async move {
            client
                .get(path)
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let execution = get(format!("{}/api/v1/executions/{id}", server.base)).await;
    let steps = get(format!(
        "{}/api/v1/executions/{id}/resume-requests",
        server.base
    ))
    .await
        + &execution;
    assert!(execution.contains("\"failed\""), "{execution}");
    // The failures are there, with the URLs redacted.
    assert!(
        steps.contains(&format!("127.0.0.1:{closed}/hook?token=***")),
        "{steps}"
    );
    assert!(steps.contains("/hook/***"), "{steps}");
    assert!(steps.contains("500"), "{steps}");
    // The remote did receive the secret (it is for them).
    let received = failing.received_requests().await.unwrap();
    assert!(received[0].url.path().ends_with(SECRET));
    let log = server.kill9();
    // Written to a pipe, not a terminal: plain text without colour codes.
    assert!(log.contains("DEBUG"), "the log was captured: {log}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI colour codes in a piped log"
    );
    let mut everything = vec![
        ("execution answer".to_owned(), execution.into_bytes()),
        ("steps answer".to_owned(), steps.into_bytes()),
        ("stdout".to_owned(), log.into_bytes()),
        ("log".to_owned(), std::fs::read(&log_path).unwrap()),
    ];
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        everything.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    assert!(
        everything.iter().any(|(name, _)| {
            Path::new(name)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("db"))
        }),
        "the database file is checked"
    );
    for (name, bytes) in everything {
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret appears in {name}"
        );
    }
}

/// `kill -9` in the middle of a burst of events that waiting executions expect: after a
/// restart, with the client resending what it was not answered (same `event_id`), every
/// waiting execution is resumed exactly once — events stored before the kill but not yet
/// offered to their waits are delivered by the restarted server, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_executions_all_resume_after_a_kill_9_during_an_event_burst() {
    const N: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let args = ["--lease", "1s"];
    let first = Server::start_with(&data, &args, "warn", Stdio::null()).await;
    let admin = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let workflow = json!({
        "workflow_id": "pay", "version": "1",
        "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "wait_payment", "type": "wait", "wait": {"event": "payment.received",
                "match": {"field": "event.order_id", "operator": "eq", "value": "{{order_id}}"}},
             "next": "ok"},
            {"id": "ok", "type": "action", "action": "allow"}
        ]
    });
    let (s, _) = send(
        &client,
        &admin,
        format!("{}/api/v1/workflows", first.base),
        workflow,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let mut executions = Vec::new();
    for i in 0..N {
        let (s, b) = send(
            &client,
            &admin,
            format!("{}/api/v1/events?wait=true", first.base),
            json!({"event_type": "order.created", "event_id": format!("o-{i}"), "payload": {"order_id": format!("o-{i}")}}),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        executions.push(b["started"][0].as_str().unwrap().to_owned());
    }
    // The burst: every payment at once; the server dies when a tenth are answered.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let payment = |i: usize| json!({"event_type": "payment.received", "event_id": format!("p-{i}"), "payload": {"order_id": format!("o-{i}")}});
    let burst: Vec<_> = (0..N)
        .map(|i| {
            let (client, admin, answered) = (client.clone(), admin.clone(), answered.clone());
            let url = format!("{}/api/v1/events", first.base);
            let body = payment(i);
            tokio::spawn(async move {
                let ok = matches!(
                    client.post(url).bearer_auth(&admin).json(&body).send().await,
                    Ok(res) if res.status().is_success()
                );
                if ok {
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                ok
            })
        })
        .collect();
    while answered.load(std::sync::atomic::Ordering::SeqCst) < N / 10 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first.kill9();
    let mut unanswered = Vec::new();
    for (i, task) in burst.into_iter().enumerate() {
        if !task.await.unwrap() {
            unanswered.push(i);
        }
    }
    eprintln!(
        "killed with {} of {N} payments answered",
        N - unanswered.len()
    );
    let second = Server::start_with(&data, &args, "warn", Stdio::null()).await;
    // The client resends what it was not answered, with the same event_id.
    for i in &unanswered {
        let (s, b) = send(
            &client,
            &admin,
            format!("{}/api/v1/events", second.base),
            payment(*i),
        )
        .await;
        assert!(s.is_success(), "{s} {b}");
    }
    let get = |id: &str| {
        let url = format!("{}/api/v1/executions/{id}", second.base);
        let (client, admin) = (client.clone(), admin.clone());
        async move {
            client
                .get(url)
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    // Within a few leases, everything is resumed (events stored before the kill are
    // delivered by the worker once their grace, one lease, is over).
    let mut last = Vec::new();
    for _ in 0..100 {
        last = Vec::new();
        for id in &executions {
            last.push(get(id).await);
        }
        if last.iter().all(|e| e["status"] == "completed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stuck: Vec<&Value> = last.iter().filter(|e| e["status"] != "completed").collect();
    assert!(
        stuck.is_empty(),
        "{} of {N} waiting executions were not resumed ({} events unanswered): {:?}",
        stuck.len(),
        unanswered.len(),
        stuck
            .iter()
            .map(|e| (&e["id"], &e["status"]))
            .collect::<Vec<_>>()
    );
    for e in &last {
        assert_eq!(e["resume_count"], 1, "resumed exactly once: {e}");
        assert_eq!(e["result"], "allowed");
    }
    drop(second.kill9());
}

/// What the SQLite file holds for executions: each one's (step records, notifications),
/// and notifications or step records whose execution is gone (a half-deleted one).
async fn purge_state(data: &Path) -> (Vec<(i64, i64)>, i64) {
    use sqlx::Row;
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data.join("tollgate.db"))
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let rows = sqlx::query(
        "SELECT (SELECT count(*) FROM step_records s WHERE s.execution_id = e.id) AS steps, \
                (SELECT count(*) FROM notifications n WHERE n.execution_id = e.id) AS notes \
         FROM executions e",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let per_execution = rows
        .iter()
        .map(|r| (r.get::<i64, _>("steps"), r.get::<i64, _>("notes")))
        .collect();
    let orphans: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM notifications WHERE execution_id NOT IN (SELECT id FROM executions)) + \
                (SELECT count(*) FROM step_records WHERE execution_id NOT IN (SELECT id FROM executions))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    (per_execution, orphans)
}

/// History retention deletes ended executions in batches while the server runs; a
/// `kill -9` wherever it lands — between batches or inside one — leaves every execution
/// either whole (its step records and notification) or gone entirely, and the restarted
/// server finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_a_purge_leaves_no_half_deleted_execution() {
    const N: usize = 600;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let first = Server::start(&data).await;
    let admin = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let workflow = json!({
        "workflow_id": "orders", "version": "1",
        "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "tell", "type": "execute", "execute": [{"type": "notify", "recipients": ["ops"], "message": "order {{order_id}}"}], "next": "done"},
            {"id": "done", "type": "action", "action": "allow"}
        ]
    });
    let (s, _) = send(
        &client,
        &admin,
        format!("{}/api/v1/workflows", first.base),
        workflow,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    for i in 0..N {
        let (s, _) = send(
            &client,
            &admin,
            format!("{}/api/v1/events?wait=true", first.base),
            json!({"event_type": "order.created", "payload": {"order_id": i}}),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED);
    }
    first.kill9();
    let (before, orphans) = purge_state(&data).await;
    assert_eq!((before.len(), orphans), (N, 0));
    assert!(
        before.iter().all(|c| *c == (2, 1)),
        "each has 2 steps and 1 notification"
    );

    // Each start purges with a 1 s retention, 100 executions per transaction, and is
    // killed after a different delay. (Once all are past their retention, every batch is
    // full, so each start purges from its first pass on.)
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let args = ["--retention", "1s", "--retention-batch", "100"];
    let mut left = N;
    for delay_ms in [0_u64, 40, 95, 150, 230] {
        let server = Server::start_with(&data, &args, "warn", Stdio::null()).await;
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        server.kill9();
        let (now, orphans) = purge_state(&data).await;
        assert_eq!(
            orphans, 0,
            "no step record or notification outlives its execution"
        );
        assert!(
            now.iter().all(|c| *c == (2, 1)),
            "every execution left is whole"
        );
        eprintln!(
            "killed after {delay_ms} ms: {} of {N} executions left",
            now.len()
        );
        assert!(now.len() <= left);
        left = now.len();
    }
    let last = Server::start_with(&data, &args, "warn", Stdio::null()).await;
    for _ in 0..100 {
        if purge_state(&data).await.0.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        purge_state(&data).await,
        (Vec::new(), 0),
        "the restarted server finished"
    );
    drop(last);
}

/// `link-keys rotate` replaces the signing key; the replaced one stays in the file (it
/// verifies for the overlap) and the file stays owner-only.
#[test]
fn link_keys_rotate_subcommand_keeps_the_replaced_key_for_the_overlap() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rotate = || {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate-api"))
            .args([
                "link-keys",
                "rotate",
                "--link-key-overlap",
                "2h",
                "--data-dir",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = rotate();
    let second = rotate();
    assert!(second.contains("verify for 2h more"), "{second}");
    assert_ne!(
        first.split_whitespace().nth(2),
        second.split_whitespace().nth(2)
    );
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("link.key")).unwrap()).unwrap();
    let keys = file["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{file}");
    assert!(keys[0]["retired_at"].is_string() && keys[1].get("retired_at").is_none());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("link.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = std::fs::metadata(&data).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}

/// `kill -9` while a notification is being sent — claimed, posted, its outcome not yet
/// recorded: after a restart it is sent again, once, with the same id as its key, and
/// recorded as sent (docs/notifications.md, "The outbox").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_cut_off_by_kill_9_is_sent_once_after_restart_with_its_id() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let hook = MockServer::start().await;
    // The first post hangs: the server is killed while it waits. Later ones answer.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .up_to_n_times(1)
        .mount(&hook)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&hook)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config.json");
    std::fs::write(
        &config,
        serde_json::to_vec(
            &json!({"channels": {"webhook": {"webhook_url": hook.uri()}},
                                   "http_timeout": "90s"}),
        )
        .unwrap(),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let args = ["--config", &config, "--notification-claim", "2s"];
    let client = reqwest::Client::new();
    let first = Server::start_with(&data, &args, "warn", Stdio::null()).await;
    let admin = std::fs::read_to_string(data.join("admin.key"))
        .unwrap()
        .trim()
        .to_owned();
    let (s, _) = send(
        &client,
        &admin,
        format!("{}/api/v1/workflows", first.base),
        json!({"workflow_id": "orders", "version": "1", "trigger": {"type": "event", "event": "order.created"},
               "steps": [{"id": "approve", "type": "approval",
                          "approval": {"approvers": {"role": "sales_manager"}, "notify": [{"channel": "webhook"}]},
                          "on_approve": "ok"},
                         {"id": "ok", "type": "action", "action": "allow"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, b) = send(
        &client,
        &admin,
        format!("{}/api/v1/events?wait=true", first.base),
        json!({"event_type": "order.created", "payload": {"order_id": "o-1"}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let execution = b["started"][0].as_str().unwrap().to_owned();
    for _ in 0..100 {
        if !hook.received_requests().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        hook.received_requests().await.unwrap().len(),
        1,
        "the send is under way"
    );
    first.kill9();

    let second = Server::start_with(&data, &args, "warn", Stdio::null()).await;
    let mut listed = Value::Null;
    for _ in 0..200 {
        let res = client
            .get(format!(
                "{}/api/v1/executions/{execution}/notifications",
                second.base
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        listed = res.json().await.unwrap();
        if listed["items"][0]["status"] == "sent" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n = &listed["items"][0];
    assert_eq!(
        (&n["status"], &n["attempts"]),
        (&json!("sent"), &json!(1)),
        "{listed}"
    );
    let posts = hook.received_requests().await.unwrap();
    assert_eq!(
        posts.len(),
        2,
        "once before the kill, once after the restart"
    );
    for post in &posts {
        assert_eq!(
            post.headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap(),
            n["id"].as_str().unwrap(),
            "the receiver drops the repeat by its key"
        );
    }
    drop(second.kill9());
}
