//! Tollgate as an MCP server, driven by the official MCP Python SDK (`agent.py` beside
//! this file) over Streamable HTTP (`/mcp` on `tollgate-api`) and over stdio
//! (`tollgate mcp`), as an agent's runtime would.
//!
//! `cargo xtask test` installs the SDK from the Python package index and sets `TOLLGATE_MCP_PYTHON` and
//! `TOLLGATE_REQUIRE_MCP_SDK=1`; without them (a bare `cargo test` on a machine without
//! the SDK) these tests say loudly that they are skipped.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::{ok, slow_receiver, write_json, Server, CLI};

/// The SDK's interpreter, or `None` (skip) when it is not set up.
fn python() -> Option<PathBuf> {
    match std::env::var_os("TOLLGATE_MCP_PYTHON") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var_os("TOLLGATE_REQUIRE_MCP_SDK").is_none(),
                "TOLLGATE_REQUIRE_MCP_SDK is set but TOLLGATE_MCP_PYTHON is not"
            );
            eprintln!(
                "MCP SDK TESTS SKIPPED: run them with `cargo xtask test` (it installs the SDK)"
            );
            None
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/agent.py")
}

/// An MCP client session: HTTP with a key, or stdio through `tollgate mcp`.
struct Agent<'a> {
    python: PathBuf,
    server: &'a Server,
    key: String,
    stdio: bool,
}

impl<'a> Agent<'a> {
    /// A client of `/mcp` on `server` with `key` (empty: none).
    fn http(python: &std::path::Path, server: &'a Server, key: impl Into<String>) -> Self {
        Self {
            python: python.to_owned(),
            server,
            key: key.into(),
            stdio: false,
        }
    }

    /// A client that starts `tollgate mcp` with `key`.
    fn stdio(python: &std::path::Path, server: &'a Server, key: impl Into<String>) -> Self {
        Self {
            python: python.to_owned(),
            server,
            key: key.into(),
            stdio: true,
        }
    }

    fn command(&self, action: &[&str]) -> Command {
        let mut cmd = Command::new(&self.python);
        cmd.arg(script());
        if self.stdio {
            cmd.args(["stdio", CLI, "mcp", "--"]);
        } else {
            cmd.args(["http", &format!("{}/mcp", self.server.url), &self.key]);
        }
        cmd.args(action)
            .env("TOLLGATE_URL", &self.server.url)
            .env("TOLLGATE_CONFIG_DIR", self.server.config_dir())
            .env("TOLLGATE_KEY", &self.key)
            .env_remove("TOLLGATE_PROFILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(&self, action: &[&str]) -> Output {
        self.command(action).output().unwrap()
    }

    /// Runs `action` and reads its one JSON line.
    #[track_caller]
    fn json(&self, action: &[&str]) -> Value {
        let out = self.run(action);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "agent.py {action:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    fn tools(&self) -> Vec<Value> {
        self.json(&["list-tools"])["tools"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// Calls `tool`; returns (`is_error`, structured content).
    #[track_caller]
    fn call(&self, tool: &str, args: &Value) -> (bool, Value) {
        let out = self.json(&["call", tool, &args.to_string()]);
        (
            out["is_error"].as_bool().unwrap(),
            out["structured"].clone(),
        )
    }

    /// Calls `tool` and expects success.
    #[track_caller]
    fn ok(&self, tool: &str, args: &Value) -> Value {
        let (error, out) = self.call(tool, args);
        assert!(!error, "{tool} failed: {out}");
        out
    }

    /// Calls `tool` and expects a tool error; returns its `error` object.
    #[track_caller]
    fn refused(&self, tool: &str, args: &Value) -> Value {
        let (error, out) = self.call(tool, args);
        assert!(error, "{tool} should have failed: {out}");
        out["error"].clone()
    }

    /// Starts `call tool args` in the background (for a wait).
    fn spawn(&self, tool: &str, args: &Value) -> Child {
        self.command(&["call", tool, &args.to_string()])
            .spawn()
            .unwrap()
    }
}

fn finish(child: Child) -> Value {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(!v["is_error"].as_bool().unwrap(), "{v}");
    v
}

fn create_key(s: &Server, name: &str, role: &str) -> String {
    let out = ok(&s.tg(&s.admin, &["keys", "create", name, "--role", role]));
    out.lines().last().unwrap().trim().to_owned()
}

const READ_TOOLS: [&str; 4] = [
    "get_approval",
    "get_execution",
    "list_workflows",
    "wait_for_approval",
];

#[test]
fn an_agent_gets_durable_policy_checked_approvals_over_http() {
    let Some(python) = python() else { return };
    let s = Server::start(None);
    let agent_key = create_key(&s, "refund-bot", "operator");
    let manager = create_key(&s, "maria", "finance");
    let viewer_key = create_key(&s, "auditor", "viewer");
    let agent = Agent::http(&python, &s, agent_key.clone());

    // Every tool is described for a model: a description, input and output schemas.
    let tools = agent.tools();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "get_approval",
            "get_execution",
            "list_workflows",
            "request_approval",
            "send_event",
            "start_workflow",
            "wait_for_approval"
        ]
    );
    for t in &tools {
        assert!(t["description"].as_str().unwrap().len() > 60, "{t}");
        assert_eq!(t["input_schema"]["type"], "object", "{t}");
        assert_eq!(t["output_schema"]["type"], "object", "{t}");
    }
    let request = tools
        .iter()
        .find(|t| t["name"] == "request_approval")
        .unwrap();
    assert_eq!(request["input_schema"]["required"], json!(["title"]));

    // A viewer's key sees the read tools only, and is refused the others if it calls them.
    let viewer = Agent::http(&python, &s, viewer_key);
    let mut seen: Vec<String> = viewer
        .tools()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, READ_TOOLS);
    let refusal = viewer.refused(
        "request_approval",
        &json!({"title": "Refund", "approvers": {"roles": ["finance"]}}),
    );
    assert_eq!(refusal["code"], "forbidden", "{refusal}");
    assert!(
        refusal["message"].as_str().unwrap().contains("auditor"),
        "{refusal}"
    );

    // Request → a person decides through the API (with an edited amount) → the
    // agent's wait returns the decision.
    let asked = agent.ok(
        "request_approval",
        &json!({"title": "Refund $740 to order 1042", "summary": "Damaged on arrival; photos checked.",
                "data": {"order_id": "1042", "amount": 740},
                "approvers": {"roles": ["finance"]}, "timeout": "1h"}),
    );
    assert_eq!(asked["status"], "pending", "{asked}");
    assert_eq!(asked["may_proceed"], false);
    assert_eq!(asked["requested_by"], "refund-bot");
    assert_eq!(asked["approver_roles"], json!(["finance"]));
    assert!(asked["expires_at"].is_string(), "{asked}");
    let approval_id = asked["approval_id"].as_str().unwrap().to_owned();
    assert_eq!(
        asked["console_url"],
        format!("{}/approvals/{approval_id}", s.url)
    );
    // The approver sees what the agent wants to do.
    let shown = super::json_of(&s.tg(&manager, &["approvals", "get", &approval_id, "-o", "json"]));
    assert_eq!(
        shown["data"]["arguments"],
        json!({"order_id": "1042", "amount": 740})
    );
    assert_eq!(shown["data"]["channel"], "mcp");
    assert_eq!(shown["reason"], "Refund $740 to order 1042");

    let waiting = agent.spawn(
        "wait_for_approval",
        &json!({"approval_id": approval_id, "timeout_seconds": 60}),
    );
    std::thread::sleep(Duration::from_millis(1500));
    // The agent's own key can never decide its request (it is not an approver, and
    // self-approval is off) — through the API as through anything else.
    let own = s.tg(&agent_key, &["approvals", "approve", &approval_id]);
    assert_eq!(own.status.code(), Some(4), "{own:?}");
    ok(&s.tg(
        &manager,
        &[
            "approvals",
            "approve",
            &approval_id,
            "--reason",
            "ok up to 500",
            "--data",
            r#"{"amount": 500}"#,
        ],
    ));
    // Answered as decided, not as still pending after its 60 s.
    let decided = finish(waiting);
    let out = &decided["structured"];
    assert_eq!(out["status"], "approved", "{out}");
    assert_eq!(out["may_proceed"], true);
    assert_eq!(out["still_pending"], false);
    assert_eq!(out["decided_data"]["amount"], 500);
    assert_eq!(out["decisions"][0]["decided_by"], "maria");
    assert_eq!(out["decisions"][0]["reason"], "ok up to 500");

    // The execution records the channel and the requester.
    let execution_id = out["execution_id"].as_str().unwrap();
    let execution = agent.ok("get_execution", &json!({"execution_id": execution_id}));
    assert_eq!(execution["status"], "completed", "{execution}");
    assert_eq!(execution["result"], "allowed");
    assert_eq!(execution["context"]["trigger"]["source"], "mcp");
    let full = super::json_of(&s.tg(&s.admin, &["executions", "get", execution_id, "-o", "json"]));
    assert_eq!(full["requested_by"], "refund-bot");

    // Rejection.
    let asked = agent.ok(
        "request_approval",
        &json!({"title": "Delete customer 77", "approvers": {"roles": ["finance"]}}),
    );
    let id = asked["approval_id"].as_str().unwrap();
    ok(&s.tg(
        &manager,
        &["approvals", "reject", id, "--reason", "legal hold"],
    ));
    let out = agent.ok("get_approval", &json!({"approval_id": id}));
    assert_eq!(out["status"], "rejected");
    assert_eq!(out["may_proceed"], false);
    assert_eq!(out["decisions"][0]["reason"], "legal hold");
    assert!(
        out["next"].as_str().unwrap().contains("do not perform"),
        "{out}"
    );

    // Deadlines route as the policy says: expiry rejects by default, or approves.
    for (on_timeout, may) in [("reject", false), ("approve", true)] {
        let asked = agent.ok(
            "request_approval",
            &json!({"title": "Restart the cache", "approvers": {"users": ["maria"]},
                    "timeout": "1s", "on_timeout": on_timeout}),
        );
        let out = agent.ok(
            "wait_for_approval",
            &json!({"approval_id": asked["approval_id"], "timeout_seconds": 30}),
        );
        assert_eq!(out["status"], "expired", "{out}");
        assert_eq!(out["may_proceed"], may, "{on_timeout}: {out}");
        assert_eq!(out["still_pending"], false);
    }

    // A wait that ends undecided says so, with progress notes on the way.
    let asked = agent.ok(
        "request_approval",
        &json!({"title": "Email 3,000 customers", "approvers": {"roles": ["finance"]}, "required": 2}),
    );
    assert_eq!(asked["required"], 2);
    let waited = agent.json(&[
        "call",
        "wait_for_approval",
        &json!({"approval_id": asked["approval_id"], "timeout_seconds": 6}).to_string(),
    ]);
    assert_eq!(waited["structured"]["still_pending"], true, "{waited}");
    assert_eq!(waited["structured"]["status"], "pending");
    assert!(waited["structured"]["waited_seconds"].as_f64().unwrap() >= 6.0);
    assert!(
        !waited["progress"].as_array().unwrap().is_empty(),
        "{waited}"
    );

    // Input errors are tool errors naming the field; the session goes on.
    for (args, field) in [
        (json!({"title": "x"}), "approvers"),
        (
            json!({"title": " ", "approvers": {"roles": ["finance"]}}),
            "title",
        ),
        (
            json!({"title": "x", "approvers": {"roles": ["finance"]}, "timeout": "soon"}),
            "timeout",
        ),
        (
            json!({"title": "x", "approvers": {"roles": ["finance"]}, "required": 0}),
            "required",
        ),
        (
            json!({"title": "x", "approvers": {"roles": ["finance"]}, "required": "all"}),
            "required",
        ),
        (
            json!({"title": "x", "workflow": "refunds", "approvers": {"roles": ["finance"]}}),
            "approvers",
        ),
        (json!({"title": "x", "workflow": "nope"}), "workflow"),
    ] {
        let error = agent.refused("request_approval", &args);
        assert_eq!(error["field"], field, "{args}: {error}");
        assert_eq!(error["code"], "invalid_input", "{error}");
    }
    let error = agent.refused("get_approval", &json!({"approval_id": "nope"}));
    assert_eq!(error["field"], "approval_id", "{error}");
    let error = agent.refused(
        "get_approval",
        &json!({"approval_id": uuid::Uuid::new_v4().to_string()}),
    );
    assert_eq!(error["code"], "not_found", "{error}");
    let error = agent.refused("request_approval", &json!({"summary": "no title"}));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("missing field `title`"),
        "{error}"
    );
    let error = agent.refused(
        "request_approval",
        &json!({"title": "x", "approvers": {"roles": ["finance", 7]}}),
    );
    assert_eq!(error["field"], "approvers.roles[1]", "{error}");

    // A named workflow sets its own policy and gets {title, summary, data}.
    let refunds = write_json(
        s.dir.path(),
        "refunds.json",
        &json!({"workflow_id": "refunds", "version": "1", "trigger": {"type": "manual"},
                "steps": [
                    {"id": "check", "type": "approval",
                     "approval": {"approvers": {"role": "finance"}, "data": {"amount": "{{data.amount}}"}},
                     "on_approve": "pay", "on_reject": "stop"},
                    {"id": "pay", "type": "action", "action": "allow"},
                    {"id": "stop", "type": "action", "action": "block"}]}),
    );
    ok(&s.tg(&s.admin, &["workflows", "apply", "-f", &refunds]));
    let listed = agent.ok("list_workflows", &json!({}));
    let refunds = listed["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workflow_id"] == "refunds")
        .unwrap()
        .clone();
    assert_eq!(refunds["has_approval"], true);
    assert_eq!(refunds["trigger"], "manual");
    let asked = agent.ok(
        "request_approval",
        &json!({"title": "Refund 99", "workflow": "refunds", "data": {"amount": 99}}),
    );
    let shown = super::json_of(&s.tg(
        &manager,
        &[
            "approvals",
            "get",
            asked["approval_id"].as_str().unwrap(),
            "-o",
            "json",
        ],
    ));
    assert_eq!(shown["data"]["amount"], 99);
    assert_eq!(shown["step_id"], "check");

    // An operator switches a policy off by disabling its workflow.
    let policy = json!({"title": "Pay invoice 9", "approvers": {"users": ["zed"]}});
    agent.ok("request_approval", &policy);
    let listed = agent.ok("list_workflows", &json!({}));
    let built_in = listed["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| {
            w["workflow_id"]
                .as_str()
                .unwrap()
                .starts_with("mcp-approval-")
                && w["name"].as_str().unwrap().contains("zed")
        })
        .unwrap()
        .clone();
    ok(&s.tg(
        &s.admin,
        &["workflows", "disable", built_in["id"].as_str().unwrap()],
    ));
    let error = agent.refused("request_approval", &policy);
    assert_eq!(error["code"], "disabled", "{error}");

    // start_workflow and send_event.
    let started = agent.ok(
        "start_workflow",
        &json!({"workflow": "refunds", "input": {"data": {"amount": 5}}}),
    );
    assert_eq!(started["status"], "paused", "{started}");
    assert!(started["approval_id"].is_string());
    let sent = agent.ok(
        "send_event",
        &json!({"type": "nobody.listens", "data": {"x": 1}, "event_id": "evt-1"}),
    );
    assert_eq!(sent["matched_workflows"], 0);
    assert_eq!(sent["idempotent"], true);
    let event = super::json_of(&s.tg(
        &s.admin,
        &["events", "get", sent["id"].as_str().unwrap(), "-o", "json"],
    ));
    assert_eq!(event["source"], "mcp");

    // A missing or revoked key is refused before any tool runs: the client cannot even
    // list the tools.
    let nobody = Agent::http(&python, &s, String::new());
    let out = nobody.run(&["list-tools"]);
    assert!(!out.status.success(), "{out:?}");
    let (status, body) = post_mcp(&s, None);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"unauthorized\""), "{body}");
    let revoked = create_key(&s, "old-bot", "operator");
    let keys = super::json_of(&s.tg(&s.admin, &["keys", "list", "-o", "json"]));
    let old = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "old-bot")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(&s.tg(&s.admin, &["keys", "revoke", &old]));
    let gone = Agent::http(&python, &s, revoked);
    let out = gone.run(&["list-tools"]);
    assert!(!out.status.success(), "{out:?}");
    let (status, body) = post_mcp(&s, Some(&gone.key));
    assert_eq!(status, 401, "{body}");
    // The same request with a valid key is served.
    let (status, body) = post_mcp(&s, Some(&agent_key));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("request_approval"), "{body}");
}

/// A raw `tools/list` POST to `/mcp` (protocol 2025-06-18, stateless): status and body.
fn post_mcp(s: &Server, key: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = s.url.trim_start_matches("http://");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}).to_string();
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\n\
         {auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

#[test]
fn an_agent_gets_approvals_over_stdio_through_the_cli() {
    let Some(python) = python() else { return };
    let s = Server::start(None);
    let agent_key = create_key(&s, "ops-bot", "operator");
    let manager = create_key(&s, "lee", "sre");
    let service_key = create_key(&s, "billing", "service");
    let agent = Agent::stdio(&python, &s, agent_key);
    assert_eq!(agent.tools().len(), 7);
    let service = Agent::stdio(&python, &s, service_key);
    let mut seen: Vec<String> = service
        .tools()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    let mut expected: Vec<&str> = READ_TOOLS.to_vec();
    expected.push("send_event");
    expected.sort_unstable();
    assert_eq!(seen, expected);

    let asked = agent.ok(
        "request_approval",
        &json!({"title": "Scale the database to 16 cores", "data": {"cores": 16},
                "approvers": {"roles": ["sre"]}}),
    );
    let id = asked["approval_id"].as_str().unwrap().to_owned();
    // Links point at the server the CLI talks to.
    assert!(asked["console_url"].as_str().unwrap().starts_with(&s.url));
    let waiting = agent.spawn(
        "wait_for_approval",
        &json!({"approval_id": id, "timeout_seconds": 60}),
    );
    std::thread::sleep(Duration::from_millis(1500));
    ok(&s.tg(&manager, &["approvals", "approve", &id]));
    let out = finish(waiting);
    assert_eq!(out["structured"]["status"], "approved", "{out}");
    assert_eq!(out["structured"]["may_proceed"], true);

    // Quorum: two distinct approvers; one is not enough.
    let second = create_key(&s, "kim", "sre");
    let asked = agent.ok(
        "request_approval",
        &json!({"title": "Fail over to the other region", "approvers": {"roles": ["sre"]}, "required": 2}),
    );
    let id = asked["approval_id"].as_str().unwrap().to_owned();
    ok(&s.tg(&manager, &["approvals", "approve", &id]));
    let out = agent.ok("get_approval", &json!({"approval_id": id}));
    assert_eq!(out["status"], "pending", "{out}");
    assert_eq!(out["may_proceed"], false);
    assert_eq!(out["decisions"].as_array().unwrap().len(), 1);
    ok(&s.tg(&second, &["approvals", "approve", &id]));
    let out = agent.ok("get_approval", &json!({"approval_id": id}));
    assert_eq!(out["status"], "approved", "{out}");

    let asked = agent.ok(
        "request_approval",
        &json!({"title": "Drop table sessions", "approvers": {"roles": ["sre"]}}),
    );
    let id = asked["approval_id"].as_str().unwrap();
    ok(&s.tg(&manager, &["approvals", "reject", id, "--reason", "no"]));
    let out = agent.ok("get_approval", &json!({"approval_id": id}));
    assert_eq!(out["status"], "rejected");

    // A key the server does not know stops `tollgate mcp` before it serves anything.
    let stranger = Agent::stdio(&python, &s, super::new_key());
    let out = stranger.run(&["list-tools"]);
    assert!(!out.status.success(), "{out:?}");
    let cli = Command::new(CLI)
        .arg("mcp")
        .env("TOLLGATE_URL", &s.url)
        .env("TOLLGATE_KEY", super::new_key())
        .env("TOLLGATE_CONFIG_DIR", s.config_dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(4), "{cli:?}");
    assert!(cli.stdout.is_empty(), "nothing but MCP on stdout: {cli:?}");
}

#[test]
fn a_request_waits_for_slow_steps_before_its_gate() {
    let Some(python) = python() else { return };
    // The server answers `?wait=true` after 1 s; the steps before the gate take 3 s.
    let s = Server::start_with(None, &["--wait-timeout", "1s"]);
    let agent_key = create_key(&s, "agent", "operator");
    let hook = slow_receiver(Duration::from_secs(3));
    let slow = write_json(
        s.dir.path(),
        "slow.json",
        &json!({"workflow_id": "slow_gate", "version": "1", "trigger": {"type": "manual"},
                "steps": [
                    {"id": "reserve", "type": "execute", "next": "check",
                     "execute": [{"type": "webhook", "url": hook, "timeout": "30s"}]},
                    {"id": "check", "type": "approval", "approval": {"approvers": {"role": "ops"}},
                     "on_approve": "done", "on_reject": "done"},
                    {"id": "done", "type": "action", "action": "allow"}]}),
    );
    ok(&s.tg(&s.admin, &["workflows", "apply", "-f", &slow]));
    // Over HTTP the tool keeps waiting past the server's bound and returns the approval.
    let http = Agent::http(&python, &s, agent_key.clone());
    let asked = http.ok(
        "request_approval",
        &json!({"title": "Reserve stock", "workflow": "slow_gate"}),
    );
    assert_eq!(asked["status"], "pending", "{asked}");
    // With a wait cap shorter than the steps, it says the execution is still on its way.
    let mut cmd = Command::new(&python);
    cmd.arg(script())
        .args(["stdio", CLI, "mcp", "--wait-limit", "1s", "--"])
        .args([
            "call",
            "request_approval",
            &json!({"title": "Reserve stock", "workflow": "slow_gate"}).to_string(),
        ])
        .env("TOLLGATE_URL", &s.url)
        .env("TOLLGATE_CONFIG_DIR", s.config_dir())
        .env("TOLLGATE_KEY", &agent_key)
        .env_remove("TOLLGATE_PROFILE");
    let out = cmd.output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(v["is_error"], true, "{v}");
    assert_eq!(v["structured"]["error"]["code"], "still_running", "{v}");
    let message = v["structured"]["error"]["message"].as_str().unwrap();
    assert!(message.contains("get_execution"), "{message}");
}
