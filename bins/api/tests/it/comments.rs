//! Comment threads on approval requests: through the API on both backends, and in the
//! console (a form that decides nothing).

use reqwest::StatusCode;
use serde_json::json;

use crate::{order_workflow, start_at_approval, Db, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_on_sqlite() {
    comments(TestApp::spawn(Db::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_on_postgres() {
    comments(TestApp::spawn(Db::Postgres).await).await;
}

async fn comments(app: TestApp) {
    let maria = app.key("maria", &["sales_manager"]).await;
    let viewer = app.key("viewer", &["viewer"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(order_workflow("orders")).await;
    let (_, id) = start_at_approval(
        &app,
        &shop,
        "order.created",
        json!({"total": 25000, "order_id": "o-1"}),
    )
    .await;
    let thread = format!("/api/v1/approvals/{id}/comments");

    // Anyone who can read the request comments; a comment decides nothing.
    let (s, c) = app
        .post(
            &thread,
            &maria,
            json!({"body": "  is this customer new?  "}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    assert_eq!(
        (c["author"].as_str(), c["body"].as_str()),
        (Some("maria"), Some("is this customer new?"))
    );
    let (s, _) = app
        .post(&thread, &viewer, json!({"body": "yes, since May"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, a) = app.get(&format!("/api/v1/approvals/{id}"), &viewer).await;
    assert_eq!(
        (
            a["status"].as_str(),
            a["decisions"].as_array().unwrap().len()
        ),
        (Some("pending"), 0)
    );

    // Refused, changing nothing: empty, too long, an unknown request, unknown fields.
    for (body, status) in [
        (json!({"body": "   "}), StatusCode::BAD_REQUEST),
        (json!({"body": "x".repeat(4001)}), StatusCode::BAD_REQUEST),
        (
            json!({"body": "hi", "decision": "approve"}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, b) = app.post(&thread, &maria, body).await;
        assert_eq!(s, status, "{b}");
    }
    let unknown = uuid::Uuid::now_v7();
    let (s, _) = app
        .post(
            &format!("/api/v1/approvals/{unknown}/comments"),
            &maria,
            json!({"body": "hi"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = app
        .get(&format!("/api/v1/approvals/{unknown}/comments"), &maria)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Oldest first, paged; still open after the decision.
    let (s, _) = app
        .post(
            &format!("/api/v1/approvals/{id}/approve?wait=true"),
            &maria,
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = app
        .post(&thread, &maria, json!({"body": "approved, thanks"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, page) = app.get(&format!("{thread}?limit=2"), &viewer).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let bodies = |p: &serde_json::Value| {
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["body"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(bodies(&page), ["is this customer new?", "yes, since May"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = app
        .get(&format!("{thread}?limit=2&cursor={cursor}"), &viewer)
        .await;
    assert_eq!(bodies(&rest), ["approved, thanks"]);
    assert!(rest["next_cursor"].is_null());
}
