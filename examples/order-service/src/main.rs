//! An order service that embeds Tollgate.
//!
//! `POST /orders` sends an `order.created` event; a workflow kept in this file (the
//! typed builder) records the order, and orders over 10,000 wait for a sales manager.
//! `GET /orders/{id}` shows where the order stands, `GET /inbox` what the calling user
//! may decide, and `POST /orders/{id}/decision` decides as that user. Users are this
//! service's own (`X-User`); Tollgate applies the approval rules to the principal the
//! service maps each one to. The worker loop runs on the service's runtime and stops
//! with it.

use std::time::Duration;

use actix_web::{get, post, web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context;
use serde::Deserialize;
use serde_json::{json, Value};
use tollgate::builder::{Approval, Cond, StepBuilder, SubAction, WorkflowBuilder};
use tollgate::{
    ApprovalFilter, ApprovalStatus, DecisionKind, Error, NewEvent, PageRequest, Principal, Tollgate,
};

/// How long a request waits for the order's execution to reach its next stop.
const SETTLE: Duration = Duration::from_secs(5);

/// The order workflow, versioned with the service.
fn order_workflow() -> WorkflowBuilder {
    let set_status = |status: &str| {
        SubAction::update_record("order", "{{order_id}}", json!({ "status": status }))
    };
    WorkflowBuilder::new("orders", "1")
        .on_event("order.created")
        .step(
            StepBuilder::execute(
                "register",
                [SubAction::create_record(
                    "order",
                    json!({"execution_id": "{{execution.id}}", "customer": "{{customer}}",
                           "total": "{{total}}", "status": "received"}),
                )
                .entity_id("{{order_id}}")],
            )
            .next("check"),
        )
        .step(
            StepBuilder::condition("check", Cond::field("total").gt(10_000))
                .on_true("manager")
                .on_false("release"),
        )
        .step(
            StepBuilder::approval(
                "manager",
                Approval::role("sales_manager")
                    .reason("Order {{order_id}} of {{customer}} totals {{total}}")
                    .data(json!({"order_id": "{{order_id}}", "total": "{{total}}"}))
                    .timeout("7d"),
            )
            .on_approve("release")
            .on_reject("refuse"),
        )
        .step(StepBuilder::execute("release", [set_status("released")]).next("released"))
        .step(StepBuilder::execute("refuse", [set_status("refused")]).next("refused"))
        .step(StepBuilder::allow("released"))
        .step(StepBuilder::block("refused"))
}

/// The service's users and what they are in Tollgate's terms; `None` for a stranger.
fn user(req: &HttpRequest) -> Option<Principal> {
    let name = req
        .headers()
        .get("X-User")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let roles: &[&str] = match name {
        "maria" | "mia" => &["sales_manager"],
        "sam" => &["clerk"],
        _ => return None,
    };
    Some(Principal {
        subject: name.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
    })
}

fn stranger() -> HttpResponse {
    HttpResponse::Unauthorized()
        .json(json!({"error": "say who you are in X-User (maria, mia or sam)"}))
}

/// Tollgate's refusals as this service's HTTP answers.
fn failure(err: &Error) -> HttpResponse {
    let body = json!({ "error": err.to_string() });
    match err {
        Error::NotFound(_) => HttpResponse::NotFound().json(body),
        Error::Conflict(_) | Error::StillRunning(_) => HttpResponse::Conflict().json(body),
        Error::Forbidden(_) => HttpResponse::Forbidden().json(body),
        Error::Invalid(_) | Error::Validation { .. } => HttpResponse::BadRequest().json(body),
        _ => {
            tracing::error!("tollgate failed: {err}");
            HttpResponse::ServiceUnavailable().json(body)
        }
    }
}

/// Where an order stands: its record, its execution and the decision it waits for.
async fn view(tollgate: &Tollgate, order_id: &str) -> Result<Value, Error> {
    let record = tollgate.record("order", order_id).await?;
    let execution_id = record.data["execution_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| Error::NotFound(format!("order {order_id} has no execution")))?;
    let execution = tollgate.execution(execution_id).await?;
    let pending = tollgate
        .approvals(
            &ApprovalFilter {
                execution_id: Some(execution_id),
                status: Some(ApprovalStatus::Pending),
                ..ApprovalFilter::default()
            },
            &PageRequest::first(1),
        )
        .await?;
    Ok(json!({
        "order_id": order_id,
        "status": record.data["status"],
        "total": record.data["total"],
        "execution_id": execution_id,
        "execution_status": execution.status.as_str(),
        "awaiting_decision": pending.items.first().map(|a| json!({
            "approval_id": a.id, "reason": a.reason,
        })),
    }))
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    order_id: String,
    customer: String,
    total: f64,
}

#[post("/orders")]
async fn create_order(tollgate: web::Data<Tollgate>, order: web::Json<NewOrder>) -> HttpResponse {
    let order = order.into_inner();
    if order.order_id.is_empty()
        || !order
            .order_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return HttpResponse::BadRequest()
            .json(json!({"error": "order_id: letters, digits, `-` and `_` only"}));
    }
    let sent = match tollgate
        .send_event(NewEvent {
            event_type: "order.created".into(),
            payload: json!({"order_id": order.order_id, "customer": order.customer, "total": order.total}),
            event_id: Some(order.order_id.clone()),
            source: Some("order-service".into()),
            submitted_by: Some("order-service".into()),
            ..NewEvent::default()
        })
        .await
    {
        Ok(sent) => sent,
        Err(err) => return failure(&err),
    };
    if let Some(started) = sent.started.first() {
        if let Err(err) = tollgate.wait_until_stopped(started.id, SETTLE).await {
            return failure(&err);
        }
    }
    match view(&tollgate, &order.order_id).await {
        Ok(body) if sent.duplicate => HttpResponse::Ok().json(body),
        Ok(body) => HttpResponse::Created().json(body),
        Err(err) => failure(&err),
    }
}

#[get("/orders/{id}")]
async fn get_order(tollgate: web::Data<Tollgate>, id: web::Path<String>) -> HttpResponse {
    match view(&tollgate, &id).await {
        Ok(body) => HttpResponse::Ok().json(body),
        Err(err) => failure(&err),
    }
}

#[get("/inbox")]
async fn inbox(tollgate: web::Data<Tollgate>, req: HttpRequest) -> HttpResponse {
    let Some(principal) = user(&req) else {
        return stranger();
    };
    match tollgate.inbox(&principal, &PageRequest::first(50)).await {
        Ok(page) => HttpResponse::Ok().json(
            page.items
                .iter()
                .map(|a| json!({"approval_id": a.id, "order_id": a.data["order_id"], "reason": a.reason}))
                .collect::<Vec<_>>(),
        ),
        Err(err) => failure(&err),
    }
}

#[derive(Debug, Deserialize)]
struct DecisionBody {
    approve: bool,
    reason: Option<String>,
}

#[post("/orders/{id}/decision")]
async fn decide(
    tollgate: web::Data<Tollgate>,
    req: HttpRequest,
    id: web::Path<String>,
    body: web::Json<DecisionBody>,
) -> HttpResponse {
    let Some(principal) = user(&req) else {
        return stranger();
    };
    let current = match view(&tollgate, &id).await {
        Ok(current) => current,
        Err(err) => return failure(&err),
    };
    let Some(approval_id) = current["awaiting_decision"]["approval_id"]
        .as_str()
        .and_then(|a| a.parse().ok())
    else {
        return HttpResponse::Conflict()
            .json(json!({"error": format!("order {id} waits for no decision")}));
    };
    let kind = if body.approve {
        DecisionKind::Approve
    } else {
        DecisionKind::Reject
    };
    let decided = match tollgate
        .decide(
            approval_id,
            &principal,
            kind,
            body.reason.as_deref(),
            json!({}),
        )
        .await
    {
        Ok(decided) => decided,
        Err(err) => return failure(&err),
    };
    if let Err(err) = tollgate
        .wait_until_stopped(decided.execution.id, SETTLE)
        .await
    {
        return failure(&err);
    }
    match view(&tollgate, &id).await {
        Ok(body) => HttpResponse::Ok().json(body),
        Err(err) => failure(&err),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut database_url = "sqlite:orders.db".to_owned();
    let mut listen = "127.0.0.1:3000".to_owned();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database-url" => database_url = args.next().context("--database-url URL")?,
            "--listen" => listen = args.next().context("--listen ADDRESS")?,
            other => {
                anyhow::bail!("unknown argument `{other}` (--database-url URL, --listen ADDRESS)")
            }
        }
    }

    let tollgate = Tollgate::open(&database_url)
        .await
        .with_context(|| format!("cannot open {database_url}"))?;
    match tollgate.create_workflow(order_workflow()).await {
        // Stored by an earlier start (or another copy of the service): versions are
        // immutable, so the stored one is this one.
        Ok(_) | Err(Error::Conflict(_)) => {}
        Err(err) => return Err(err).context("cannot store the order workflow"),
    }

    let (stop_worker, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn({
        let tollgate = tollgate.clone();
        async move {
            tollgate
                .run_worker(async {
                    let _ = stopped.await;
                })
                .await
        }
    });

    let data = web::Data::new(tollgate.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .service(create_order)
            .service(get_order)
            .service(inbox)
            .service(decide)
    })
    .workers(2)
    .bind(&listen)
    .with_context(|| format!("cannot listen on {listen}"))?;
    for address in server.addrs() {
        println!("order-service listening on http://{address}");
    }
    // actix-web stops on SIGINT/SIGTERM; then the worker loop stops and the executions
    // in flight reach a step boundary before the connections close.
    server.run().await.context("the HTTP server failed")?;
    let _ = stop_worker.send(());
    match worker.await {
        Ok(outcome) => outcome.context("the worker loop stopped")?,
        Err(err) => anyhow::bail!("the worker loop failed: {err}"),
    }
    tollgate.close(Duration::from_secs(10)).await;
    Ok(())
}
