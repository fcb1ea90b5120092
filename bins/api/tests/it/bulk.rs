//! Bulk decisions (`POST /api/v1/approvals/decide`): by ids or by filter, a dry run that
//! changes nothing, each request under its own rules, recorded as `bulk`.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{start_at_approval, until_completed, Db, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_decisions_on_sqlite() {
    bulk_decisions(TestApp::spawn(Db::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_decisions_on_postgres() {
    bulk_decisions(TestApp::spawn(Db::Postgres).await).await;
}

fn workflow(id: &str) -> Value {
    json!({
        "workflow_id": id, "version": "1",
        "trigger": {"type": "event", "event": format!("{id}.created")},
        "steps": [
            {"id": "approve", "type": "approval",
             "approval": {"approvers": {"role": "sales_manager"}, "timeout": "1h"},
             "on_approve": "ok", "on_reject": "no"},
            {"id": "ok", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}
        ]
    })
}

/// Starts one execution of `workflow`; returns its approval's id.
async fn start(app: &TestApp, service: &str, workflow: &str) -> String {
    start_at_approval(app, service, &format!("{workflow}.created"), json!({}))
        .await
        .1
}

async fn statuses(app: &TestApp, ids: &[&String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in ids {
        let (_, a) = app
            .get(&format!("/api/v1/approvals/{id}"), &app.admin)
            .await;
        out.push(a["status"].as_str().unwrap().to_owned());
    }
    out
}

fn outcomes(b: &Value) -> Vec<(String, String)> {
    b["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["outcome"].as_str().unwrap().to_owned(),
                i["error"]["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

async fn bulk_decisions(app: TestApp) {
    let maria = app.key("maria", &["sales_manager"]).await;
    let viewer = app.key("viewer", &["viewer"]).await;
    let service = app.key("shop", &["service"]).await;
    for id in ["a", "b"] {
        let (s, b) = app
            .post("/api/v1/workflows", &app.admin, workflow(id))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    let mut of_a = Vec::new();
    for _ in 0..3 {
        of_a.push(start(&app, &service, "a").await);
    }
    let of_b = start(&app, &service, "b").await;
    let all: Vec<&String> = of_a.iter().chain([&of_b]).collect();

    // The list filters a bulk decision's filter shares.
    for (query, expected) in [
        ("workflow_key=a", 3),
        ("workflow_key=b&step_id=approve", 1),
        ("step_id=other", 0),
    ] {
        let (s, b) = app
            .get(&format!("/api/v1/approvals?{query}"), &viewer)
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(
            b["items"].as_array().unwrap().len(),
            expected,
            "{query}: {b}"
        );
    }

    // Malformed calls are refused whole, naming what is wrong.
    let too_many: Vec<String> = (0..1001)
        .map(|_| uuid::Uuid::now_v7().to_string())
        .collect();
    for (body, says) in [
        (
            json!({"decision": "approve"}),
            "either by `ids` or by `filter`",
        ),
        (
            json!({"ids": [of_b], "filter": {"workflow": "a"}, "decision": "approve"}),
            "either by `ids` or by `filter`",
        ),
        (
            json!({"filter": {}, "decision": "approve"}),
            "filter: name at least one",
        ),
        (
            json!({"filter": {"older_than": "a while"}, "decision": "approve"}),
            "filter.older_than",
        ),
        (
            json!({"ids": [of_b], "decision": "maybe"}),
            "decision: `maybe`",
        ),
        (
            json!({"ids": [of_b], "decision": "reject"}),
            "reason: a rejection needs",
        ),
        (
            json!({"ids": too_many, "decision": "approve"}),
            "ids: 1001 requests, at most 1000",
        ),
    ] {
        let (s, b) = app.post("/api/v1/approvals/decide", &maria, body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(says),
            "{b}"
        );
    }

    // A dry run by filter: what would happen, and nothing happens.
    let (s, b) = app
        .post(
            "/api/v1/approvals/decide",
            &maria,
            json!({"filter": {"workflow": "a"}, "decision": "approve", "dry_run": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (
            b["dry_run"].as_bool(),
            b["decided"].as_u64(),
            b["more"].as_bool()
        ),
        (Some(true), Some(3), Some(false))
    );
    assert_eq!(
        outcomes(&b),
        vec![("would_decide".to_owned(), String::new()); 3]
    );
    assert_eq!(statuses(&app, &all).await, vec!["pending"; 4]);
    // In chunks: a limit takes the newest, and says there are more.
    for (limit, more) in [(2, true), (3, false)] {
        let (s, b) = app
            .post("/api/v1/approvals/decide", &maria, json!({"filter": {"workflow": "a"}, "limit": limit, "decision": "approve", "dry_run": true}))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(
            (b["items"].as_array().unwrap().len(), b["more"].as_bool()),
            (limit, Some(more)),
            "{b}"
        );
    }
    let (s, _) = app
        .post(
            "/api/v1/approvals/decide",
            &maria,
            json!({"filter": {"workflow": "a"}, "limit": 0, "decision": "approve"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A caller who may decide none of them: each refused as a single decision would be.
    for dry_run in [true, false] {
        let (s, b) = app
            .post(
                "/api/v1/approvals/decide",
                &viewer,
                json!({"ids": [of_b], "decision": "approve", "dry_run": dry_run}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(
            outcomes(&b),
            vec![("refused".to_owned(), "forbidden".to_owned())]
        );
    }
    // Nothing is older than an hour yet.
    let (_, b) = app
        .post(
            "/api/v1/approvals/decide",
            &maria,
            json!({"filter": {"role": "sales_manager", "older_than": "1h"}, "decision": "approve"}),
        )
        .await;
    assert_eq!(b["items"], json!([]));

    // The decision by filter: workflow a's requests are approved, b's is not touched.
    let (s, b) = app
        .post("/api/v1/approvals/decide", &maria, json!({"filter": {"workflow": "a", "step": "approve"}, "decision": "approve", "reason": "incident cleared"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        (b["decided"].as_u64(), b["refused"].as_u64()),
        (Some(3), Some(0))
    );
    assert!(
        b["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "approved"),
        "{b}"
    );
    assert_eq!(
        statuses(&app, &all).await,
        vec!["approved", "approved", "approved", "pending"]
    );
    let (_, a) = app
        .get(&format!("/api/v1/approvals/{}", of_a[0]), &app.admin)
        .await;
    assert_eq!(
        (
            &a["decisions"][0]["decided_by"],
            &a["decisions"][0]["channel"],
            &a["decisions"][0]["reason"]
        ),
        (&json!("maria"), &json!("bulk"), &json!("incident cleared"))
    );

    // By ids: each request under its own rules — one already approved, one unknown.
    let unknown = uuid::Uuid::now_v7().to_string();
    let (s, b) = app
        .post(
            "/api/v1/approvals/decide",
            &maria,
            json!({"ids": [of_a[0], of_b, unknown], "decision": "reject", "reason": "no stock"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        outcomes(&b),
        vec![
            ("refused".to_owned(), "conflict".to_owned()),
            ("decided".to_owned(), String::new()),
            ("refused".to_owned(), "not_found".to_owned()),
        ]
    );
    assert_eq!(
        statuses(&app, &all).await,
        vec!["approved", "approved", "approved", "rejected"]
    );

    // The executions went on as after single decisions.
    let (_, a) = app
        .get(&format!("/api/v1/approvals/{of_b}"), &app.admin)
        .await;
    let execution = a["execution_id"].as_str().unwrap().to_owned();
    assert_eq!(until_completed(&app, &execution).await["result"], "blocked");
}

/// The console's bulk flow: a filter's dry run lists each request's outcome and decides
/// nothing; the confirmation then approves exactly the requests the preview accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_previews_then_approves_many_in_the_console() {
    use fantoccini::Locator;

    use crate::console::{browser, driver_or_skip, shot, sign_in, start_driver};
    let Some(driver_path) = driver_or_skip() else {
        return;
    };
    let app = TestApp::spawn(Db::Sqlite).await;
    let maria = app.key("maria", &["sales_manager"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(crate::order_workflow("orders")).await;
    let mut executions = Vec::new();
    for i in 0..3 {
        let (exec, _) = crate::start_at_approval(
            &app,
            &shop,
            "order.created",
            json!({"total": 25000 + i, "order_id": format!("o-{i}")}),
        )
        .await;
        executions.push(exec);
    }
    let driver = start_driver(&driver_path).await;
    let c = browser(&driver).await;
    sign_in(&c, &app, &maria).await;
    c.find(Locator::Id("decide-many"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Id("bulk-workflow"))
        .await
        .unwrap()
        .send_keys("orders")
        .await
        .unwrap();
    c.find(Locator::Id("bulk-reason"))
        .await
        .unwrap()
        .send_keys("incident 4411 cleared")
        .await
        .unwrap();
    c.find(Locator::Id("bulk-preview"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let rows = c
        .wait()
        .for_element(Locator::Css("#preview h2"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    shot(&c, "bulk-preview").await;
    assert!(rows.contains("3 would be decided"), "{rows}");
    // The dry run decided nothing.
    let (_, pending) = app.get("/api/v1/approvals?status=pending", &maria).await;
    assert_eq!(pending["items"].as_array().unwrap().len(), 3);
    c.find(Locator::Id("bulk-confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let done = c
        .wait()
        .for_element(Locator::Css("#result h2"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    shot(&c, "bulk-decided").await;
    assert!(done.contains("3 decided, 0 refused"), "{done}");
    c.close().await.unwrap();
    for exec in &executions {
        assert_eq!(
            crate::until_completed(&app, exec).await["result"],
            "allowed"
        );
    }
    let (_, a) = app
        .get(
            &format!("/api/v1/approvals?execution_id={}", executions[0]),
            &maria,
        )
        .await;
    assert_eq!(
        (
            &a["items"][0]["decisions"][0]["channel"],
            &a["items"][0]["decisions"][0]["reason"]
        ),
        (&json!("bulk"), &json!("incident 4411 cleared"))
    );
}
