//! Health, metrics and the OpenAPI document: open without a key.

use actix_web::{web, HttpResponse};

use crate::dto::{HealthDto, WorkerDto};
use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health/live", tag = "meta",
    responses((status = 200, description = "The process is alive", body = HealthDto)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(HealthDto {
        status: "ok".to_owned(),
        database: None,
        overdue_gates: None,
        warning: None,
        workers: None,
    })
}

/// Readiness: the database answers and accepts a write. Also says how many gates are overdue and which
/// worker loops beat in the last hour, and warns when a gate has been overdue for longer
/// than `--ready-overdue-warning` or no worker has beaten for `--ready-worker-warning`.
#[utoipa::path(get, path = "/health/ready", tag = "meta",
    responses(
        (status = 200, description = "Ready to serve", body = HealthDto),
        (status = 503, description = "The database is unreachable", body = crate::error::ErrorEnvelope)))]
pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::shutting_down());
    }
    if let Err(err) = state.store.ping().await {
        return Err(ApiError::unavailable(err));
    }
    let now = state.engine.clock().now();
    let overdue = state
        .store
        .overdue_gates(now)
        .await
        .map_err(ApiError::unavailable)?;
    let late = overdue
        .oldest_deadline
        .map(|d| now - d)
        .filter(|late| late.to_std().is_ok_and(|late| late > state.overdue_warning));
    let mut warnings = Vec::new();
    if let Some(late) = late {
        warnings.push(format!(
            "{} gate(s) passed their deadline, the oldest {} s ago, and no worker has claimed them: is a worker loop running against this database?",
            overdue.count,
            late.num_seconds()
        ));
    }
    let workers = state
        .store
        .list_workers(now - chrono::TimeDelta::hours(1))
        .await
        .map_err(ApiError::unavailable)?;
    if let Some(silence) = worker_silence(&workers, now, state.worker_warning) {
        warnings.push(silence);
    }
    let warning = (!warnings.is_empty()).then(|| warnings.join(" "));
    if let Some(warning) = &warning {
        tracing::warn!("{warning}");
    }
    Ok(HttpResponse::Ok().json(HealthDto {
        status: "ready".to_owned(),
        database: Some("ok".to_owned()),
        overdue_gates: Some(overdue.count),
        warning,
        workers: Some(workers.iter().map(WorkerDto::from).collect()),
    }))
}

/// The warning when no worker loop has beaten within `after`: deadlines, take-overs and
/// schedule ticks wait for one.
fn worker_silence(
    workers: &[tollgate_model::records::WorkerBeat],
    now: tollgate_model::records::Timestamp,
    after: std::time::Duration,
) -> Option<String> {
    let latest = workers.first();
    let silent_for = latest.map(|w| now - w.beat_at);
    if silent_for.is_some_and(|s| s.to_std().map_or(true, |s| s <= after)) {
        return None;
    }
    let last = match latest {
        Some(w) => format!(
            "the last one came from `{}` {} s ago",
            w.worker_id,
            (now - w.beat_at).num_seconds()
        ),
        None => "none in the last hour".to_owned(),
    };
    Some(format!(
        "No worker loop has recorded a heartbeat for {} ({last}): deadlines, abandoned executions and schedules wait until one runs (`tollgate-resume-worker`, or `tollgate-api` with its embedded worker).",
        tollgate_model::Duration::from(after)
    ))
}

/// How long a scrape waits for the database's gauges.
const DATABASE_GAUGES_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "meta",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain", body = String)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics::gauge!("tollgate_executions_in_flight").set(state.tasks.in_flight() as f64);
    // The database's view, bounded: a scrape while the database does not answer still
    // serves this process's metrics (its gauges keep their last values) and says so in
    // `tollgate_database_reachable`, instead of failing the whole scrape.
    let read = async {
        let mut answered = true;
        match state.status_gauges.read(&state.store).await {
            Ok(counts) => {
                for (status, n) in counts {
                    metrics::gauge!("tollgate_executions", "status" => status.as_str())
                        .set(n as f64);
                }
            }
            Err(err) => {
                answered = false;
                tracing::warn!("cannot count executions for /metrics: {err}");
            }
        }
        // What waits for people and for workers: a deadline that passed with nobody claiming
        // it means no worker loop is running against this database.
        let now = state.engine.clock().now();
        match state.store.overdue_gates(now).await {
            Ok(overdue) => {
                metrics::gauge!("tollgate_gates_overdue").set(overdue.count as f64);
                let age = overdue
                    .oldest_deadline
                    .map_or(0.0, |d| (now - d).num_milliseconds().max(0) as f64 / 1000.0);
                metrics::gauge!("tollgate_gates_overdue_oldest_seconds").set(age);
            }
            Err(err) => {
                answered = false;
                tracing::warn!("cannot count overdue gates for /metrics: {err}");
            }
        }
        match state.store.count_pending_approvals().await {
            Ok(n) => metrics::gauge!("tollgate_approvals_pending").set(n as f64),
            Err(err) => {
                answered = false;
                tracing::warn!("cannot count pending approvals for /metrics: {err}");
            }
        }
        match state.store.count_overdue_approvals(now).await {
            Ok(n) => metrics::gauge!("tollgate_approvals_overdue").set(n as f64),
            Err(err) => {
                answered = false;
                tracing::warn!("cannot count overdue approvals for /metrics: {err}");
            }
        }
        // Which worker loops run: those that beat within `--ready-worker-warning`, and how
        // long ago the latest beat came (absent until a worker has beaten in the last hour).
        match state
            .store
            .list_workers(now - chrono::TimeDelta::hours(1))
            .await
        {
            Ok(workers) => {
                let alive = workers
                    .iter()
                    .filter(|w| {
                        (now - w.beat_at)
                            .to_std()
                            .map_or(true, |s| s <= state.worker_warning)
                    })
                    .count();
                metrics::gauge!("tollgate_workers_alive").set(alive as f64);
                if let Some(latest) = workers.first() {
                    let age = (now - latest.beat_at).num_milliseconds().max(0) as f64 / 1000.0;
                    metrics::gauge!("tollgate_worker_heartbeat_age_seconds").set(age);
                }
            }
            Err(err) => {
                answered = false;
                tracing::warn!("cannot read worker heartbeats for /metrics: {err}");
            }
        }
        answered
    };
    let reachable = tokio::time::timeout(DATABASE_GAUGES_LIMIT, read)
        .await
        .is_ok();
    if !reachable {
        tracing::warn!(
            "the database did not answer the /metrics reads within {DATABASE_GAUGES_LIMIT:?}"
        );
    }
    metrics::gauge!("tollgate_database_reachable").set(if reachable { 1.0 } else { 0.0 });
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(crate::telemetry::metrics().render())
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3 document", body = Object)))]
pub async fn openapi(document: web::Data<ApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document.0.clone())
}

/// The OpenAPI document, serialised once when the server starts (the composition root
/// builds it from the route modules, so this module does not depend on them).
#[derive(Debug, Clone)]
pub struct ApiDocument(pub web::Bytes);
