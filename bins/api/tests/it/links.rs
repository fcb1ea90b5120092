//! Signed decision links (docs/notifications.md): made by an operator, opened without a
//! key, deciding once under the API's rules; every way a link must decide nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tollgate_api::links::{LinkClaims, LinkKeys};

use crate::{start_at_approval, until_completed, Db, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_links_on_sqlite() {
    decision_links(TestApp::spawn(Db::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_links_on_postgres() {
    decision_links(TestApp::spawn(Db::Postgres).await).await;
}

/// Two approvals from the sales managers or from dana.
fn workflow() -> Value {
    json!({
        "workflow_id": "big-orders", "version": "1",
        "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "approve", "type": "approval",
             "approval": {"approvers": {"role": "sales_manager", "users": ["dana"]}, "required": 2,
                          "timeout": "1h", "reason": "order {{order_id}} is large",
                          "data": {"order": "{{order_id}}", "total": "{{total}}"}},
             "on_approve": "ok", "on_reject": "no"},
            {"id": "ok", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}
        ]
    })
}

/// Starts an execution for `order`; returns its pending approval's id.
async fn start(app: &TestApp, service: &str, order: &str) -> String {
    start_at_approval(
        app,
        service,
        "order.created",
        json!({"order_id": order, "total": 20000}),
    )
    .await
    .1
}

/// The page at `url` (a link): status and HTML.
async fn open(url: &str) -> (StatusCode, String) {
    let res = reqwest::get(url).await.unwrap();
    let status = res.status();
    assert_eq!(
        res.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "{url}"
    );
    (status, res.text().await.unwrap())
}

/// Submits the decision form of `url`.
async fn submit(url: &str, nonce: &str, decision: &str, reason: &str) -> (StatusCode, String) {
    let res = reqwest::Client::new()
        .post(url)
        .form(&[("nonce", nonce), ("decision", decision), ("reason", reason)])
        .send()
        .await
        .unwrap();
    (res.status(), res.text().await.unwrap())
}

/// The form nonce in a decision page.
pub(crate) fn nonce(html: &str) -> String {
    let at = html
        .find("name=\"nonce\" value=\"")
        .expect("a decision form")
        + 20;
    html[at..].split('"').next().unwrap().to_owned()
}

async fn approval(app: &TestApp, id: &str) -> Value {
    let (s, b) = app
        .get(&format!("/api/v1/approvals/{id}"), &app.admin)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

async fn decision_links(app: TestApp) {
    let operator = app.key("ops", &["operator"]).await;
    let maria = app.key("maria", &["sales_manager"]).await;
    let service = app.key("shop", &["service"]).await;
    let (s, b) = app.post("/api/v1/workflows", &operator, workflow()).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = start(&app, &service, "o-1").await;
    let links_of = format!("/api/v1/approvals/{id}/links");

    // Who may make links, and for whom.
    let (s, _) = app.post(&links_of, &maria, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "an approver may not make links");
    let (s, b) = app
        .post(
            &links_of,
            &operator,
            json!({"recipients": [{"user": "eve"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("recipients[0].user: `eve` is not named"),
        "{b}"
    );
    let (s, b) = app
        .post(
            &links_of,
            &operator,
            json!({"recipients": [{"role": "sales_manager", "address": "shop"}]}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "the requester may not decide: {b}"
    );
    let (s, b) = app
        .post(&links_of, &operator, json!({"expires_in": "soon"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    // By default: one link per named user and per role, until the deadline.
    let (s, b) = app.post(&links_of, &operator, json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let links = b["links"].as_array().unwrap();
    assert_eq!(
        links
            .iter()
            .map(|l| (l["subject"].as_str().unwrap(), l["role"].clone()))
            .collect::<Vec<_>>(),
        vec![
            ("dana", Value::Null),
            ("role:sales_manager", json!("sales_manager"))
        ]
    );
    assert_eq!(
        links[0]["expires_at"],
        approval(&app, &id).await["expires_at"]
    );
    let dana = links[0]["url"].as_str().unwrap().to_owned();
    assert!(dana.starts_with(&app.url("/d/")), "{dana}");
    let (s, b) = app
        .post(&links_of, &operator, json!({"recipients": [{"role": "sales_manager", "address": "sales@example.com"}], "expires_in": "10m"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let sales = b["links"][0]["url"].as_str().unwrap().to_owned();

    // Opening a link shows the request and decides nothing, however often it is opened
    // (a mail scanner's prefetch).
    let (s, page) = open(&dana).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(
        page.contains("order o-1 is large") && page.contains("0 of 2") && page.contains("dana"),
        "{page}"
    );
    let (s, _) = open(&dana).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(approval(&app, &id).await["decisions"], json!([]));
    let form = nonce(&page);

    // A POST without the page's nonce decides nothing.
    let (s, _) = submit(&dana, "1.00", "approve", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(approval(&app, &id).await["decisions"], json!([]));

    // Dana approves through her link: recorded as hers, by link.
    let (s, page) = submit(&dana, &form, "approve", "fine by me").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert!(page.contains("1 of 2"), "{page}");
    let a = approval(&app, &id).await;
    assert_eq!(a["status"], "pending");
    assert_eq!(
        (
            &a["decisions"][0]["decided_by"],
            &a["decisions"][0]["channel"],
            &a["decisions"][0]["reason"]
        ),
        (&json!("dana"), &json!("link"), &json!("fine by me"))
    );

    // The link was used: opening or submitting it again changes nothing.
    let (s, page) = open(&dana).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(page.contains("You already decided"), "{page}");
    let (s, _) = submit(&dana, &form, "approve", "").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(
        approval(&app, &id).await["decisions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A changed token, an expired one and one for what the approver no longer sees: no
    // decision page. Tokens are signed here with the server's own key file.
    let keys = LinkKeys::open(
        &app.dir.path().join("data").join("link.key"),
        std::time::Duration::from_secs(3_600),
    )
    .unwrap();
    let token = sales.rsplit('/').next().unwrap();
    let claims = keys
        .verify(token, chrono::Utc::now())
        .expect("the server's own link verifies");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    assert!(parts[2].starts_with("ey"), "JSON claims: {token}");
    parts[2].replace_range(0..1, "f");
    let tampered = parts.join(".");
    let (s, page) = open(&app.url(&format!("/d/{tampered}"))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(page.contains("This link is invalid"), "{page}");
    let expired = keys.mint(&LinkClaims {
        expires_at: chrono::Utc::now().timestamp() - 1,
        ..claims.clone()
    });
    let (s, page) = open(&app.url(&format!("/d/{expired}"))).await;
    assert_eq!(
        (s, page.contains("This link is invalid")),
        (StatusCode::NOT_FOUND, true)
    );
    let changed = keys.mint(&LinkClaims {
        digest: "0".repeat(32),
        ..claims.clone()
    });
    let (s, page) = open(&app.url(&format!("/d/{changed}"))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(page.contains("This request has changed"), "{page}");
    assert_eq!(
        approval(&app, &id).await["decisions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Maria approves through the API: the quorum is met. The role's link then decides
    // nothing, and says why.
    let (_, page) = open(&sales).await;
    let sales_form = nonce(&page);
    let (s, b) = app
        .post(
            &format!("/api/v1/approvals/{id}/approve?wait=true"),
            &maria,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["approval"]["status"], "approved");
    let (s, page) = submit(&sales, &sales_form, "reject", "too late").await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(page.contains("Already approved"), "{page}");
    let a = approval(&app, &id).await;
    assert_eq!(
        (
            a["status"].as_str(),
            a["decisions"].as_array().unwrap().len()
        ),
        (Some("approved"), 2)
    );
    let (s, _) = app.post(&links_of, &operator, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "no links to a settled request");

    // The same form sent twice at once: one decision, the other told it was made.
    let id = start(&app, &service, "o-3").await;
    let (_, b) = app
        .post(
            &format!("/api/v1/approvals/{id}/links"),
            &operator,
            json!({"recipients": [{"user": "dana"}]}),
        )
        .await;
    let url = b["links"][0]["url"].as_str().unwrap().to_owned();
    let (_, page) = open(&url).await;
    let form = nonce(&page);
    let (one, two) = tokio::join!(
        submit(&url, &form, "approve", ""),
        submit(&url, &form, "approve", "")
    );
    let mut statuses = [one.0, two.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::CONFLICT],
        "{} / {}",
        one.1,
        two.1
    );
    assert_eq!(
        approval(&app, &id).await["decisions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A role's link rejects: a reason is required, then the execution ends rejected.
    let id = start(&app, &service, "o-2").await;
    let (s, b) = app
        .post(
            &format!("/api/v1/approvals/{id}/links"),
            &operator,
            json!({"recipients": [{"role": "sales_manager", "address": "sales@example.com"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let url = b["links"][0]["url"].as_str().unwrap().to_owned();
    let (_, page) = open(&url).await;
    let form = nonce(&page);
    let (s, page) = submit(&url, &form, "reject", "  ").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    assert_eq!(approval(&app, &id).await["status"], "pending");
    let (s, page) = submit(&url, &form, "reject", "margin too thin").await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let a = approval(&app, &id).await;
    assert_eq!(a["status"], "rejected");
    assert_eq!(
        (
            &a["decisions"][0]["decided_by"],
            &a["decisions"][0]["channel"]
        ),
        (&json!("sales@example.com"), &json!("link"))
    );
    let execution = a["execution_id"].as_str().unwrap();
    assert_eq!(until_completed(&app, execution).await["result"], "blocked");
}
