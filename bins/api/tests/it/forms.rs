//! Decision forms through the API on both backends (docs/approvals.md, "Decision
//! forms"): the data of an approval is checked against the step's JSON Schema before it
//! counts, editable fields start from the request's values, and the approved data lands
//! where the step says.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::links::nonce;
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

/// The console renders the step's form: the editable amount starts from the request on
/// the inbox card and the request's page; a refused approval comes back with what was
/// typed and each problem next to its field; the corrected one counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_fills_in_a_decision_form_in_the_console() {
    use fantoccini::Locator;

    use crate::console::{browser, driver_or_skip, shot, sign_in, start_driver};
    let Some(driver_path) = driver_or_skip() else {
        return;
    };
    let app = TestApp::spawn(Db::Sqlite).await;
    let fin = app.key("fin", &["finance"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(workflow()).await;
    let (exec, id) =
        start_at_approval(&app, &shop, "refund.requested", json!({"amount": 25000})).await;
    let driver = start_driver(&driver_path).await;
    let c = browser(&driver).await;
    sign_in(&c, &app, &fin).await;

    // The inbox card: the form's fields, the editable amount filled in, marks on the
    // required ones, a select for the enum, a date input.
    let card_amount = c
        .find(Locator::Id(&format!("a-{id}-field-approved_amount")))
        .await
        .unwrap();
    assert_eq!(
        card_amount.attr("type").await.unwrap().as_deref(),
        Some("number")
    );
    assert_eq!(
        card_amount.prop("value").await.unwrap().as_deref(),
        Some("25000")
    );
    let card = c.find(Locator::Css("li.card.approval")).await.unwrap();
    assert_eq!(
        card.find_all(Locator::Css("abbr.required"))
            .await
            .unwrap()
            .len(),
        2
    );
    card.find(Locator::Css(&format!("select#a-{id}-field-reason_code")))
        .await
        .unwrap();
    card.find(Locator::Css(&format!(
        "input[type=date]#a-{id}-field-ship_by"
    )))
    .await
    .unwrap();
    shot(&c, "form-inbox").await;

    // The request's page: the approver raises the amount past its bound and forgets the
    // reason code. The page comes back with both problems at their fields.
    c.goto(&app.url(&format!("/approvals/{id}"))).await.unwrap();
    let amount = c.find(Locator::Id("field-approved_amount")).await.unwrap();
    amount.clear().await.unwrap();
    amount.send_keys("-5").await.unwrap();
    c.find(Locator::Css("form.with-fields input[name=reason]"))
        .await
        .unwrap()
        .send_keys("within policy")
        .await
        .unwrap();
    c.find(Locator::Css("form.with-fields button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let amount_error = c
        .wait()
        .for_element(Locator::Id("field-approved_amount-error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    shot(&c, "form-refused").await;
    assert!(amount_error.contains("minimum of 0"), "{amount_error}");
    let code_error = c
        .find(Locator::Id("field-reason_code-error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(code_error.contains("required"), "{code_error}");
    // What was typed is still there, and the field says it is the wrong one.
    let amount = c.find(Locator::Id("field-approved_amount")).await.unwrap();
    assert_eq!(amount.prop("value").await.unwrap().as_deref(), Some("-5"));
    assert_eq!(
        amount.attr("aria-describedby").await.unwrap().as_deref(),
        Some("field-approved_amount-error")
    );
    let reason = c
        .find(Locator::Css("form.with-fields input[name=reason]"))
        .await
        .unwrap();
    assert_eq!(
        reason.prop("value").await.unwrap().as_deref(),
        Some("within policy")
    );
    let (_, a) = app.get(&format!("/api/v1/approvals/{id}"), &fin).await;
    assert_eq!(
        (&a["status"], &a["decisions"]),
        (&json!("pending"), &json!([]))
    );

    // Corrected: a lower amount and a reason code. The decision counts, and the data
    // lands where the step says.
    amount.clear().await.unwrap();
    amount.send_keys("20000").await.unwrap();
    c.find(Locator::Css("#field-reason_code option[value=exception]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::Css("form.with-fields button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = c
        .wait()
        .for_element(Locator::Css("p.notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(notice.starts_with("Approved"), "{notice}");
    c.close().await.unwrap();
    let done = until_completed(&app, &exec).await;
    assert_eq!(
        done["context"]["refund"]["approval"],
        json!({"approved_amount": 20000, "reason_code": "exception"}),
        "{done}"
    );
    assert_eq!(
        done["context"]["approvals"]["approve"]["decisions"][0]["reason"], "within policy",
        "{done}"
    );
    app.stop().await;
}

/// A decision link's page carries the form too: a refused approval answers the page
/// again, with a fresh nonce, the posted values and the problems at their fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_link_page_carries_the_form() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let ops = app.key("ops", &["operator"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(workflow()).await;
    let (exec, id) =
        start_at_approval(&app, &shop, "refund.requested", json!({"amount": 300})).await;
    let (s, b) = app
        .post(&format!("/api/v1/approvals/{id}/links"), &ops, json!({}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let url = b["links"][0]["url"].as_str().unwrap().to_owned();
    let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(
        page.contains(r#"name="field.approved_amount" value="300""#),
        "{page}"
    );
    let submit = |nonce: String, fields: Vec<(&'static str, &'static str)>| {
        let url = url.clone();
        async move {
            let mut form = vec![("nonce", nonce), ("decision", "approve".to_owned())];
            form.extend(fields.into_iter().map(|(k, v)| (k, v.to_owned())));
            let res = reqwest::Client::new()
                .post(&url)
                .form(&form)
                .send()
                .await
                .unwrap();
            (res.status(), res.text().await.unwrap())
        }
    };
    let (s, page) = submit(
        nonce(&page),
        vec![("field.approved_amount", "lots"), ("field.ship_by", "soon")],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{page}");
    for field in ["approved_amount", "reason_code", "ship_by"] {
        assert!(
            page.contains(&format!(r#"id="field-{field}-error""#)),
            "{field}: {page}"
        );
    }
    assert!(page.contains(r#"value="lots""#), "{page}");
    let (s, page) = submit(
        nonce(&page),
        vec![
            ("field.approved_amount", "250"),
            ("field.reason_code", "standard"),
            ("field.ship_by", "2026-12-24"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let done = until_completed(&app, &exec).await;
    assert_eq!(
        done["context"]["refund"]["approval"],
        json!({"approved_amount": 250, "reason_code": "standard", "ship_by": "2026-12-24"}),
        "{done}"
    );
    app.stop().await;
}
