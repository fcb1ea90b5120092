//! Service levels of approval requests through the API (docs/approvals.md, "Service
//! levels"): priority and due time from the step's templates, the list in due order,
//! overdue marks, and the metrics.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{start_at_approval, Db, TestApp};

fn workflow() -> Value {
    json!({
        "workflow_id": "sla_orders", "version": "1",
        "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "approve", "type": "approval",
             "approval": {"approvers": {"role": "sales_manager"},
                          "entity": {"type": "order", "id": "{{order_id}}"},
                          "priority": "{{tier}}", "due": "{{due}}"},
             "on_approve": "ok", "on_reject": "no"},
            {"id": "ok", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_levels_on_sqlite() {
    service_levels(TestApp::spawn(Db::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_levels_on_postgres() {
    service_levels(TestApp::spawn(Db::Postgres).await).await;
}

async fn service_levels(app: TestApp) {
    let maria = app.key("maria", &["sales_manager"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(workflow()).await;
    let now = chrono::Utc::now();
    let rfc = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339();
    let mut ids = Vec::new();
    for (order, tier, due) in [
        ("o-none", "", String::new()),
        ("o-late", "urgent", rfc(now - chrono::TimeDelta::hours(1))),
        ("o-later", "low", rfc(now + chrono::TimeDelta::hours(5))),
        ("o-soon", "high", rfc(now + chrono::TimeDelta::hours(1))),
    ] {
        let (_, id) = start_at_approval(
            &app,
            &shop,
            "order.created",
            json!({"order_id": order, "tier": tier, "due": due}),
        )
        .await;
        ids.push(id);
    }

    // Due order: the overdue one first, the one without a due time last.
    let (s, list) = app
        .get("/api/v1/approvals?status=pending&sort=due&limit=2", &maria)
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let first = &list["items"][0];
    assert_eq!(
        (&first["entity_id"], &first["priority"], &first["overdue"]),
        (&json!("o-late"), &json!("urgent"), &json!(true))
    );
    assert!(first["due_at"].is_string());
    assert_eq!(list["items"][1]["entity_id"], "o-soon", "{list}");
    let (_, rest) = app
        .get(
            &format!(
                "/api/v1/approvals?status=pending&sort=due&limit=2&cursor={}",
                list["next_cursor"].as_str().unwrap()
            ),
            &maria,
        )
        .await;
    let order: Vec<&str> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["entity_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["o-later", "o-none"]);
    let none = &rest["items"][1];
    assert_eq!(
        (&none["priority"], &none["due_at"], &none["overdue"]),
        (&json!("normal"), &Value::Null, &json!(false))
    );
    // `newest` is the default order; an unknown order is refused.
    let (_, newest) = app
        .get("/api/v1/approvals?status=pending&sort=newest", &maria)
        .await;
    assert_eq!(newest["items"].as_array().unwrap().len(), 4);
    let (s, e) = app.get("/api/v1/approvals?sort=oldest", &maria).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");

    // Decided: no longer overdue, and timed in the histogram by workflow and step.
    let (s, d) = app
        .post(
            &format!("/api/v1/approvals/{}/approve?wait=true", ids[1]),
            &maria,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["approval"]["overdue"], false);
    assert_eq!(d["approval"]["priority"], "urgent");
    let text = app.metrics().await;
    assert!(
        text.contains("tollgate_approval_decision_seconds_bucket{workflow=\"sla_orders\",step=\"approve\",le=\"60\"} "),
        "{text}"
    );
    assert!(text.contains("tollgate_approvals_overdue "), "{text}");

    // A literal priority or due that could never work is refused at validation.
    let mut bad = workflow();
    bad["workflow_id"] = json!("sla_bad");
    bad["steps"][0]["approval"]["priority"] = json!("asap");
    bad["steps"][0]["approval"]["due"] = json!("soonish");
    let (s, e) = app.post("/api/v1/workflows", &app.admin.clone(), bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("steps[0].approval.priority") && text.contains("unknown priority `asap`"),
        "{text}"
    );
    assert!(text.contains("steps[0].approval.due"), "{text}");
    app.stop().await;
}
