//! The served OpenAPI document describes exactly the registered routes.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};

use crate::{Db, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_lists_exactly_the_registered_routes() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let (status, doc) = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let registered: BTreeSet<(String, String)> = tollgate_api::routes::registered()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_owned(), p.to_owned()))
        .collect();
    let missing: Vec<_> = registered.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&registered).collect();
    assert!(
        missing.is_empty(),
        "registered but not documented: {missing:?}"
    );
    assert!(extra.is_empty(), "documented but not registered: {extra:?}");

    // And the server really routes each of them (a 404 here would be an unknown-route
    // 404, whose message names the route).
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", &uuid::Uuid::now_v7().to_string())
            .replace("{entity}", "e")
            .replace("{entity_id}", "1");
        let (status, body) = app
            .call(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &concrete,
                None,
                None,
            )
            .await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            !body["error"]["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("no route"),
            "{method} {path} is documented but not routed"
        );
    }
    // Every operation documents its error envelope or is open.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let secured = op.get("security").is_some();
            let responses = op["responses"].as_object().unwrap();
            assert!(
                !secured || responses.contains_key("401"),
                "{method} {path} lacks its 401"
            );
        }
    }
    app.stop().await;
}
