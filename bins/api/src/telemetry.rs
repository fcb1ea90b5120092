//! Logs, metrics and the per-request middleware.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse};
use futures_util::FutureExt;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::ApiError;

/// The route template a request matched (`/api/v1/approvals/{id}/approve`), attached to
/// each registered resource so the request metrics label by template without routing
/// the request a second time.
#[derive(Debug, Clone, Copy)]
pub struct RouteTemplate(pub &'static str);

/// The process's Prometheus recorder, installed on first use.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(tollgate_bootstrap::DECISION_SECONDS.into()),
                &tollgate_bootstrap::DECISION_SECONDS_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &tollgate_bootstrap::SECONDS_BUCKETS,
                )
            })
            .map_or_else(
                |_| PrometheusBuilder::new().build_recorder(),
                PrometheusBuilder::build_recorder,
            );
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only its own view"
            );
        }
        tollgate_bootstrap::describe_metrics();
        handle
    })
}

/// How often [`keep_metrics`] folds the recorder's pending histogram samples into their
/// buckets.
pub const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Folds the recorder's pending histogram samples into their buckets every `every`,
/// until `stop`. Each recorded sample waits in a queue until a scrape of `/metrics` or
/// an upkeep takes it; a server nobody scrapes would otherwise hold every latency it
/// ever recorded — memory growing with each request served (about 25 MiB per million
/// events on the approval benchmark).
pub async fn keep_metrics(every: Duration, stop: tokio_util::sync::CancellationToken) {
    let handle = metrics();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => handle.run_upkeep(),
            () = stop.cancelled() => return,
        }
    }
}

/// The id of one request, echoed in `X-Request-Id` and on every log line of it.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(pub Uuid);

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per request: an id, a span, a log line, the latency histogram by route template, and
/// the guarantee that every error leaves as the JSON envelope (whatever layer made it).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let id = RequestId(Uuid::now_v7());
    req.extensions_mut().insert(id);
    let method = req.method().clone();
    // A decision link's path is its secret: logged without the token.
    let path = match req.path().strip_prefix("/d/") {
        Some(_) => "/d/…".to_owned(),
        None => req.path().to_owned(),
    };
    let span = tracing::info_span!("request", request_id = %id.0, method = %method, path = %path);
    let began = Instant::now();
    // A panic in a handler is a bug; it must still end as a 500 envelope (logged with
    // the request id), never as a dropped connection.
    // A request that outlives its budget (a database that stopped answering) is answered
    // 503 and its handler dropped, which releases what it held.
    let budget = req
        .app_data::<actix_web::web::Data<crate::state::AppState>>()
        .map(|state| {
            let waits = req.query_string().split('&').any(|p| p == "wait=true");
            let mcp_wait = (req.path() == "/mcp")
                .then(|| req.app_data::<actix_web::web::Data<crate::mcp::Gateway>>())
                .flatten()
                .map(|gateway| gateway.wait_limit);
            state.request_timeout
                + match mcp_wait {
                    Some(limit) => limit,
                    None if waits => state.wait_timeout,
                    None => Duration::ZERO,
                }
        });
    let call = std::panic::AssertUnwindSafe(next.call(req).instrument(span.clone())).catch_unwind();
    let outcome = match budget {
        Some(budget) => match tokio::time::timeout(budget, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                span.in_scope(|| tracing::error!(budget = ?budget, "request timed out"));
                metrics::histogram!(
                    "tollgate_http_request_duration_seconds",
                    "method" => method.to_string(),
                    "route" => "timed_out".to_owned(),
                    "status" => "503".to_owned()
                )
                .record(began.elapsed().as_secs_f64());
                return Err(ApiError::timed_out(budget).into());
            }
        },
        None => call.await,
    };
    let mut res = match outcome {
        Ok(Ok(res)) => res.map_into_boxed_body(),
        Ok(Err(err)) => {
            // An error no handler turned into a response: still the envelope.
            if err.as_error::<ApiError>().is_some() {
                return Err(err);
            }
            let status = err.as_response_error().status_code();
            span.in_scope(|| tracing::warn!(status = status.as_u16(), cause = %err, "request failed outside a handler"));
            return Err(ApiError::for_status(status).into());
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            span.in_scope(|| tracing::error!(panic = %message, "handler panicked"));
            return Err(ApiError::internal(format!("handler panicked: {message}")).into());
        }
    };
    // The API's resources carry their template; other routes (the console) are matched
    // again to find theirs.
    let route = match res.request().app_data::<RouteTemplate>() {
        Some(template) => template.0.to_owned(),
        None => res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned()),
    };
    let status = res.status();
    if status.is_client_error() || status.is_server_error() {
        // JSON is the API's envelope already; HTML is a console page that explains itself.
        let is_json = res
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
        let cause = res
            .response()
            .error()
            .and_then(|e| e.as_error::<ApiError>())
            .and_then(|e| e.cause().map(str::to_owned))
            .or_else(|| res.response().error().map(ToString::to_string));
        if status.is_server_error() {
            span.in_scope(|| {
                tracing::error!(
                    status = status.as_u16(),
                    cause = cause.as_deref().unwrap_or("unknown"),
                    "request failed"
                );
            });
        }
        if !is_json {
            let envelope = ApiError::for_status(status).envelope();
            let (req, _) = res.into_parts();
            let body = HttpResponse::build(status).json(envelope);
            res = ServiceResponse::new(req, body);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id.0.to_string()) {
        res.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    let elapsed = began.elapsed();
    metrics::histogram!(
        "tollgate_http_request_duration_seconds",
        "method" => method.to_string(),
        "route" => route.clone(),
        "status" => status.as_u16().to_string()
    )
    .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(status = status.as_u16(), route = %route, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "request");
    });
    Ok(res)
}
