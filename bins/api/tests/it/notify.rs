//! Notifications end to end (docs/notifications.md): an approval's messages go out
//! through a real SMTP server (`aiosmtpd` from the Python package index, which `cargo xtask test` installs
//! and points `TOLLGATE_SMTP_PYTHON` at) and local Slack, Teams and webhook receivers;
//! the link in the received email is opened in headless Chromium and decides the request.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::Locator;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::console::{browser, driver_or_skip, shot, sign_in, start_driver};
use crate::{start_at_approval, until_completed, Db, TestApp};

/// A real SMTP server storing what it receives in a Maildir.
struct Smtp {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts aiosmtpd, or `None` (said loudly) when it is not installed and not required.
async fn smtp_or_skip() -> Option<Smtp> {
    let Some(python) = std::env::var_os("TOLLGATE_SMTP_PYTHON").map(PathBuf::from) else {
        assert!(
            std::env::var_os("TOLLGATE_REQUIRE_SMTP").is_none(),
            "TOLLGATE_REQUIRE_SMTP is set but TOLLGATE_SMTP_PYTHON is not"
        );
        eprintln!("\n*** SMTP TESTS SKIPPED: no SMTP server (run `cargo xtask test`, which installs aiosmtpd) ***\n");
        return None;
    };
    let port = free_port();
    let maildir = tempfile::tempdir().unwrap();
    let mut child = Command::new(python)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir.path().join("mail"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(Smtp {
                child,
                port,
                maildir,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the SMTP server did not start on port {port}");
}

/// An execution's notifications (the list's body) once `done` holds for its items, or
/// as they are after ten seconds (the caller's assertions then say what is missing).
async fn notifications_until(app: &TestApp, exec: &str, done: impl Fn(&[Value]) -> bool) -> Value {
    let mut listed = Value::Null;
    for _ in 0..100 {
        let (s, body) = app
            .get(
                &format!("/api/v1/executions/{exec}/notifications"),
                &app.admin.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        listed = body;
        if listed["items"].as_array().is_some_and(|i| done(i)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    listed
}

/// The messages in the Maildir, as received (headers and body).
fn mailbox(dir: &Path) -> Vec<String> {
    let mut mails = Vec::new();
    for sub in ["new", "cur"] {
        if let Ok(entries) = std::fs::read_dir(dir.join("mail").join(sub)) {
            for entry in entries.flatten() {
                mails.push(std::fs::read_to_string(entry.path()).unwrap());
            }
        }
    }
    mails
}

/// Undoes quoted-printable soft line breaks and `=3D`, so a long link reads whole.
fn unfold(mail: &str) -> String {
    mail.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=")
}

fn workflow() -> Value {
    json!({
        "workflow_id": "orders", "version": "1",
        "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "approve", "type": "approval",
             "approval": {"approvers": {"role": "sales_manager"}, "timeout": "1h", "on_timeout": "reject",
                          "reason": "order {{order_id}} is over the limit",
                          "entity": {"type": "order", "id": "{{order_id}}"},
                          "data": {"total": "{{total}}"},
                          "notify": [
                              {"channel": "email", "to": "{{manager_email}}"},
                              {"channel": "slack"},
                              {"channel": "teams"},
                              {"channel": "webhook"}
                          ]},
             "on_approve": "ok", "on_reject": "no"},
            {"id": "ok", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}
        ]
    })
}

async fn receiver() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_reaches_email_slack_teams_and_a_webhook_and_the_emailed_link_decides() {
    let Some(smtp) = smtp_or_skip().await else {
        return;
    };
    let (slack, teams, hook) = (receiver().await, receiver().await, receiver().await);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        serde_json::to_vec(&json!({"channels": {
            "email": {"smtp_url": format!("smtp://127.0.0.1:{}", smtp.port),
                      "from": "Tollgate <approvals@example.com>"},
            "slack": {"webhook_url": slack.uri()},
            "teams": {"webhook_url": teams.uri()},
            "webhook": {"webhook_url": hook.uri(), "signing_secret": "whsec-e2e"}
        }}))
        .unwrap(),
    )
    .unwrap();
    let app = TestApp::spawn_with(Db::Sqlite, |args| {
        args.listen = format!("127.0.0.1:{port}").parse().unwrap();
        args.config = Some(config.path().to_owned());
        args.links.public_url = Some(base.clone());
    })
    .await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(workflow()).await;
    let (exec, approval) = start_at_approval(
        &app,
        &shop,
        "order.created",
        json!({"order_id": "o-77", "total": 25000, "manager_email": "mia@example.com"}),
    )
    .await;

    // All four are sent by the embedded worker.
    let listed = notifications_until(&app, &exec, |i| {
        i.len() == 4 && i.iter().all(|n| n["status"] == "sent")
    })
    .await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{listed}");
    for n in items {
        assert_eq!(
            (&n["status"], &n["kind"], &n["attempts"], &n["approval_id"]),
            (
                &json!("sent"),
                &json!("approval"),
                &json!(1),
                &json!(approval)
            ),
            "{n}"
        );
    }

    // The email: both parts, the request's facts, a link, its id as Message-ID.
    let mails = mailbox(smtp.maildir.path());
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = unfold(&mails[0]);
    let email_id = items.iter().find(|n| n["channel"] == "email").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(mail.contains("To: mia@example.com"), "{mail}");
    assert!(
        mail.contains("Subject: Approval needed: order o-77"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!("Message-ID: <{email_id}@tollgate>")),
        "{mail}"
    );
    assert!(
        mail.contains("text/plain") && mail.contains("text/html"),
        "{mail}"
    );
    assert!(mail.contains("order o-77 is over the limit"), "{mail}");
    let at = mail.find(&format!("{base}/d/")).expect("a decision link");
    let link: String = mail[at..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<')
        .collect();

    // Slack: a button with the same kind of link; Teams: an Adaptive Card.
    let slack_body: Value =
        serde_json::from_slice(&slack.received_requests().await.unwrap()[0].body).unwrap();
    let button = &slack_body["blocks"][1]["elements"][0];
    assert_eq!(button["text"]["text"], "Review and decide");
    assert!(button["url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{base}/d/")));
    let teams_body: Value =
        serde_json::from_slice(&teams.received_requests().await.unwrap()[0].body).unwrap();
    let card = &teams_body["attachments"][0];
    assert_eq!(
        card["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(card["content"]["actions"][0]["type"], "Action.OpenUrl");
    // The webhook: signed, keyed by the notification id.
    let posted = &hook.received_requests().await.unwrap()[0];
    let signature = posted
        .headers
        .get(tollgate_engine::SIGNATURE_HEADER)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(tollgate_engine::verify_signature(
        "whsec-e2e",
        signature,
        &posted.body,
        chrono::Utc::now().timestamp(),
        300
    ));
    let webhook_id = items.iter().find(|n| n["channel"] == "webhook").unwrap()["id"].clone();
    assert_eq!(
        posted
            .headers
            .get("idempotency-key")
            .unwrap()
            .to_str()
            .unwrap(),
        webhook_id.as_str().unwrap()
    );
    let hook_body: Value = serde_json::from_slice(&posted.body).unwrap();
    assert_eq!(hook_body["kind"], "approval");
    assert!(hook_body["link"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{base}/d/")));

    // A prefetch (a mail scanner) decides nothing.
    let scanned = reqwest::get(&link).await.unwrap();
    assert_eq!(scanned.status(), StatusCode::OK);
    let (_, a) = app
        .get(&format!("/api/v1/approvals/{approval}"), &app.admin.clone())
        .await;
    assert_eq!(a["status"], "pending");

    // The emailed link, in a browser: the approver approves, the execution completes.
    if let Some(driver_path) = driver_or_skip() {
        let driver = start_driver(&driver_path).await;
        let c = browser(&driver).await;
        c.goto(&link).await.unwrap();
        shot(&c, "emailed-link").await;
        let source = c.source().await.unwrap();
        assert!(
            source.contains("o-77") && source.contains("mia@example.com"),
            "{source}"
        );
        c.find(Locator::Id("approve"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let outcome = c
            .wait()
            .for_element(Locator::Id("outcome"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(outcome.contains("Approved"), "{outcome}");
        c.close().await.unwrap();
    } else {
        let html = reqwest::get(&link).await.unwrap().text().await.unwrap();
        let at = html.find("name=\"nonce\" value=\"").unwrap() + 20;
        let nonce = html[at..].split('"').next().unwrap().to_owned();
        let res = reqwest::Client::new()
            .post(&link)
            .form(&[
                ("nonce", nonce.as_str()),
                ("decision", "approve"),
                ("reason", ""),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    assert_eq!(until_completed(&app, &exec).await["result"], "allowed");
    let (_, a) = app
        .get(&format!("/api/v1/approvals/{approval}"), &app.admin.clone())
        .await;
    assert_eq!(
        (
            &a["decisions"][0]["decided_by"],
            &a["decisions"][0]["channel"]
        ),
        (&json!("mia@example.com"), &json!("link"))
    );
    // Reused: the link decides nothing more.
    let again = reqwest::get(&link).await.unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let (_, ladder) = app
        .call(
            Method::GET,
            &format!("/api/v1/approvals/{approval}/ladder"),
            Some(&app.admin.clone()),
            None,
        )
        .await;
    assert_eq!(ladder["items"], json!([]));
    app.stop().await;
}

/// A message whose SMTP server is down is retried, visibly: status `queued`, one attempt,
/// the error and the next attempt in the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_smtp_server_leaves_the_email_queued_with_its_error() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        serde_json::to_vec(&json!({"channels": {
            "email": {"smtp_url": format!("smtp://127.0.0.1:{}", free_port()),
                      "from": "approvals@example.com"}
        }}))
        .unwrap(),
    )
    .unwrap();
    let app = TestApp::spawn_with(Db::Sqlite, |args| {
        args.config = Some(config.path().to_owned());
    })
    .await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(workflow()).await;
    let (exec, _) = start_at_approval(
        &app,
        &shop,
        "order.created",
        json!({"order_id": "o-78", "total": 25000, "manager_email": "mia@example.com"}),
    )
    .await;
    let tried = notifications_until(&app, &exec, |i| {
        i.len() == 4 && i.iter().all(|n| n["attempts"] == 1)
    })
    .await;
    let email = tried["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["channel"] == "email")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(
        (&email["status"], &email["attempts"]),
        (&json!("queued"), &json!(1)),
        "{email}"
    );
    assert!(
        email["last_error"].as_str().unwrap().contains("SMTP"),
        "{email}"
    );
    assert!(email["next_attempt_at"].is_string(), "{email}");
    // The channels the config left out fail as "not configured", retried too.
    let (_, body) = app
        .get(
            &format!("/api/v1/executions/{exec}/notifications"),
            &app.admin.clone(),
        )
        .await;
    let slack = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["channel"] == "slack")
        .cloned()
        .unwrap();
    assert!(
        slack["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no `slack` channel"),
        "{slack}"
    );
    app.stop().await;
}

/// A ladder on the real clock: a reminder after 1 s to the default Slack webhook, an
/// escalation after 2 s to the `directors` room's own webhook. An operator then sees
/// who was told in the console's Notifications table, and what the ladder did on the
/// approval page; the added director decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ladder_reminds_escalates_to_its_own_room_and_shows_in_the_console() {
    let (room, directors) = (receiver().await, receiver().await);
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        serde_json::to_vec(&json!({"channels": {
            "slack": {"webhook_url": room.uri(), "webhooks": {"sales": room.uri(), "directors": directors.uri()}}
        }}))
        .unwrap(),
    )
    .unwrap();
    let app = TestApp::spawn_with(Db::Sqlite, |args| {
        args.config = Some(config.path().to_owned());
    })
    .await;
    let shop = app.key("shop", &["service"]).await;
    let dana = app.key("dana", &["director"]).await;
    app.workflow(json!({
        "workflow_id": "orders", "version": "1",
        "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "approve", "type": "approval",
             "approval": {"approvers": {"role": "sales_manager"}, "timeout": "1h", "on_timeout": "reject",
                          "entity": {"type": "order", "id": "{{order_id}}"},
                          "notify": [{"channel": "slack", "to": "sales"}],
                          "reminders": ["1s"],
                          "escalate": [{"after": "2s", "approvers": {"role": "director"},
                                        "notify": [{"channel": "slack", "to": "directors"},
                                                   {"channel": "slack", "to": "board"}]}]},
             "on_approve": "ok", "on_reject": "no"},
            {"id": "ok", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}
        ]
    }))
    .await;
    let (exec, approval) = start_at_approval(
        &app,
        &shop,
        "order.created",
        json!({"order_id": "o-90", "total": 25000}),
    )
    .await;
    let listed = notifications_until(&app, &exec, |i| {
        i.len() == 4 && i.iter().all(|n| n["status"] != "queued")
    })
    .await;
    let outcome = |kind: &str, to: &str| {
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == kind && n["recipients"][0] == to)
            .map(|n| n["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        outcome("approval", "sales").as_deref(),
        Some("sent"),
        "{listed}"
    );
    assert_eq!(
        outcome("reminder", "sales").as_deref(),
        Some("sent"),
        "{listed}"
    );
    assert_eq!(
        outcome("escalation", "directors").as_deref(),
        Some("sent"),
        "{listed}"
    );
    // A room nobody configured is refused at once, not posted to the default room.
    assert_eq!(
        outcome("escalation", "board").as_deref(),
        Some("failed"),
        "{listed}"
    );
    assert_eq!(room.received_requests().await.unwrap().len(), 2);
    let escalated: Value =
        serde_json::from_slice(&directors.received_requests().await.unwrap()[0].body).unwrap();
    assert!(
        escalated["text"]
            .as_str()
            .unwrap()
            .starts_with("Escalated:"),
        "{escalated}"
    );

    if let Some(driver_path) = driver_or_skip() {
        let driver = start_driver(&driver_path).await;
        let c = browser(&driver).await;
        sign_in(&c, &app, &app.admin.clone()).await;
        c.goto(&app.url(&format!("/executions/{exec}")))
            .await
            .unwrap();
        let rows = c
            .find_all(Locator::Css("#notifications tr.notification"))
            .await
            .unwrap();
        let mut texts = Vec::new();
        for row in &rows {
            texts.push(row.text().await.unwrap());
        }
        shot(&c, "execution-notifications").await;
        assert_eq!(texts.len(), 4, "{texts:?}");
        assert!(
            texts.iter().any(|t| t.contains("escalation")
                && t.contains("board")
                && t.contains("failed")
                && t.contains("no slack webhook named `board`")),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t.contains("reminder") && t.contains("sales") && t.contains("sent")),
            "{texts:?}"
        );
        c.goto(&app.url(&format!("/approvals/{approval}")))
            .await
            .unwrap();
        let ladder = c
            .find(Locator::Id("ladder"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        shot(&c, "approval-ladder").await;
        assert!(
            ladder.contains("reminded 1×") && ladder.contains("escalated to director"),
            "{ladder}"
        );
        c.close().await.unwrap();
    }
    // The escalation added the director, who decides.
    let (s, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/approvals/{approval}/approve"),
            Some(&dana),
            Some(json!({"reason": "covering for sales"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(until_completed(&app, &exec).await["result"], "allowed");
    app.stop().await;
}
