//! The web console in a real browser (Debian's chromium through chromedriver, headless).
//!
//! `cargo xtask test` installs chromium and chromium-driver when missing and sets
//! `TOLLGATE_REQUIRE_BROWSER=1`; then a missing driver fails the test. Without it (a bare
//! `cargo test` on a machine without chromium) the test says loudly that it is skipped.
//! Screenshots of every page land in `target/tmp/console/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{order_workflow, start_at_approval, until_completed, Db, TestApp};

pub(crate) struct Driver {
    child: Child,
    url: String,
    /// The browser's profile directory: also how its processes are found and ended if
    /// the test fails before closing the session.
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.profile.path())
            .status();
    }
}

fn chromedriver() -> Option<PathBuf> {
    std::env::var_os("TOLLGATE_CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/usr/bin/chromedriver")))
        .filter(|p| p.exists())
}

/// The chromedriver to run, or `None` to skip the test, said loudly (a failure instead
/// with `TOLLGATE_REQUIRE_BROWSER`, as `cargo xtask test` sets).
pub(crate) fn driver_or_skip() -> Option<PathBuf> {
    let found = chromedriver();
    if found.is_none() {
        assert!(
            std::env::var_os("TOLLGATE_REQUIRE_BROWSER").is_none(),
            "chromedriver is missing but TOLLGATE_REQUIRE_BROWSER is set"
        );
        eprintln!("\n*** BROWSER TESTS SKIPPED: no chromedriver (install chromium and chromium-driver, or run `cargo xtask test`) ***\n");
    }
    found
}

pub(crate) async fn start_driver(path: &PathBuf) -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let probe = reqwest::Client::new();
    for _ in 0..100 {
        if probe.get(format!("{url}/status")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver {
        child,
        url,
        profile: tempfile::tempdir().unwrap(),
    }
}

pub(crate) async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-dev-shm-usage", "--window-size=1280,900",
                        format!("--user-data-dir={}", driver.profile.path().display())],
               "binary": "/usr/bin/chromium"}),
    );
    // Plain HTTP to the local driver: no TLS stack needed.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap()
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub(crate) async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots().join(format!("{name}.png")), png).unwrap();
}

pub(crate) async fn sign_in(c: &Client, app: &TestApp, key: &str) {
    c.goto(&app.url("/")).await.unwrap();
    assert!(
        c.current_url().await.unwrap().path().ends_with("/sign-in"),
        "signed-out visitors land on sign-in"
    );
    c.find(Locator::Css("#key"))
        .await
        .unwrap()
        .send_keys(key)
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/sign-in'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("form.signout"))
        .await
        .unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/");
}

pub(crate) async fn sign_out(c: &Client) {
    c.find(Locator::Css("form.signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Css("#key")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/sign-in"));
}

/// A POST made by hand (not from a page) with the browser's session cookie.
async fn hand_post(
    app: &TestApp,
    cookie: &str,
    path: &str,
    form: &[(&str, &str)],
) -> (StatusCode, String) {
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(app.url(path))
        .header("cookie", format!("tg_session={cookie}"))
        .form(form)
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_and_operators_use_the_console_in_a_browser() {
    let Some(driver_path) = driver_or_skip() else {
        return;
    };
    let app = TestApp::spawn(Db::Sqlite).await;
    let maria = app.key("maria", &["sales_manager"]).await;
    let bob = app.key("bob", &["finance"]).await;
    let shop = app.key("shop", &["service"]).await;
    let ops = app.key("ops", &["operator"]).await;
    let wf = app.workflow(order_workflow("orders")).await;
    let driver = start_driver(&driver_path).await;
    let c = browser(&driver).await;

    // Sign in; an event's approval shows up in the inbox.
    sign_in(&c, &app, &maria).await;
    shot(&c, "inbox-empty").await;
    let (_, ev) = app
        .post(
            "/api/v1/events?wait=true",
            &shop,
            json!({"event_type": "order.created", "payload": {"total": 25000, "order_id": "o-7"}}),
        )
        .await;
    let exec = ev["started"][0].as_str().unwrap().to_owned();
    let (_, ev2) = app
        .post(
            "/api/v1/events?wait=true",
            &shop,
            json!({"event_type": "order.created", "payload": {"total": 31000, "order_id": "o-8"}}),
        )
        .await;
    let exec2 = ev2["started"][0].as_str().unwrap().to_owned();
    c.goto(&app.url("/")).await.unwrap();
    let cards = c.find_all(Locator::Css("li.approval")).await.unwrap();
    assert_eq!(cards.len(), 2);
    let source = c.source().await.unwrap();
    assert!(
        source.contains("1 of 1") || source.contains("0 of 1"),
        "quorum progress shown"
    );
    assert!(source.contains("shop"), "who requested it");
    // Each card shows what is to be approved: the approval step's data, labelled.
    let data: Vec<String> = {
        let mut texts = Vec::new();
        for card in c
            .find_all(Locator::Css("li.approval dl.data"))
            .await
            .unwrap()
        {
            texts.push(card.text().await.unwrap());
        }
        texts
    };
    assert_eq!(data.len(), 2, "{data:?}");
    assert!(
        data.iter()
            .any(|t| t.contains("o-7") && t.contains("25000")),
        "{data:?}"
    );
    assert!(
        data.iter()
            .any(|t| t.contains("o-8") && t.contains("31000")),
        "{data:?}"
    );
    shot(&c, "inbox").await;
    c.set_window_size(390, 844).await.unwrap();
    shot(&c, "inbox-narrow").await;
    c.set_window_size(1280, 900).await.unwrap();

    // Reject without a reason: the form refuses to send.
    let approval = app
        .get(
            &format!("/api/v1/approvals?execution_id={exec}"),
            &app.admin.clone(),
        )
        .await
        .1["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reject = c
        .find(Locator::Css(&format!(
            "form[action='/approvals/{approval}/reject'] button"
        )))
        .await
        .unwrap();
    reject.click().await.unwrap();
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/",
        "still on the inbox"
    );
    let (_, a) = app
        .get(&format!("/api/v1/approvals/{approval}"), &app.admin.clone())
        .await;
    assert_eq!(a["status"], "pending");

    // The approval detail page.
    c.goto(&app.url(&format!("/approvals/{approval}")))
        .await
        .unwrap();
    assert!(c.source().await.unwrap().contains("The step it guards"));
    shot(&c, "approval").await;

    // Approve with a reason → the execution page shows completed and the path.
    c.goto(&app.url("/")).await.unwrap();
    let form = c
        .form(Locator::Css(&format!(
            "form[action='/approvals/{approval}/approve']"
        )))
        .await
        .unwrap();
    form.set_by_name("reason", "known customer").await.unwrap();
    form.submit().await.unwrap();
    let notice = c
        .wait()
        .for_element(Locator::Css("p.notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(notice.starts_with("Approved"), "{notice}");
    // Notices are made by the server from a request it holds; text in the URL is never
    // shown (a crafted "notice" link would be a phishing aid on a page that asks for keys).
    c.goto(&app.url("/?notice=Your%20key%20expired%2C%20paste%20it%20at%20evil.example"))
        .await
        .unwrap();
    assert!(
        c.find_all(Locator::Css("p.notice"))
            .await
            .unwrap()
            .is_empty(),
        "a URL's text is never a notice"
    );
    assert!(!c.source().await.unwrap().contains("evil.example"));
    // The decided request no longer counts down to its deadline: it says when it was
    // decided.
    c.goto(&app.url(&format!("/approvals/{approval}")))
        .await
        .unwrap();
    assert!(c.find(Locator::Css("#decided")).await.is_ok());
    assert!(!c.source().await.unwrap().contains("<dt>Deadline</dt>"));
    app.until(&exec, |e| e["status"] == "completed").await;
    c.goto(&app.url(&format!("/executions/{exec}")))
        .await
        .unwrap();
    assert_eq!(
        c.find(Locator::Css("#status"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "completed"
    );
    let src = c
        .find(Locator::Css("img.graph"))
        .await
        .unwrap()
        .attr("src")
        .await
        .unwrap()
        .unwrap();
    assert!(src.contains(&exec), "{src}");
    shot(&c, "execution").await;
    c.goto(&app.url(&src)).await.unwrap();
    let svg = c.source().await.unwrap();
    for step in ["check", "approve", "record", "ok", "no"] {
        assert!(svg.contains(step), "the graph lacks step {step}");
    }
    assert!(
        svg.contains("#15803d") || svg.contains("rgb(21, 128, 61)"),
        "the path taken is highlighted"
    );

    // On a phone: the graph keeps its drawn size (labels stay readable) and scrolls
    // inside its box; the page itself never scrolls sideways.
    c.goto(&app.url(&format!("/executions/{exec}")))
        .await
        .unwrap();
    c.set_window_size(390, 844).await.unwrap();
    let sizes = c
        .execute(
            "const g = document.querySelector('img.graph'); \
             return [g.naturalWidth, g.clientWidth, document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        )
        .await
        .unwrap();
    let [natural, shown, page_width, viewport] = [0, 1, 2, 3].map(|i| sizes[i].as_u64().unwrap());
    assert!(natural > 0, "the graph loaded: {sizes}");
    assert_eq!(
        shown, natural,
        "the graph is not shrunk on a phone: {sizes}"
    );
    assert!(page_width <= viewport, "the page scrolls sideways: {sizes}");
    shot(&c, "execution-narrow").await;
    // The executions list says what each execution is about and how it ended, and its
    // rows fit a phone's width as labelled cards.
    c.goto(&app.url("/executions")).await.unwrap();
    let about: Vec<String> = {
        let mut texts = Vec::new();
        for cell in c.find_all(Locator::Css("td.about")).await.unwrap() {
            texts.push(cell.text().await.unwrap());
        }
        texts
    };
    assert!(
        about
            .iter()
            .any(|t| t.starts_with("order_id o-7") && t.contains("total 25000")),
        "{about:?}"
    );
    assert!(c.source().await.unwrap().contains("→ allowed"));
    let widths = c
        .execute(
            "return [document.documentElement.scrollWidth, window.innerWidth, \
             Math.max(...[...document.querySelectorAll('table.stack td')].map(td => td.getBoundingClientRect().right))];",
            vec![],
        )
        .await
        .unwrap();
    let [page_width, viewport, rightmost] = [0, 1, 2].map(|i| widths[i].as_f64().unwrap());
    assert!(
        page_width <= viewport && rightmost <= viewport,
        "the executions list is wider than a phone: {widths}"
    );
    shot(&c, "executions-narrow").await;
    c.set_window_size(1280, 900).await.unwrap();

    // Executions, waiting counts, workflows, a workflow, validation.
    for (path, name) in [
        ("/executions".to_owned(), "executions"),
        ("/executions/waiting".to_owned(), "waiting"),
        ("/workflows".to_owned(), "workflows"),
        (format!("/workflows/{wf}"), "workflow"),
    ] {
        c.goto(&app.url(&path)).await.unwrap();
        assert!(c.find(Locator::Css("h1")).await.is_ok(), "{path}");
        shot(&c, name).await;
    }
    // Two enabled versions: the page says events start only the highest.
    assert!(
        c.find_all(Locator::Css("#versions-note"))
            .await
            .unwrap()
            .is_empty(),
        "one version, nothing to say"
    );
    let mut newer = order_workflow("orders");
    newer["version"] = json!("1.10.0");
    let newer_id = app.workflow(newer).await;
    c.goto(&app.url(&format!("/workflows/{wf}"))).await.unwrap();
    let note = c
        .find(Locator::Css("#versions-note"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        note.contains("only the highest enabled one (1.10.0)"),
        "{note}"
    );
    assert!(c
        .source()
        .await
        .unwrap()
        .contains(&format!("/workflows/{newer_id}")));
    c.goto(&app.url("/workflows/validate")).await.unwrap();
    let form = c
        .form(Locator::Css("form[action='/workflows/validate']"))
        .await
        .unwrap();
    form.set_by_name("definition", r#"{"workflow_id": "x", "version": "1", "steps": [{"id": "a", "type": "condition", "condition": {"field": "f", "operator": "nope", "value": 1}, "on_true": "gone"}]}"#).await.unwrap();
    form.submit().await.unwrap();
    c.wait()
        .for_element(Locator::Css("ul.problems"))
        .await
        .unwrap();
    let problems = c.source().await.unwrap();
    assert!(
        problems.contains("steps[0].condition.operator") && problems.contains("steps[0].on_true")
    );
    shot(&c, "validate").await;

    // Sign out ends the session.
    let maria_cookie = c
        .get_named_cookie("tg_session")
        .await
        .unwrap()
        .value()
        .to_owned();
    sign_out(&c).await;
    c.goto(&app.url("/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/sign-in"));
    let (status, _) = hand_post(&app, &maria_cookie, "/sign-out", &[("_csrf", "x")]).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "an ended session is signed out: redirected to sign-in"
    );

    // An approver of another role sees nothing, and a hand-made POST is refused.
    sign_in(&c, &app, &bob).await;
    assert!(c
        .find_all(Locator::Css("li.approval"))
        .await
        .unwrap()
        .is_empty());
    let bob_cookie = c
        .get_named_cookie("tg_session")
        .await
        .unwrap()
        .value()
        .to_owned();
    let csrf = c
        .find(Locator::Css("form.signout input[name=_csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let approval2 = app
        .get(
            &format!("/api/v1/approvals?execution_id={exec2}"),
            &app.admin.clone(),
        )
        .await
        .1["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = hand_post(
        &app,
        &bob_cookie,
        &format!("/approvals/{approval2}/approve"),
        &[("_csrf", &csrf), ("reason", "mine now")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // A POST without the CSRF token is refused, even from a valid session.
    let (status, body) = hand_post(&app, &bob_cookie, "/sign-out", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("CSRF"));
    let (_, a2) = app
        .get(
            &format!("/api/v1/approvals/{approval2}"),
            &app.admin.clone(),
        )
        .await;
    assert_eq!(a2["status"], "pending", "nothing was decided");

    // An operator cancels the second execution from its page.
    sign_out(&c).await;
    sign_in(&c, &app, &ops).await;
    c.goto(&app.url(&format!("/executions/{exec2}")))
        .await
        .unwrap();
    c.find(Locator::Css(&format!(
        "form[action='/executions/{exec2}/cancel'] button"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.wait()
        .for_element(Locator::Css("#status.cancelled"))
        .await
        .unwrap();
    let (_, e2): (StatusCode, Value) = app
        .get(&format!("/api/v1/executions/{exec2}"), &app.admin.clone())
        .await;
    assert_eq!(e2["status"], "cancelled");

    // An operator retries a payment that failed while its ledger was down.
    let ledger = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&ledger)
        .await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&ledger)
        .await;
    let refund = app
        .workflow(json!({
            "workflow_id": "refund", "version": "1", "trigger": {"type": "manual"},
            "steps": [
                {"id": "pay", "type": "execute", "execute": [{"type": "webhook", "url": format!("{}/pay", ledger.uri())}], "next": "done"},
                {"id": "done", "type": "action", "action": "allow"}]
        }))
        .await;
    let (_, started) = app
        .post(
            &format!("/api/v1/workflows/{refund}/execute?wait=true"),
            &ops,
            json!({}),
        )
        .await;
    let failed = started["id"].as_str().unwrap().to_owned();
    app.until(&failed, |e| e["status"] == "failed").await;
    c.goto(&app.url(&format!("/executions/{failed}")))
        .await
        .unwrap();
    let retry_form = format!("form[action='/executions/{failed}/retry']");
    c.find(Locator::Css(&format!("{retry_form} input[name='reason']")))
        .await
        .unwrap()
        .send_keys("ledger is back")
        .await
        .unwrap();
    shot(&c, "execution-retry").await;
    c.find(Locator::Css(&format!("{retry_form} button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("#status.completed"))
        .await
        .unwrap();
    let source = c.source().await.unwrap();
    assert!(
        source.contains("retry from pay: ledger is back"),
        "the audit says who retried and why"
    );
    assert!(
        source.contains("visit 2"),
        "the timeline shows the new visit"
    );
    shot(&c, "execution-retried").await;

    // An operator checks, then moves a waiting order to a new version of its workflow.
    let (_, ev3) = app
        .post(
            "/api/v1/events?wait=true",
            &shop,
            json!({"event_type": "order.created", "payload": {"total": 42000, "order_id": "o-9"}}),
        )
        .await;
    let exec3 = ev3["started"][0].as_str().unwrap().to_owned();
    let mut v2 = order_workflow("orders");
    v2["version"] = json!("2.0.0");
    app.workflow(v2).await;
    c.goto(&app.url(&format!("/executions/{exec3}")))
        .await
        .unwrap();
    c.find(Locator::Css("select[name='check_version']"))
        .await
        .unwrap()
        .select_by_value("2.0.0")
        .await
        .unwrap();
    c.find(Locator::Css(&format!(
        "form[action='/executions/{exec3}'] button"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    let check = c
        .wait()
        .for_element(Locator::Css("#migrate-check"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        check.contains("can continue this execution at approve"),
        "{check}"
    );
    shot(&c, "execution-migrate-check").await;
    c.find(Locator::Css(&format!(
        "form[action='/executions/{exec3}/migrate'] button"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    // The page before the click was already `paused`: wait for the heading that only the
    // migrated execution's page shows, not for the status badge.
    c.wait()
        .for_element(Locator::XPath(
            "//h1/span[@class='muted' and text()='2.0.0']",
        ))
        .await
        .unwrap();
    let (_, e3): (StatusCode, Value) = app
        .get(&format!("/api/v1/executions/{exec3}"), &app.admin.clone())
        .await;
    assert_eq!(e3["workflow_version"], "2.0.0", "{e3}");

    // Bulk: the list of failed charges previews a retry of those stopped at `pay`, then
    // retries exactly the ones the preview accepted.
    let bank = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&bank)
        .await;
    wiremock::Mock::given(wiremock::matchers::any())
        .respond_with(wiremock::ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&bank)
        .await;
    let charge = app
        .workflow(json!({
            "workflow_id": "charge", "version": "1", "trigger": {"type": "manual"},
            "steps": [
                {"id": "pay", "type": "execute", "execute": [{"type": "webhook", "url": format!("{}/pay", bank.uri())}], "next": "done"},
                {"id": "done", "type": "action", "action": "allow"}]
        }))
        .await;
    let mut charges = Vec::new();
    for _ in 0..2 {
        let (_, started) = app
            .post(
                &format!("/api/v1/workflows/{charge}/execute?wait=true"),
                &ops,
                json!({}),
            )
            .await;
        let id = started["id"].as_str().unwrap().to_owned();
        app.until(&id, |e| e["status"] == "failed").await;
        charges.push(id);
    }
    c.goto(&app.url("/executions?status=failed&workflow=charge"))
        .await
        .unwrap();
    c.find(Locator::Css("#bulk-retry input[name='failed_step']"))
        .await
        .unwrap()
        .send_keys("pay")
        .await
        .unwrap();
    c.find(Locator::Css("#bulk-retry form[method='get'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let preview = c
        .wait()
        .for_element(Locator::Css("table#bulk-preview"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(preview.matches("would retry").count(), 2, "{preview}");
    for id in &charges {
        let (_, e): (StatusCode, Value) = app
            .get(&format!("/api/v1/executions/{id}"), &app.admin.clone())
            .await;
        assert_eq!(e["status"], "failed", "a preview changes nothing");
    }
    shot(&c, "executions-bulk-retry-preview").await;
    c.find(Locator::Css(
        "form[action='/executions/bulk/retry'] input[name='reason']",
    ))
    .await
    .unwrap()
    .send_keys("bank is back")
    .await
    .unwrap();
    c.find(Locator::Css("form[action='/executions/bulk/retry'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // The preview page has a heading too: wait for the result's own.
    let result = c
        .wait()
        .for_element(Locator::XPath("//h1[starts-with(text(), 'Retried')]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(result, "Retried 2 of 2");
    for id in &charges {
        app.until(id, |e| e["status"] == "completed").await;
        let (_, audit): (StatusCode, Value) = app
            .get(
                &format!("/api/v1/executions/{id}/resume-requests"),
                &app.admin.clone(),
            )
            .await;
        assert!(
            audit.to_string().contains("bank is back"),
            "each retry is audited with the reason: {audit}"
        );
    }

    // Bulk: the paused orders are previewed for a move to 3.0.0, then moved.
    let mut v3 = order_workflow("orders");
    v3["version"] = json!("3.0.0");
    app.workflow(v3).await;
    c.goto(&app.url("/executions?status=paused&workflow=orders"))
        .await
        .unwrap();
    c.find(Locator::Css("#bulk-migrate select[name='to_version']"))
        .await
        .unwrap()
        .select_by_value("3.0.0")
        .await
        .unwrap();
    c.find(Locator::Css("#bulk-migrate form[method='get'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let preview = c
        .wait()
        .for_element(Locator::Css("table#bulk-preview"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(preview.contains("would move from 2.0.0"), "{preview}");
    c.find(Locator::Css(
        "form[action='/executions/bulk/migrate'] button",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.wait()
        .for_element(Locator::Css("#bulk-result"))
        .await
        .unwrap();
    let (_, e3): (StatusCode, Value) = app
        .get(&format!("/api/v1/executions/{exec3}"), &app.admin.clone())
        .await;
    assert_eq!(e3["workflow_version"], "3.0.0", "{e3}");

    // A revoked key's session ends at once.
    let ops_cookie = c
        .get_named_cookie("tg_session")
        .await
        .unwrap()
        .value()
        .to_owned();
    let (_, keys) = app.get("/api/v1/api-keys", &app.admin.clone()).await;
    let ops_id = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "ops")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.call(
        reqwest::Method::DELETE,
        &format!("/api/v1/api-keys/{ops_id}"),
        Some(&app.admin.clone()),
        None,
    )
    .await;
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/"))
        .header("cookie", format!("tg_session={ops_cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let csp = reqwest::get(app.url("/sign-in")).await.unwrap().headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );

    c.close().await.unwrap();
    app.stop().await;
}

/// One MCP `tools/call` to `/mcp` with `key` (JSON-RPC, stateless): the tool's result.
async fn mcp_call(app: &TestApp, key: &str, tool: &str, arguments: Value) -> Value {
    let res = reqwest::Client::new()
        .post(app.url("/mcp"))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": tool, "arguments": arguments}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["result"]["isError"], false, "{body}");
    body["result"]["structuredContent"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_request_over_mcp_is_decided_in_the_console() {
    let Some(driver_path) = chromedriver() else {
        assert!(
            std::env::var_os("TOLLGATE_REQUIRE_BROWSER").is_none(),
            "chromedriver is missing but TOLLGATE_REQUIRE_BROWSER is set"
        );
        eprintln!("\n*** BROWSER TESTS SKIPPED: no chromedriver ***\n");
        return;
    };
    let app = TestApp::spawn(Db::Sqlite).await;
    let agent = app.key("refund-bot", &["operator"]).await;
    let maria = app.key("maria", &["finance"]).await;
    let asked = mcp_call(
        &app,
        &agent,
        "request_approval",
        json!({"title": "Refund $740 to order 1042", "summary": "Arrived damaged",
               "data": {"order_id": "1042", "amount": 740}, "approvers": {"roles": ["finance"]}}),
    )
    .await;
    assert_eq!(asked["status"], "pending", "{asked}");
    let approval = asked["approval_id"].as_str().unwrap().to_owned();
    let link = asked["console_url"].as_str().unwrap().to_owned();
    assert_eq!(link, app.url(&format!("/approvals/{approval}")));

    let driver = start_driver(&driver_path).await;
    let c = browser(&driver).await;
    sign_in(&c, &app, &maria).await;
    // The link the agent got opens the request, with what the agent wants to do.
    c.goto(&link).await.unwrap();
    let page = c.source().await.unwrap();
    assert!(page.contains("Refund $740 to order 1042"), "the title");
    assert!(page.contains("Arrived damaged"), "the summary");
    assert!(
        page.contains("1042") && page.contains("740"),
        "the arguments"
    );
    assert!(page.contains("refund-bot"), "who asked");
    shot(&c, "mcp-approval").await;
    let form = c
        .form(Locator::Css(&format!(
            "form[action='/approvals/{approval}/approve']"
        )))
        .await
        .unwrap();
    form.set_by_name("reason", "photos checked").await.unwrap();
    form.submit().await.unwrap();
    c.wait()
        .for_element(Locator::Css("p.notice"))
        .await
        .unwrap();

    // The agent reads the decision.
    let decided = mcp_call(
        &app,
        &agent,
        "get_approval",
        json!({"approval_id": approval}),
    )
    .await;
    assert_eq!(decided["status"], "approved", "{decided}");
    assert_eq!(decided["may_proceed"], true);
    assert_eq!(decided["decisions"][0]["decided_by"], "maria");
    assert_eq!(decided["decisions"][0]["reason"], "photos checked");
    c.close().await.unwrap();
    app.stop().await;
}

/// A decision link opened in a real browser by someone with no key or session: the
/// page shows the request, the reject form insists on a reason, and the approval
/// completes the execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_decides_through_a_link_in_a_browser() {
    let Some(driver_path) = driver_or_skip() else {
        return;
    };
    let app = TestApp::spawn(Db::Sqlite).await;
    let shop = app.key("shop", &["service"]).await;
    let ops = app.key("ops", &["operator"]).await;
    app.workflow(order_workflow("orders")).await;
    let (exec, approval) = start_at_approval(
        &app,
        &shop,
        "order.created",
        json!({"total": 25000, "order_id": "o-9"}),
    )
    .await;
    let (s, links) = app
        .post(
            &format!("/api/v1/approvals/{approval}/links"),
            &ops,
            json!({"recipients": [{"role": "sales_manager", "address": "sales@example.com"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{links}");
    let url = links["links"][0]["url"].as_str().unwrap().to_owned();

    let driver = start_driver(&driver_path).await;
    let c = browser(&driver).await;
    c.goto(&url).await.unwrap();
    shot(&c, "link-page").await;
    let source = c.source().await.unwrap();
    assert!(
        source.contains("o-9") && source.contains("sales@example.com"),
        "{source}"
    );
    // Reject without a reason: the browser keeps the form (the field is required).
    c.find(Locator::Id("reject"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(c.current_url().await.unwrap().as_str(), url);
    let (_, a) = app
        .get(&format!("/api/v1/approvals/{approval}"), &ops)
        .await;
    assert_eq!(a["status"], "pending");
    // Approve with a comment.
    c.find(Locator::Id("approve-reason"))
        .await
        .unwrap()
        .send_keys("checked the margin")
        .await
        .unwrap();
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
    shot(&c, "link-approved").await;
    assert!(outcome.contains("Approved"), "{outcome}");
    let (_, a) = app
        .get(&format!("/api/v1/approvals/{approval}"), &ops)
        .await;
    assert_eq!(
        (
            &a["status"],
            &a["decisions"][0]["decided_by"],
            &a["decisions"][0]["channel"]
        ),
        (
            &json!("approved"),
            &json!("sales@example.com"),
            &json!("link")
        )
    );
    // Opening the link again: it was used.
    c.goto(&url).await.unwrap();
    let text = c
        .find(Locator::Id("outcome"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("Already approved"), "{text}");
    c.close().await.unwrap();
    assert_eq!(until_completed(&app, &exec).await["result"], "allowed");
}

/// A comment from the approval page: it joins the thread and decides nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_comments_on_a_request_in_a_browser() {
    let Some(driver_path) = driver_or_skip() else {
        return;
    };
    let app = TestApp::spawn(Db::Sqlite).await;
    let maria = app.key("maria", &["sales_manager"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(order_workflow("orders")).await;
    let (_, approval) = start_at_approval(
        &app,
        &shop,
        "order.created",
        json!({"total": 25000, "order_id": "o-5"}),
    )
    .await;
    let driver = start_driver(&driver_path).await;
    let c = browser(&driver).await;
    sign_in(&c, &app, &maria).await;
    c.goto(&app.url(&format!("/approvals/{approval}")))
        .await
        .unwrap();
    c.find(Locator::Id("comment"))
        .await
        .unwrap()
        .send_keys("is the customer new?")
        .await
        .unwrap();
    c.find(Locator::Id("add-comment"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let thread = c
        .wait()
        .for_element(Locator::Css("#comments li.comment"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    shot(&c, "approval-comment").await;
    assert!(
        thread.contains("maria") && thread.contains("is the customer new?"),
        "{thread}"
    );
    c.close().await.unwrap();
    let (_, a) = app
        .get(&format!("/api/v1/approvals/{approval}"), &maria)
        .await;
    assert_eq!(a["status"], "pending", "a comment decides nothing");
    let (_, thread) = app
        .get(&format!("/api/v1/approvals/{approval}/comments"), &maria)
        .await;
    assert_eq!(thread["items"][0]["author"], "maria");
}
