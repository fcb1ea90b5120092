//! Claims and assignments of approval requests through the API, on both backends
//! (docs/approvals.md, "Claims and assignment"), and in the console in a browser.

use fantoccini::Locator;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::console::{browser, driver_or_skip, shot, sign_in, sign_out, start_driver};
use crate::{order_workflow, start_at_approval, until_completed, Db, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_assignments_on_sqlite() {
    claims(TestApp::spawn(Db::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_assignments_on_postgres() {
    claims(TestApp::spawn(Db::Postgres).await).await;
}

async fn claims(app: TestApp) {
    let maria = app.key("maria", &["sales_manager"]).await;
    let tom = app.key("tom", &["sales_manager"]).await;
    let ops = app.key("ops", &["operator"]).await;
    let viewer = app.key("vic", &["viewer"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(order_workflow("orders")).await;
    let (exec, id) = start_at_approval(
        &app,
        &shop,
        "order.created",
        json!({"total": 25000, "order_id": "o-1"}),
    )
    .await;
    let at = |verb: &str| format!("/api/v1/approvals/{id}/{verb}");
    let holder = |a: &Value| a["assignee"]["subject"].as_str().map(str::to_owned);

    // Nobody holds it at first; maria claims it and everyone sees who.
    let (_, a) = app.get(&format!("/api/v1/approvals/{id}"), &viewer).await;
    assert_eq!(a["assignee"], Value::Null);
    let (s, a) = app.post(&at("claim"), &maria, json!(null)).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(
        (holder(&a).as_deref(), &a["assignee"]["claimed"]),
        (Some("maria"), &json!(true))
    );
    let (_, list) = app.get("/api/v1/approvals?status=pending", &viewer).await;
    assert_eq!(holder(&list["items"][0]).as_deref(), Some("maria"));

    // Refused, changing nothing: tom while maria holds it (409), someone the request
    // does not address (403), tom letting go of maria's claim (409), a viewer or
    // approver assigning (403), an assignment to someone who cannot decide (400).
    let (s, e) = app.post(&at("claim"), &tom, json!(null)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claimed by maria"),
        "{e}"
    );
    let (s, e) = app.post(&at("claim"), &viewer, json!(null)).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let (s, e) = app.post(&at("unclaim"), &tom, json!(null)).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, _) = app.post(&at("assign"), &tom, json!({"to": "tom"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, e) = app.post(&at("assign"), &ops, json!({"to": "vic"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot assign to vic"),
        "{e}"
    );
    let (s, e) = app
        .post(&at("assign"), &ops, json!({"to": "tom", "extra": 1}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (_, a) = app.get(&format!("/api/v1/approvals/{id}"), &viewer).await;
    assert_eq!(holder(&a).as_deref(), Some("maria"));

    // An operator reassigns it to tom (a key holding the approver role).
    let (s, a) = app.post(&at("assign"), &ops, json!({"to": "tom"})).await;
    assert_eq!(s, StatusCode::OK, "{a}");
    assert_eq!(
        (
            holder(&a).as_deref(),
            a["assignee"]["assigned_by"].as_str(),
            &a["assignee"]["claimed"]
        ),
        (Some("tom"), Some("ops"), &json!(false))
    );
    // The holder lets go; then maria claims it back.
    let (s, a) = app.post(&at("unclaim"), &tom, json!(null)).await;
    assert_eq!((s, &a["assignee"]), (StatusCode::OK, &Value::Null));
    let (s, _) = app.post(&at("claim"), &maria, json!(null)).await;
    assert_eq!(s, StatusCode::OK);

    // A claim is not a lock: tom may still decide. The hold stays as the record of
    // who was on it, and no longer changes.
    let (s, d) = app
        .post(&format!("{}?wait=true", at("approve")), &tom, json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(holder(&d["approval"]).as_deref(), Some("maria"));
    let (s, _) = app.post(&at("unclaim"), &maria, json!(null)).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(until_completed(&app, &exec).await["status"], "completed");
    app.stop().await;
}

/// The console: maria claims a request on its page, tom sees it marked as hers in his
/// inbox, an operator assigns another to tom, and tom's inbox lists that one first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_assignments_in_the_console() {
    let Some(driver_path) = driver_or_skip() else {
        return;
    };
    let app = TestApp::spawn(Db::Sqlite).await;
    let maria = app.key("maria", &["sales_manager"]).await;
    let tom = app.key("tom", &["sales_manager"]).await;
    let ops = app.key("ops", &["operator"]).await;
    let shop = app.key("shop", &["service"]).await;
    app.workflow(order_workflow("orders")).await;
    let (_, older) = start_at_approval(
        &app,
        &shop,
        "order.created",
        json!({"total": 25000, "order_id": "o-older"}),
    )
    .await;
    let (_, newer) = start_at_approval(
        &app,
        &shop,
        "order.created",
        json!({"total": 26000, "order_id": "o-newer"}),
    )
    .await;
    let driver = start_driver(&driver_path).await;
    let c = browser(&driver).await;
    let text = |css: &'static str| {
        let c = c.clone();
        async move {
            c.find(Locator::Css(css))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };

    // Maria claims the newer request on its page.
    sign_in(&c, &app, &maria).await;
    c.goto(&app.url(&format!("/approvals/{newer}")))
        .await
        .unwrap();
    c.find(Locator::Id("claim"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("unclaim")).await.unwrap();
    assert!(text("#holder").await.contains("claimed by you"));
    shot(&c, "approval-claimed").await;
    sign_out(&c).await;

    // An operator assigns the older one to tom.
    sign_in(&c, &app, &ops).await;
    c.goto(&app.url(&format!("/approvals/{older}")))
        .await
        .unwrap();
    c.find(Locator::Id("assign-to"))
        .await
        .unwrap()
        .send_keys("tom")
        .await
        .unwrap();
    c.find(Locator::Id("assign"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait().for_element(Locator::Id("unclaim")).await.unwrap();
    assert!(text("#holder").await.contains("assigned to tom"));
    sign_out(&c).await;

    // Tom's inbox: his assignment first (though older), maria's claim marked.
    sign_in(&c, &app, &tom).await;
    let cards = c.find_all(Locator::Css("ul.inbox li.card")).await.unwrap();
    let mut texts = Vec::new();
    for card in &cards {
        texts.push(card.text().await.unwrap());
    }
    shot(&c, "inbox-assigned").await;
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].contains("o-older") && texts[0].contains("assigned to you"),
        "{texts:?}"
    );
    assert!(
        texts[1].contains("o-newer") && texts[1].contains("claimed by maria"),
        "{texts:?}"
    );
    c.close().await.unwrap();
    let (_, a) = app.get(&format!("/api/v1/approvals/{older}"), &tom).await;
    assert_eq!(a["assignee"]["subject"], "tom");
}
