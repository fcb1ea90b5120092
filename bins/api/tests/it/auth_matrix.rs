//! Every route × {no key, revoked key, viewer, service, operator, approver of another
//! role, admin}: 401 without a valid key, 403 without the permission, otherwise past
//! the auth checks (whatever the route then answers).

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{Db, TestApp};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Nothing,
    AnyKey,
    Write,
    Execute,
    Events,
    Control,
    Admin,
    /// Deciding an approval addressed to role `finance`.
    Decide,
}

fn allowed(needs: Needs, role: &str) -> bool {
    match needs {
        Needs::Nothing | Needs::AnyKey => true,
        Needs::Write | Needs::Execute | Needs::Control => matches!(role, "operator" | "admin"),
        Needs::Events => matches!(role, "service" | "operator" | "admin"),
        Needs::Admin => role == "admin",
        Needs::Decide => matches!(role, "finance" | "admin"),
    }
}

/// The roles the OpenAPI document lists for a route with these needs (`None`: open).
fn documented_roles(needs: Needs) -> Option<Vec<String>> {
    let roles: &[&str] = match needs {
        Needs::Nothing => return None,
        Needs::AnyKey => &[],
        Needs::Write | Needs::Execute | Needs::Control => &["operator", "admin"],
        Needs::Events => &["service", "operator", "admin"],
        Needs::Admin => &["admin"],
        Needs::Decide => &["approver", "admin"],
    };
    Some(roles.iter().map(|r| (*r).to_owned()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_kind_of_caller() {
    let app = TestApp::spawn(Db::Sqlite).await;
    let admin = app.admin.clone();
    let revoked = app.key("revoked", &["admin"]).await;
    let (_, keys) = app.get("/api/v1/api-keys", &admin).await;
    let revoked_id = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "revoked")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Used once before it is revoked, so that this server has verified (and cached) it:
    // the revocation must still take effect at once.
    assert_eq!(
        app.get("/api/v1/api-keys", &revoked).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/v1/api-keys/{revoked_id}"),
            Some(&admin),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    let callers: Vec<(&str, Option<String>)> = vec![
        ("none", None),
        ("revoked", Some(revoked)),
        ("viewer", Some(app.key("v", &["viewer"]).await)),
        ("service", Some(app.key("s", &["service"]).await)),
        ("operator", Some(app.key("o", &["operator"]).await)),
        (
            "sales_manager",
            Some(app.key("m", &["sales_manager"]).await),
        ),
        ("admin", Some(admin.clone())),
    ];
    let feeder = app.key("feeder", &["service"]).await;

    // Two executions paused at a finance approval needing 3 votes (so an admin vote
    // does not settle them); one for approve, one for reject.
    let wf = app
        .workflow(json!({
            "workflow_id": "spend", "version": "1", "trigger": {"type": "event", "event": "spend.requested"},
            "steps": [
                {"id": "gate", "type": "approval", "approval": {"approvers": {"role": "finance"}, "required": 3}, "on_approve": "ok", "on_reject": "no"},
                {"id": "ok", "type": "action", "action": "allow"},
                {"id": "no", "type": "action", "action": "block"}]}))
        .await;
    let mut approvals = Vec::new();
    for _ in 0..2 {
        let (_, b) = app
            .post(
                "/api/v1/events?wait=true",
                &feeder,
                json!({"event_type": "spend.requested", "payload": {}}),
            )
            .await;
        let exec = b["started"][0].as_str().unwrap().to_owned();
        let (_, a) = app
            .get(&format!("/api/v1/approvals?execution_id={exec}"), &admin)
            .await;
        approvals.push(a["items"][0]["id"].as_str().unwrap().to_owned());
    }
    let unknown = uuid::Uuid::now_v7();
    let def = json!({"workflow_id": "m", "version": "1", "steps": [{"id": "a", "type": "action", "action": "allow"}]});

    let spec = |method: &Method, path: &str| -> (Needs, String, Option<Value>) {
        let with_id = |p: &str| p.replace("{id}", &unknown.to_string());
        match (method.as_str(), path) {
            (_, "/health/live" | "/health/ready" | "/metrics" | "/api/v1/openapi.json") => {
                (Needs::Nothing, path.into(), None)
            }
            ("POST", "/api/v1/api-keys") => (
                Needs::Admin,
                path.into(),
                Some(json!({"name": "matrix", "roles": ["viewer"]})),
            ),
            (_, p) if p.starts_with("/api/v1/api-keys") => (Needs::Admin, with_id(p), None),
            ("POST", "/api/v1/workflows/validate") => {
                (Needs::AnyKey, path.into(), Some(def.clone()))
            }
            ("POST", "/api/v1/workflows/{id}/schedules") => {
                (Needs::Write, with_id(path), Some(json!({"cron": "@daily"})))
            }
            ("PUT" | "DELETE", p) if p.starts_with("/api/v1/schedules") => {
                (Needs::Write, with_id(p), Some(json!({"cron": "@daily"})))
            }
            ("POST", "/api/v1/workflows/{id}/execute") => (
                Needs::Execute,
                format!("/api/v1/workflows/{wf}/execute"),
                Some(json!({})),
            ),
            ("POST" | "PUT" | "DELETE", p) if p.starts_with("/api/v1/workflows") => {
                (Needs::Write, with_id(p), Some(def.clone()))
            }
            ("POST", "/api/v1/events") => (
                Needs::Events,
                path.into(),
                Some(json!({"event_type": "matrix.ping", "payload": {}})),
            ),
            ("POST", "/api/v1/executions/{id}/events") => (
                Needs::Events,
                with_id(path),
                Some(json!({"event_type": "x", "payload": {}})),
            ),
            ("GET", "/api/v1/executions/quarantined") => (Needs::Control, path.into(), None),
            ("POST", p) if p.starts_with("/api/v1/executions") => {
                (Needs::Control, with_id(p), Some(json!({})))
            }
            ("POST", "/api/v1/approvals/{id}/approve") => (
                Needs::Decide,
                format!("/api/v1/approvals/{}/approve", approvals[0]),
                Some(json!({})),
            ),
            // Any key may call it; each request is then refused or decided by its own
            // rules (a dry run here, so that nothing changes).
            ("POST", "/api/v1/approvals/decide") => (
                Needs::AnyKey,
                path.into(),
                Some(json!({"ids": [approvals[0]], "decision": "approve", "dry_run": true})),
            ),
            ("POST", "/api/v1/approvals/{id}/comments") => (
                Needs::AnyKey,
                format!("/api/v1/approvals/{}/comments", approvals[0]),
                Some(json!({"body": "a question"})),
            ),
            // Anyone may delegate their own requests, list their delegations, and revoke
            // their own (an unknown id is a 404 for everyone).
            ("POST", "/api/v1/delegations") => (
                Needs::AnyKey,
                path.into(),
                Some(
                    json!({"to": "stand-in", "ends_at": "2999-01-01T00:00:00Z", "starts_at": "2998-06-01T00:00:00Z"}),
                ),
            ),
            ("GET", "/api/v1/delegations") => (Needs::AnyKey, path.into(), None),
            ("DELETE", "/api/v1/delegations/{id}") => (Needs::AnyKey, with_id(path), None),
            ("POST", "/api/v1/approvals/{id}/claim") => (
                Needs::Decide,
                format!("/api/v1/approvals/{}/claim", approvals[0]),
                None,
            ),
            // Anyone may let go of their own hold (a release of nothing changes
            // nothing); someone else's is a 409, not a 403.
            ("POST", "/api/v1/approvals/{id}/unclaim") => (
                Needs::AnyKey,
                format!("/api/v1/approvals/{}/unclaim", approvals[0]),
                None,
            ),
            ("POST", "/api/v1/approvals/{id}/assign") => (
                Needs::Control,
                format!("/api/v1/approvals/{}/assign", approvals[0]),
                Some(json!({"to": "admin"})),
            ),
            ("POST", "/api/v1/approvals/{id}/links") => (
                Needs::Control,
                format!("/api/v1/approvals/{}/links", approvals[0]),
                Some(json!({})),
            ),
            ("POST", "/api/v1/approvals/{id}/reject") => (
                Needs::Decide,
                format!("/api/v1/approvals/{}/reject", approvals[1]),
                Some(json!({"reason": "no"})),
            ),
            ("GET", p) => (
                Needs::AnyKey,
                with_id(&p.replace("{entity}", "order").replace("{entity_id}", "1")),
                None,
            ),
            other => panic!("the auth matrix does not know route {other:?}: add it"),
        }
    };

    // The OpenAPI document (and docs/api.md, generated from it) names the roles each
    // route needs; this matrix is what the server really does, so they must agree.
    let (_, doc) = app
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    let mut checked = 0;
    for (method, template) in tollgate_api::routes::registered() {
        let method = Method::from_bytes(method.as_str().as_bytes()).unwrap();
        let (needs, path, body) = spec(&method, template);
        let documented = doc["paths"][template][method.as_str().to_lowercase()]["security"][0]
            .get("bearer")
            .map(|roles| {
                roles
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            });
        assert_eq!(
            documented,
            documented_roles(needs),
            "{method} {template}: the OpenAPI document's roles disagree with the server"
        );
        for (role, key) in &callers {
            let (status, answer) = app
                .call(method.clone(), &path, key.as_deref(), body.clone())
                .await;
            let expected_401 = needs != Needs::Nothing && matches!(*role, "none" | "revoked");
            if expected_401 {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {template} as {role}: {answer}"
                );
                assert_eq!(answer["error"]["code"], "unauthorized");
            } else if allowed(needs, role) {
                assert!(
                    status != StatusCode::UNAUTHORIZED
                        && status != StatusCode::FORBIDDEN
                        && !status.is_server_error(),
                    "{method} {template} as {role} should pass auth, got {status}: {answer}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {template} as {role}: {answer}"
                );
                assert_eq!(answer["error"]["code"], "forbidden");
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        tollgate_api::routes::registered().len() * callers.len()
    );
    app.stop().await;
}
