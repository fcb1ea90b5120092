//! Decision forms through the API on both backends (docs/approvals.md, "Decision
//! forms"): the data of an approval is checked against the step's JSON Schema before it
//! counts, editable fields start from the request's values, and the approved data lands
//! where the step says.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{start_at_approval, until_completed, Db, TestApp};

fn workflow() -> Value {
    json!({
        "workflow_id": "refunds", "version": "1",
        "trigger": {"type": "event", "event": "refund.requested"},
        "steps": [
            {"id": "approve", "type": "approval",
             "approval": {"approvers": {"role": "finance"},
                          "data": {"approved_amount": "{{amount}}"},
                          "form": {"type": "object", "required": ["approved_amount", "reason_code"],
                                   "properties": {
                                       "approved_amount": {"type": "number", "minimum": 0, "title": "Approved amount"},
                                       "reason_code": {"type": "string", "enum": ["standard", "exception"]},
                                       "ship_by": {"type": "string", "format": "date"}}},
                          "editable": ["approved_amount"],
                          "merge_into": "refund.approval"},
             "on_approve": "ok", "on_reject": "no"},
            {"id": "ok", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}
        ]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_forms_on_sqlite() {
    forms(TestApp::spawn(Db::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_forms_on_postgres() {
    forms(TestApp::spawn(Db::Postgres).await).await;
}

fn paths(e: &Value) -> Vec<String> {
    let mut p: Vec<String> = e["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_owned())
        .collect();
    p.sort();
    p
}

async fn forms(app: TestApp) {
    let fin = app.key("fin", &["finance"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(workflow()).await;
    let (exec, id) =
        start_at_approval(&app, &shop, "refund.requested", json!({"amount": 25000})).await;
    let approve = format!("/api/v1/approvals/{id}/approve");

    // Refused field by field, changing nothing. The editable amount starts from the
    // request's value, so only the reason code is missing at first.
    let (s, e) = app.post(&approve, &fin, json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["error"]["code"], "validation_failed");
    assert_eq!(paths(&e), ["data.reason_code"]);
    let (s, e) = app
        .post(
            &approve,
            &fin,
            json!({"data": {"approved_amount": -5, "reason_code": "maybe", "ship_by": "someday", "extra": 1}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(
        paths(&e),
        [
            "data.approved_amount",
            "data.extra",
            "data.reason_code",
            "data.ship_by"
        ]
    );
    let (_, a) = app.get(&format!("/api/v1/approvals/{id}"), &fin).await;
    assert_eq!(
        (&a["status"], &a["decisions"]),
        (&json!("pending"), &json!([]))
    );

    // Accepted: the approver lowers the amount; the data lands in the context twice.
    let (s, d) = app
        .post(
            &format!("{approve}?wait=true"),
            &fin,
            json!({"data": {"approved_amount": 20000, "reason_code": "exception"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let done = until_completed(&app, &exec).await;
    let expected = json!({"approved_amount": 20000, "reason_code": "exception"});
    assert_eq!(done["context"]["refund"]["approval"], expected, "{done}");
    assert_eq!(done["context"]["approvals"]["approve"]["data"], expected);

    // A rejection needs only its reason: the form is what approving asks for.
    let (_, other) =
        start_at_approval(&app, &shop, "refund.requested", json!({"amount": 10})).await;
    let (s, r) = app
        .post(
            &format!("/api/v1/approvals/{other}/reject"),
            &fin,
            json!({"reason": "duplicate"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");

    // A form outside the subset is refused when the workflow is saved.
    let mut bad = workflow();
    bad["workflow_id"] = json!("refunds_bad");
    bad["steps"][0]["approval"]["form"]["properties"]["ship_by"] = json!({"type": "array"});
    bad["steps"][0]["approval"]["editable"] = json!(["approved", "approved_amount"]);
    let (s, e) = app.post("/api/v1/workflows", &app.admin.clone(), bad).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("steps[0].approval.form.properties.ship_by.type"),
        "{text}"
    );
    assert!(text.contains("steps[0].approval.editable"), "{text}");
    app.stop().await;
}
