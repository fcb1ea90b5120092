//! Delegations through the API on both backends, and in the console (docs/approvals.md,
//! "Delegation").

use fantoccini::Locator;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::console::{browser, driver_or_skip, shot, sign_in, start_driver};
use crate::{start_at_approval, until_completed, Db, TestApp};

fn workflow(required: u32) -> Value {
    json!({
        "workflow_id": "orders", "version": "1",
        "trigger": {"type": "event", "event": "order.created"},
        "steps": [
            {"id": "approve", "type": "approval",
             "approval": {"approvers": {"role": "sales_manager"}, "required": required,
                          "entity": {"type": "order", "id": "{{order_id}}"}},
             "on_approve": "ok", "on_reject": "no"},
            {"id": "ok", "type": "action", "action": "allow"},
            {"id": "no", "type": "action", "action": "block"}
        ]
    })
}

fn in_days(days: i64) -> String {
    (chrono::Utc::now() + chrono::TimeDelta::days(days)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegations_on_sqlite() {
    delegations(TestApp::spawn(Db::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegations_on_postgres() {
    delegations(TestApp::spawn(Db::Postgres).await).await;
}

async fn delegations(app: TestApp) {
    let maria = app.key("maria", &["sales_manager"]).await;
    let ann = app.key("ann", &["sales_manager"]).await;
    let tom = app.key("tom", &["sales_manager"]).await;
    let zoe = app.key("zoe", &["viewer"]).await;
    let ops = app.key("ops", &["operator"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(workflow(2)).await;
    let start = |order: &'static str| {
        let (app, shop) = (&app, shop.clone());
        async move { start_at_approval(app, &shop, "order.created", json!({"order_id": order})).await }
    };

    // Refused, creating nothing: to oneself, an ended or overlong period, someone
    // else's requests without being an operator, unknown fields.
    for (who, body, status) in [
        (
            &maria,
            json!({"to": "maria", "ends_at": in_days(1)}),
            StatusCode::BAD_REQUEST,
        ),
        (
            &maria,
            json!({"to": "zoe", "ends_at": in_days(-1)}),
            StatusCode::BAD_REQUEST,
        ),
        (
            &maria,
            json!({"to": "zoe", "ends_at": in_days(400)}),
            StatusCode::BAD_REQUEST,
        ),
        (
            &tom,
            json!({"to": "tom", "from": "maria", "ends_at": in_days(1)}),
            StatusCode::FORBIDDEN,
        ),
        (
            &maria,
            json!({"to": "zoe", "ends_at": in_days(1), "extra": 1}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, e) = app.post("/api/v1/delegations", who, body.clone()).await;
        assert_eq!(s, status, "{body}: {e}");
    }
    let (_, mine) = app.get("/api/v1/delegations", &maria).await;
    assert_eq!(mine["items"], json!([]));

    // Maria delegates her orders to zoe, who holds no approver role of her own.
    let (s, d) = app
        .post(
            "/api/v1/delegations",
            &maria,
            json!({"to": "zoe", "workflow": "orders", "ends_at": in_days(7), "reason": "on leave"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(
        (&d["from"], &d["to"], &d["from_roles"]),
        (&json!("maria"), &json!("zoe"), &json!(["sales_manager"]))
    );
    let delegation = d["id"].as_str().unwrap().to_owned();
    let (_, to_zoe) = app.get("/api/v1/delegations", &zoe).await;
    assert_eq!(to_zoe["items"][0]["id"], json!(delegation));
    let (s, _) = app.get("/api/v1/delegations?all=true", &zoe).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (exec, first) = start("o-1").await;
    let approve = |id: &str| format!("/api/v1/approvals/{id}/approve");
    // Zoe alone may not decide; for maria she may, and it counts as maria's.
    let (s, _) = app.post(&approve(&first), &zoe, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) = app
        .post(&approve(&first), &tom, json!({"on_behalf_of": "maria"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "tom holds no delegation: {e}");
    let (s, d) = app
        .post(&approve(&first), &zoe, json!({"on_behalf_of": "maria"}))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let vote = &d["approval"]["decisions"][0];
    assert_eq!(
        (&vote["decided_by"], &vote["delegate"]),
        (&json!("maria"), &json!("zoe"))
    );
    // One vote per person: maria herself may not vote again, nor zoe for herself.
    let (s, e) = app.post(&approve(&first), &maria, json!({})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    // Ann's vote completes the quorum of two.
    let (s, _) = app.post(&approve(&first), &ann, json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(until_completed(&app, &exec).await["result"], "allowed");

    // Tom, an approver himself, gets maria's delegation too, from an operator: he
    // may vote once, as himself or for maria, not both.
    let (s, d) = app
        .post(
            "/api/v1/delegations",
            &ops,
            json!({"to": "tom", "from": "maria", "ends_at": in_days(1)}),
        )
        .await;
    assert_eq!(
        (s, &d["created_by"]),
        (StatusCode::CREATED, &json!("ops")),
        "{d}"
    );
    let (_, second) = start("o-2").await;
    let (s, _) = app.post(&approve(&second), &tom, json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = app
        .post(&approve(&second), &tom, json!({"on_behalf_of": "maria"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("tom"),
        "{e}"
    );

    // Revoked: no longer usable. Only its parties or an operator may revoke it, once.
    let revoke = format!("/api/v1/delegations/{delegation}");
    let (s, _) = app.call(Method::DELETE, &revoke, Some(&ann), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "not ann's");
    let (s, r) = app.call(Method::DELETE, &revoke, Some(&maria), None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(r["revoked_at"].is_string());
    let (s, _) = app.call(Method::DELETE, &revoke, Some(&maria), None).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, _) = app
        .post(&approve(&second), &zoe, json!({"on_behalf_of": "maria"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // A delegation for another workflow does not cover these requests.
    let (s, _) = app
        .post(
            "/api/v1/delegations",
            &ann,
            json!({"to": "zoe", "workflow": "refunds", "ends_at": in_days(1)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .post(&approve(&second), &zoe, json!({"on_behalf_of": "ann"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    app.stop().await;
}

/// The console: zoe's inbox shows maria's request "for maria", and her approval is
/// recorded as maria's, made by zoe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegate_decides_in_the_console() {
    let Some(driver_path) = driver_or_skip() else {
        return;
    };
    let app = TestApp::spawn(Db::Sqlite).await;
    let maria = app.key("maria", &["sales_manager"]).await;
    let zoe = app.key("zoe", &["viewer"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(workflow(1)).await;
    let (s, _) = app
        .post(
            "/api/v1/delegations",
            &maria,
            json!({"to": "zoe", "ends_at": in_days(1)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (exec, approval) =
        start_at_approval(&app, &shop, "order.created", json!({"order_id": "o-9"})).await;
    let driver = start_driver(&driver_path).await;
    let c = browser(&driver).await;
    sign_in(&c, &app, &zoe).await;
    let card = c
        .find(Locator::Css("ul.inbox li.card"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    shot(&c, "inbox-delegated").await;
    assert!(card.contains("for maria") && card.contains("o-9"), "{card}");
    c.find(Locator::Css("ul.inbox li.card button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("p.notice"))
        .await
        .unwrap();
    c.goto(&app.url(&format!("/approvals/{approval}")))
        .await
        .unwrap();
    let timeline = c
        .find(Locator::Css("ol.timeline"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        timeline.contains("maria") && timeline.contains("by zoe on their behalf"),
        "{timeline}"
    );
    c.close().await.unwrap();
    assert_eq!(until_completed(&app, &exec).await["result"], "allowed");
}
