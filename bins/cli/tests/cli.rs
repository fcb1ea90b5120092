//! The real `tollgate` binary against a real `tollgate-api` started by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod mcp;

const CLI: &str = env!("CARGO_BIN_EXE_tollgate");

/// `tollgate-api`, built beside this binary (by the workspace build, or here when this
/// package's tests run alone).
fn server_bin() -> PathBuf {
    let dir = Path::new(CLI).parent().unwrap();
    let bin = dir.join(format!("tollgate-api{}", std::env::consts::EXE_SUFFIX));
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "tollgate-api",
                "--bin",
                "tollgate-api",
            ])
            .status()
            .unwrap();
        assert!(status.success(), "building tollgate-api failed");
    }
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn new_key() -> String {
    format!(
        "tg_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

struct Server {
    child: Child,
    url: String,
    admin: String,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(database_url: Option<&str>) -> Self {
        Self::start_with(database_url, &[])
    }

    /// A server started with `extra` arguments too.
    fn start_with(database_url: Option<&str>, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let admin = new_key();
        std::fs::write(dir.path().join("admin.key"), &admin).unwrap();
        let port = free_port();
        let mut server = Self {
            child: spawn_server(dir.path(), database_url, port, extra),
            url: format!("http://127.0.0.1:{port}"),
            admin,
            dir,
        };
        let start = Instant::now();
        // Ready when *this* server knows our admin key: a port picked by `free_port` can
        // be taken by another test's server in between (ours then exits: start it again
        // on another port).
        while server.tg(&server.admin, &["whoami"]).status.code() != Some(0) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tollgate-api did not become ready"
            );
            if server.child.try_wait().unwrap().is_some() {
                let port = free_port();
                server.child = spawn_server(server.dir.path(), database_url, port, extra);
                server.url = format!("http://127.0.0.1:{port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Runs `tollgate` with `key` (empty: none) against this server.
    fn tg(&self, key: &str, args: &[&str]) -> Output {
        self.tg_in(key, args, None)
    }

    fn tg_in(&self, key: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(CLI);
        cmd.args(args)
            .env("TOLLGATE_URL", &self.url)
            .env("TOLLGATE_CONFIG_DIR", self.config_dir())
            .env("NO_COLOR", "1")
            .env_remove("TOLLGATE_PROFILE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if key.is_empty() {
            cmd.env_remove("TOLLGATE_KEY");
        } else {
            cmd.env("TOLLGATE_KEY", key);
        }
        let mut child = cmd.spawn().unwrap();
        {
            let mut input = child.stdin.take().unwrap();
            if let Some(text) = stdin {
                input.write_all(text.as_bytes()).unwrap();
            }
        }
        child.wait_with_output().unwrap()
    }
}

/// `tollgate-api` on `port` with its data (and admin key file) in `dir`.
fn spawn_server(dir: &Path, database_url: Option<&str>, port: u16, extra: &[&str]) -> Child {
    let mut cmd = Command::new(server_bin());
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--admin-key-file")
        .arg(dir.join("admin.key"))
        .args(["--poll-interval", "100ms"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    cmd.spawn().unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts success and returns stdout.
#[track_caller]
fn ok(out: &Output) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_clean(&stderr);
    stdout
}

/// Asserts exit `code` and returns stderr.
#[track_caller]
fn fails(out: &Output, code: i32) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_clean(&stderr);
    stderr
}

/// No panic, no Rust debug dump.
#[track_caller]
fn assert_clean(stderr: &str) {
    for bad in [
        "panicked",
        "RUST_BACKTRACE",
        "Error {",
        "Some(",
        "reqwest::",
    ] {
        assert!(!stderr.contains(bad), "`{bad}` in stderr:\n{stderr}");
    }
}

#[track_caller]
fn json_of(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).unwrap()
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workflows/original");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// A receiver that answers every request after `delay` (a webhook still in flight).
fn slow_receiver(delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_later(stream, delay));
        }
    });
    url
}

fn answer_later(mut stream: TcpStream, delay: Duration) {
    let mut buf = [0u8; 8192];
    let _ = stream.read(&mut buf);
    std::thread::sleep(delay);
    let _ =
        stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
}

fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.display().to_string()
}

/// The README's walk-through, done with the CLI, and every subcommand at least once.
#[test]
fn walkthrough_and_every_subcommand_on_sqlite() {
    let s = Server::start(None);
    let admin = s.admin.clone();

    // login: key from stdin, checked, stored owner-only; then no key is needed.
    let out = ok(&s.tg_in("", &["login", "--key-stdin"], Some(&format!("{admin}\n"))));
    assert!(
        out.contains("logged in to") && out.contains("as admin"),
        "{out}"
    );
    let profile = s.config_dir().join("profiles.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&profile).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "profiles.json is {mode:o}");
    }
    let me = json_of(&s.tg("", &["whoami", "-o", "json"]));
    assert_eq!(me["name"], "admin");
    assert_eq!(me["roles"], json!(["admin"]));

    // Offline validation, then apply: created; again: unchanged.
    let files = examples();
    assert_eq!(files.len(), 7);
    let mut validate = vec!["workflows", "validate"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    validate.extend(names.iter().map(String::as_str));
    let out = ok(&s.tg("", &validate));
    assert_eq!(out.matches(": valid").count(), 7, "{out}");
    let mut apply = vec!["workflows", "apply"];
    for n in &names {
        apply.extend(["-f", n.as_str()]);
    }
    let out = ok(&s.tg("", &apply));
    assert_eq!(out.matches(" created").count(), 7, "{out}");
    let out = ok(&s.tg("", &apply));
    assert_eq!(out.matches(" unchanged").count(), 7, "{out}");
    let list = json_of(&s.tg("", &["workflows", "list", "-o", "json"]));
    assert_eq!(list.as_array().unwrap().len(), 7);
    let table = ok(&s.tg("", &["workflows", "list"]));
    assert!(table.starts_with("WORKFLOW"), "{table}");
    assert!(table.contains("high_value_order_approval"), "{table}");

    // A changed definition replaces its version and says what changed; a new version
    // is added beside it.
    let tmp = tempfile::tempdir().unwrap();
    let hv = files
        .iter()
        .find(|f| f.ends_with("high-value-order-approval.json"))
        .unwrap();
    let mut doc: Value = serde_json::from_slice(&std::fs::read(hv).unwrap()).unwrap();
    doc["name"] = json!("High Value Order Approval (edited)");
    let edited = write_json(tmp.path(), "edited.json", &doc);
    let out = ok(&s.tg("", &["workflows", "apply", "-f", &edited]));
    assert!(out.contains("1.0.0 replaced"), "{out}");
    assert!(
        out.contains("name: High Value Order Approval → High Value Order Approval (edited)"),
        "{out}"
    );
    doc["version"] = json!("2.0.0");
    doc["steps"][0]["condition"]["value"] = json!(20000);
    let v2 = write_json(tmp.path(), "v2.json", &doc);
    let out = ok(&s.tg("", &["workflows", "apply", "-f", &v2]));
    assert!(
        out.contains("2.0.0 added as a new version (other versions: 1.0.0)"),
        "{out}"
    );
    assert!(out.contains("step check_order_value: changed"), "{out}");
    let versions = json_of(&s.tg(
        "",
        &[
            "workflows",
            "versions",
            "high_value_order_approval",
            "-o",
            "json",
        ],
    ));
    assert_eq!(versions.as_array().unwrap().len(), 2);
    // Two versions: a name alone is ambiguous (usage), a version picks one.
    let err = fails(
        &s.tg("", &["workflows", "get", "high_value_order_approval"]),
        2,
    );
    assert!(err.contains("choose one with --version"), "{err}");
    let out = ok(&s.tg(
        "",
        &[
            "workflows",
            "disable",
            "high_value_order_approval",
            "--version",
            "2.0.0",
        ],
    ));
    assert!(out.contains("2.0.0 disabled"), "{out}");
    let enabled = json_of(&s.tg(
        "",
        &[
            "workflows",
            "enable",
            "high_value_order_approval",
            "--version",
            "2.0.0",
            "-o",
            "json",
        ],
    ));
    assert_eq!(enabled["enabled"], true);
    ok(&s.tg(
        "",
        &[
            "workflows",
            "disable",
            "high_value_order_approval",
            "--version",
            "2.0.0",
        ],
    ));
    let out = ok(&s.tg(
        "",
        &[
            "workflows",
            "delete",
            "high_value_order_approval",
            "--version",
            "2.0.0",
        ],
    ));
    assert!(out.contains("deleted"), "{out}");
    let got = json_of(&s.tg(
        "",
        &[
            "workflows",
            "get",
            "high_value_order_approval",
            "-o",
            "json",
        ],
    ));
    assert_eq!(got["version"], "1.0.0");
    let out = ok(&s.tg("", &["workflows", "get", "high_value_order_approval"]));
    assert!(
        out.contains("check_order_value") && out.contains("on_true: check_customer_tier"),
        "{out}"
    );

    // Keys: an approver, a service.
    let created = json_of(&s.tg(
        "",
        &[
            "keys",
            "create",
            "maria",
            "--role",
            "sales_manager",
            "-o",
            "json",
        ],
    ));
    let maria = created["key"].as_str().unwrap().to_owned();
    let service_out = ok(&s.tg("", &["keys", "create", "shop", "--role", "service"]));
    let shop = service_out.lines().last().unwrap().trim().to_owned();
    assert!(shop.starts_with("tg_"), "{service_out}");
    let keys = ok(&s.tg("", &["keys", "list"]));
    assert!(
        keys.contains("maria") && keys.contains("sales_manager"),
        "{keys}"
    );

    // An event starts an execution that stops at its approval.
    let data = r#"{"order": {"total": 25000}, "customer": {"tier": "standard"}}"#;
    let sent = json_of(&s.tg(
        &shop,
        &[
            "events",
            "send",
            "order.checkout.initiated",
            "--id",
            "order-1",
            "--data",
            data,
            "--wait",
            "-o",
            "json",
        ],
    ));
    assert_eq!(sent["started"].as_array().unwrap().len(), 1, "{sent}");
    assert_eq!(sent["executions"][0]["status"], "paused", "{sent}");
    let exec = sent["started"][0].as_str().unwrap().to_owned();
    let event_id = sent["id"].as_str().unwrap().to_owned();
    // The same event_id again starts nothing.
    let again = json_of(&s.tg(
        &shop,
        &[
            "events",
            "send",
            "order.checkout.initiated",
            "--id",
            "order-1",
            "--data",
            data,
            "-o",
            "json",
        ],
    ));
    assert_eq!(again["started"], sent["started"]);
    // The payload from standard input (`-`): an unknown type starts nothing, and says so.
    let piped = ok(&s.tg_in(
        &shop,
        &["events", "send", "nobody.listens", "-"],
        Some(r#"{"n": 1}"#),
    ));
    assert!(
        piped.contains("nobody listens to `nobody.listens`"),
        "{piped}"
    );
    let err = fails(
        &s.tg_in(&shop, &["events", "send", "x", "-"], Some("[1]")),
        2,
    );
    assert!(err.contains("JSON object"), "{err}");
    let ev = ok(&s.tg("", &["events", "get", &event_id]));
    assert!(
        ev.contains("order.checkout.initiated") && ev.contains(&exec),
        "{ev}"
    );

    // Maria's inbox has it; the requester may not decide it.
    let inbox = ok(&s.tg(&maria, &["approvals", "inbox"]));
    assert!(
        inbox.contains("require_approval") && inbox.contains("pending"),
        "{inbox}"
    );
    let approvals = json_of(&s.tg(&maria, &["approvals", "inbox", "-o", "json"]));
    let approval = approvals[0]["id"].as_str().unwrap().to_owned();
    let shown = ok(&s.tg("", &["approvals", "get", &approval]));
    assert!(
        shown.contains("0 of 1") && shown.contains("role:sales_manager"),
        "{shown}"
    );
    let listed = ok(&s.tg(
        "",
        &[
            "approvals",
            "list",
            "--status",
            "pending",
            "--role",
            "sales_manager",
        ],
    ));
    assert!(listed.contains(&approval), "{listed}");
    let err = fails(
        &s.tg(
            &shop,
            &["approvals", "approve", &approval, "--reason", "me"],
        ),
        4,
    );
    assert!(err.contains("may not"), "{err}");
    let out = ok(&s.tg(
        &maria,
        &["approvals", "approve", &approval, "--reason", "checked"],
    ));
    assert!(
        out.contains("approved (1 of 1 approvals)") && out.contains("completed"),
        "{out}"
    );
    // A second decision is a conflict.
    let err = fails(
        &s.tg(
            &maria,
            &["approvals", "reject", &approval, "--reason", "late"],
        ),
        4,
    );
    assert!(err.contains("already"), "{err}");

    // The execution: list, get, steps, audit, watch (ended: returns at once).
    let listed = ok(&s.tg(
        "",
        &[
            "executions",
            "list",
            "--status",
            "completed",
            "--since",
            "1h",
        ],
    ));
    assert!(
        listed.contains(&exec) && listed.contains("high_value_order_approval@1.0.0"),
        "{listed}"
    );
    let none = json_of(&s.tg(
        "",
        &[
            "executions",
            "list",
            "--since",
            "2000-01-01T00:00:00Z",
            "--status",
            "failed",
            "-o",
            "json",
        ],
    ));
    assert_eq!(none, json!([]));
    let got = json_of(&s.tg("", &["executions", "get", &exec, "-o", "json"]));
    assert_eq!(got["result"], "allowed");
    let steps = ok(&s.tg("", &["executions", "steps", &exec]));
    assert!(
        steps.contains("check_order_value") && steps.contains("require_approval"),
        "{steps}"
    );
    let audit = ok(&s.tg("", &["executions", "audit", &exec]));
    assert!(
        audit.contains("refused") && audit.contains("maria") && audit.contains("resumed"),
        "{audit}"
    );
    let watched = ok(&s.tg("", &["executions", "watch", &exec]));
    assert!(
        watched.contains("require_approval") && watched.contains("completed (allowed)"),
        "{watched}"
    );

    // Pause while a webhook is in flight, watch it stop, resume it, cancel a waiting one.
    let hook = slow_receiver(Duration::from_millis(1500));
    let ops = json!({"workflow_id": "ops", "version": "1", "trigger": {"type": "manual"},
        "steps": [
            {"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": hook}], "next": "pay"},
            {"id": "pay", "type": "wait", "wait": {"event": "payment.received", "timeout": "1h", "on_timeout": "late"}, "next": "done"},
            {"id": "done", "type": "action", "action": "allow"},
            {"id": "late", "type": "action", "action": "block"}]});
    let ops_file = write_json(tmp.path(), "ops.json", &ops);
    ok(&s.tg("", &["workflows", "apply", "-f", &ops_file]));
    let started = json_of(&s.tg("", &["workflows", "execute", "ops", "-o", "json"]));
    let run = started["id"].as_str().unwrap().to_owned();
    let paused = json_of(&s.tg(
        "",
        &[
            "executions",
            "pause",
            &run,
            "--reason",
            "checking",
            "-o",
            "json",
        ],
    ));
    assert!(
        paused["status"] == "paused" || paused["pause_requested"] == true,
        "{paused}"
    );
    let watched = ok(&s.tg("", &["executions", "watch", &run, "--timeout", "30s"]));
    assert!(
        watched.contains("paused at call (manual)") || watched.contains("paused at pay (manual)"),
        "{watched}"
    );
    let resumed = ok(&s.tg(
        "",
        &[
            "executions",
            "resume",
            &run,
            "--data",
            r#"{"checked": true}"#,
            "--reason",
            "ok",
            "--wait",
        ],
    ));
    assert!(
        resumed.contains("waiting at pay (event: payment.received)"),
        "{resumed}"
    );
    // Deliver the awaited event to that one execution.
    let delivered = ok(&s.tg(
        &shop,
        &[
            "events",
            "send",
            "payment.received",
            "--to",
            &run,
            "--data",
            "{}",
            "--wait",
        ],
    ));
    assert!(delivered.contains("completed (allowed)"), "{delivered}");
    let second = json_of(&s.tg("", &["workflows", "execute", "ops", "--wait", "-o", "json"]));
    let second_id = second["id"].as_str().unwrap().to_owned();
    let cancelled = ok(&s.tg(
        "",
        &["executions", "cancel", &second_id, "--reason", "duplicate"],
    ));
    assert!(cancelled.contains("cancelled"), "{cancelled}");
    let err = fails(&s.tg("", &["executions", "resume", &second_id]), 4);
    assert!(!err.is_empty());

    // Retry: a webhook to a port nobody listens on fails; a dry run lists the execution,
    // a retry runs the step again (and it fails again: the port is still closed).
    let broken = json!({"workflow_id": "broken", "version": "1", "trigger": {"type": "manual"},
        "steps": [
            {"id": "call", "type": "execute", "execute": [{"type": "webhook", "url": "http://127.0.0.1:1/hook"}], "next": "done"},
            {"id": "done", "type": "action", "action": "allow"}]});
    let broken_file = write_json(tmp.path(), "broken.json", &broken);
    ok(&s.tg("", &["workflows", "apply", "-f", &broken_file]));
    let failed = json_of(&s.tg(
        "",
        &["workflows", "execute", "broken", "--wait", "-o", "json"],
    ));
    assert_eq!(failed["status"], "failed", "{failed}");
    let failed_id = failed["id"].as_str().unwrap().to_owned();
    let preview = ok(&s.tg(
        "",
        &[
            "executions",
            "retry-many",
            "--workflow",
            "broken",
            "--reason",
            "port is open again",
            "--dry-run",
        ],
    ));
    assert!(
        preview.contains(&failed_id) && preview.contains("would_retry") && preview.contains("call"),
        "{preview}"
    );
    let retried = json_of(&s.tg(
        "",
        &[
            "executions",
            "retry",
            &failed_id,
            "--reason",
            "port is open again",
            "--wait",
            "-o",
            "json",
        ],
    ));
    assert_eq!(
        (&retried["status"], &retried["context"]["retry"]["count"]),
        (&json!("failed"), &json!(1)),
        "{retried}"
    );
    let err = fails(
        &s.tg("", &["executions", "retry", &second_id, "--reason", "x"]),
        4,
    );
    assert!(err.contains("cancelled"), "{err}");
    let audit = ok(&s.tg("", &["executions", "audit", &failed_id]));
    assert!(audit.contains("retry"), "{audit}");

    // Migrate: a migration of a completed execution is refused with the reason; a dry
    // run over a workflow with nothing paused lists nothing.
    let err = fails(
        &s.tg(
            "",
            &[
                "executions",
                "migrate",
                &failed_id,
                "--to-version",
                "1",
                "--dry-run",
            ],
        ),
        4,
    );
    assert!(err.contains("only paused or waiting"), "{err}");
    let none = ok(&s.tg(
        "",
        &[
            "executions",
            "migrate-many",
            "--workflow",
            "broken",
            "--to-version",
            "1",
            "--dry-run",
        ],
    ));
    assert!(!none.contains(&failed_id), "{none}");
    let bad = fails(
        &s.tg(
            "",
            &[
                "executions",
                "migrate",
                &failed_id,
                "--to-version",
                "2",
                "--map",
                "nope",
            ],
        ),
        2,
    );
    assert!(bad.contains("OLD=NEW"), "{bad}");

    // Schedules: create, list, get, next, ticks, disable, enable, delete.
    let sched = json_of(&s.tg(
        "",
        &[
            "schedules",
            "create",
            "ops",
            "--cron",
            "0 9 * * MON-FRI",
            "--timezone",
            "Europe/Paris",
            "-o",
            "json",
        ],
    ));
    let sid = sched["id"].as_str().unwrap().to_owned();
    assert_eq!(sched["timezone"], "Europe/Paris");
    let listed = ok(&s.tg("", &["schedules", "list", "--workflow", "ops"]));
    assert!(
        listed.contains(&sid) && listed.contains("0 9 * * MON-FRI"),
        "{listed}"
    );
    ok(&s.tg("", &["schedules", "get", &sid]));
    let next = json_of(&s.tg(
        "",
        &["schedules", "next", &sid, "--count", "3", "-o", "json"],
    ));
    assert_eq!(next.as_array().unwrap().len(), 3);
    let ticks = ok(&s.tg("", &["schedules", "ticks", &sid]));
    assert_eq!(ticks.trim(), "(none)");
    let off = json_of(&s.tg("", &["schedules", "disable", &sid, "-o", "json"]));
    assert_eq!(off["enabled"], false);
    assert_eq!(off["cron"], "0 9 * * MON-FRI");
    let on = json_of(&s.tg("", &["schedules", "enable", &sid, "-o", "json"]));
    assert_eq!(on["enabled"], true);
    let err = fails(
        &s.tg("", &["schedules", "create", "ops", "--cron", "61 * * * *"]),
        4,
    );
    assert!(err.contains("cron"), "{err}");
    ok(&s.tg("", &["schedules", "delete", &sid]));
    fails(&s.tg("", &["schedules", "get", &sid]), 3);

    // Records, notifications, health.
    fails(&s.tg("", &["record", "order", "nope"]), 3);
    ok(&s.tg("", &["notifications"]));
    let health = ok(&s.tg("", &["health"]));
    assert!(health.contains("ready"), "{health}");

    // Revoke a key: it stops working (refused, exit 4), with a hint to log in.
    let keys = json_of(&s.tg("", &["keys", "list", "-o", "json"]));
    let shop_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "shop")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&s.tg("", &["keys", "revoke", &shop_id]));
    std::thread::sleep(Duration::from_millis(1100)); // the server's key cache (1 s)
    let err = fails(&s.tg(&shop, &["whoami"]), 4);
    assert!(err.contains("tollgate login"), "{err}");

    // logout forgets the profile: no key any more.
    ok(&s.tg("", &["logout"]));
    fails(&s.tg("", &["whoami"]), 4);
}

/// Bad input: a clear message and the documented exit code, never a panic.
#[test]
fn bad_input_has_clear_messages_and_documented_exit_codes() {
    let s = Server::start(None);
    let admin = s.admin.clone();
    let tmp = tempfile::tempdir().unwrap();

    let err = fails(
        &s.tg(
            &admin,
            &["workflows", "apply", "-f", "/nonexistent/flow.json"],
        ),
        1,
    );
    assert!(err.contains("cannot read /nonexistent/flow.json"), "{err}");
    let broken = tmp.path().join("broken.json");
    std::fs::write(&broken, "{\"workflow_id\": \"x\",\n  \"version\": }").unwrap();
    let err = fails(
        &s.tg(
            &admin,
            &["workflows", "apply", "-f", broken.to_str().unwrap()],
        ),
        2,
    );
    assert!(err.contains("is not JSON (line 2"), "{err}");
    // Offline validation lists every problem with its path.
    let invalid = write_json(
        tmp.path(),
        "invalid.json",
        &json!({"workflow_id": "bad", "version": "1",
        "steps": [{"id": "a", "type": "condition", "on_true": "missing"}]}),
    );
    let out = s.tg(&admin, &["workflows", "validate", &invalid]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("error   steps[0]"), "{stdout}");
    // The server's validation: every detail path on its own line, exit 4.
    let err = fails(&s.tg(&admin, &["workflows", "apply", "-f", &invalid]), 4);
    assert!(err.lines().any(|l| l.starts_with("  steps[0]")), "{err}");

    let err = fails(
        &s.tg(&admin, &["events", "send", "x", "--data", "{nope"]),
        2,
    );
    assert!(err.contains("--data is not JSON"), "{err}");
    let err = fails(&s.tg(&admin, &["events", "send", "x", "--data", "[1]"]), 2);
    assert!(err.contains("JSON object"), "{err}");
    let err = fails(&s.tg(&admin, &["executions", "get", "not-an-id"]), 2);
    assert!(err.contains("`not-an-id` is not an execution id"), "{err}");
    let unknown = uuid::Uuid::now_v7().to_string();
    let err = fails(&s.tg(&admin, &["executions", "get", &unknown]), 3);
    assert!(err.contains(&unknown), "{err}");
    fails(&s.tg(&admin, &["approvals", "get", &unknown]), 3);
    fails(&s.tg(&admin, &["workflows", "get", "no_such_flow"]), 3);
    let err = fails(&s.tg("tg_00", &["whoami"]), 4);
    assert!(err.contains("tollgate login"), "{err}");
    let err = fails(&s.tg(&admin, &["--profile", "nope", "whoami"]), 2);
    assert!(err.contains("no profile `nope`"), "{err}");
    // clap's own usage errors: 2.
    let out = s.tg(&admin, &["approvals", "reject", &unknown]);
    assert_eq!(out.status.code(), Some(2));

    // Server down: exit 5, saying where it tried. Port 1 (tcpmux) has no listener on any
    // machine this runs on; a port picked with `free_port` could be taken meanwhile by a
    // server another test starts.
    let port = 1;
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on port 1"
    );
    let out = Command::new(CLI)
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--key",
            &admin,
            "whoami",
        ])
        .env("TOLLGATE_CONFIG_DIR", s.config_dir())
        .output()
        .unwrap();
    let err = fails(&out, 5);
    assert!(
        err.contains(&format!("cannot connect to http://127.0.0.1:{port}")),
        "{err}"
    );
    let out = Command::new(CLI)
        .args(["--url", "ftp://example", "whoami"])
        .env("TOLLGATE_CONFIG_DIR", s.config_dir())
        .output()
        .unwrap();
    fails(&out, 2);
}

/// The read paths on PostgreSQL.
#[test]
fn read_paths_on_postgres() {
    let Some(url) = postgres_url() else {
        eprintln!("skipped: no PostgreSQL (set TOLLGATE_TEST_DATABASE_URL)");
        return;
    };
    let s = Server::start(Some(&url));
    let admin = s.admin.clone();
    let files = examples();
    let mut apply = vec!["workflows", "apply"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    for n in &names {
        apply.extend(["-f", n.as_str()]);
    }
    ok(&s.tg(&admin, &apply));
    let list = json_of(&s.tg(&admin, &["workflows", "list", "-o", "json"]));
    assert_eq!(list.as_array().unwrap().len(), 7);
    ok(&s.tg(&admin, &["workflows", "get", "high_value_order_approval"]));
    let sent = json_of(&s.tg(
        &admin,
        &[
            "events",
            "send",
            "order.checkout.initiated",
            "--id",
            "pg-1",
            "--data",
            r#"{"order": {"total": 25000}, "customer": {"tier": "standard"}}"#,
            "--wait",
            "-o",
            "json",
        ],
    ));
    let exec = sent["started"][0].as_str().unwrap().to_owned();
    let listed = ok(&s.tg(
        &admin,
        &[
            "executions",
            "list",
            "--status",
            "paused",
            "--reason",
            "approval",
        ],
    ));
    assert!(listed.contains(&exec), "{listed}");
    ok(&s.tg(&admin, &["executions", "get", &exec]));
    ok(&s.tg(&admin, &["executions", "steps", &exec]));
    ok(&s.tg(&admin, &["executions", "audit", &exec]));
    let approvals = json_of(&s.tg(
        &admin,
        &["approvals", "list", "--execution", &exec, "-o", "json"],
    ));
    assert_eq!(approvals.as_array().unwrap().len(), 1);
    ok(&s.tg(
        &admin,
        &["approvals", "get", approvals[0]["id"].as_str().unwrap()],
    ));
    ok(&s.tg(&admin, &["whoami"]));
    ok(&s.tg(&admin, &["keys", "list"]));
    ok(&s.tg(&admin, &["health"]));
}

/// A fresh database on the test PostgreSQL, or `None` when there is none.
fn postgres_url() -> Option<String> {
    std::env::var("TOLLGATE_TEST_DATABASE_URL").ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    Some(
        runtime
            .block_on(tollgate_postgres::testing::fresh_database_url("cli"))
            .unwrap(),
    )
}

/// `--help` of every command shows an example.
#[test]
fn every_command_has_an_example_in_its_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        let name = format!("{path} {}", cmd.get_name()).trim().to_owned();
        if cmd.get_name() != "help" {
            let help = cmd
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            if !help.contains("tollgate ") {
                missing.push(name.clone());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, &name, missing);
        }
    }
    let mut missing = Vec::new();
    walk(&tollgate_cli::command(), "", &mut missing);
    assert!(missing.is_empty(), "no example in --help of: {missing:?}");
    tollgate_cli::command().debug_assert();
}

/// Completions for bash, zsh and fish, and man pages, come from the clap definitions.
#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(CLI)
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = ok(&out);
        assert!(
            script.contains("approvals") && script.contains("inbox"),
            "{shell}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&Command::new(CLI)
        .args(["man", dir.path().to_str().unwrap()])
        .output()
        .unwrap());
    assert!(out.contains("man pages written"), "{out}");
    let page = std::fs::read_to_string(dir.path().join("tollgate-approvals-approve.1")).unwrap();
    assert!(page.contains(".TH") && page.contains("quorum"), "{page}");
    assert!(
        page.contains("Example") && page.contains("\\-\\-url"),
        "{page}"
    );
    assert!(dir.path().join("tollgate.1").exists());
}

/// The README's quickstart, as written there, run by bash against a real server (the
/// `cargo` lines and the ones with a `<placeholder>` left out).
#[test]
fn readme_quickstart_runs_as_written() {
    let s = Server::start(None);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let quickstart = readme
        .split("## Quickstart")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    let mut script = String::from("set -euo pipefail\n");
    let mut in_block = false;
    for line in quickstart.lines() {
        if line.starts_with("```") {
            in_block = line == "```sh";
            continue;
        }
        let placeholder = line.contains("<id>") || line.contains("<execution id>");
        if in_block && !line.starts_with("cargo ") && !placeholder {
            script.push_str(line);
            script.push('\n');
        }
    }
    assert!(script.contains("tollgate login"), "{script}");
    // The walk-through runs in a directory that has what the README's paths name.
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(work.path().join("tollgate-data")).unwrap();
    std::fs::write(work.path().join("tollgate-data/admin.key"), &s.admin).unwrap();
    std::os::unix::fs::symlink(root.join("examples"), work.path().join("examples")).unwrap();
    let path = format!(
        "{}:{}",
        Path::new(CLI).parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for run in 1..=2 {
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(work.path())
            .env("PATH", &path)
            .env("TOLLGATE_URL", &s.url)
            .env("TOLLGATE_CONFIG_DIR", work.path().join("config"))
            .env("NO_COLOR", "1")
            .env_remove("TOLLGATE_KEY")
            .env_remove("TOLLGATE_PROFILE")
            .output()
            .unwrap();
        let stdout = ok(&out);
        assert!(
            stdout.contains("completed (allowed)"),
            "run {run}:\n{stdout}"
        );
        assert!(
            stdout.contains("approve (approval)"),
            "run {run}:\n{stdout}"
        );
        let applied = if run == 1 { "created" } else { "unchanged" };
        assert!(
            stdout.contains(&format!("big_orders version 1 {applied}")),
            "run {run}:\n{stdout}"
        );
        // `date +%s` names the second run's keys: let a second pass.
        std::thread::sleep(Duration::from_millis(1100));
    }
}
