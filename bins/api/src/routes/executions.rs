//! Executions: lists, traces, the resume audit, and operator commands.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::Value;
use tollgate_model::{ExecutionStatus, PauseReason};
use tollgate_store::ExecutionFilter;
use uuid::Uuid;

use super::{parse_id, settle, Json, OptionalJson, PageParams, WaitParams};
use crate::auth::{Caller, Permission};
use crate::dto::ExecutionQuery;
use crate::dto::{
    BulkMigrateDto, BulkRetryDto, DirectEventDto, ExecutionDto, ExecutionList, MigrateDto,
    MigrationItemDto, MigrationReportDto, NotificationDto, NotificationList, QuarantinedList,
    ReasonDto, ResumeDto, ResumeRequestDto, ResumeRequestList, RetryDto, RetryItemDto,
    RetryReportDto, StepRecordDto, TraceDto,
};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::state::AppState;
use tollgate_resumer::{
    MigrateCommand, MigrationItem, MigrationOutcome, MigrationSelection, RetryCommand,
    RetryOutcome, RetrySelection,
};

/// Parses a `paused_reason` filter.
pub fn parse_reason(text: &str) -> ApiResult<PauseReason> {
    [
        PauseReason::Approval,
        PauseReason::Manual,
        PauseReason::Event,
    ]
    .into_iter()
    .find(|r| r.as_str() == text)
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown paused_reason `{text}` (expected approval, manual or event)"
        ))
    })
}

fn list_of(page: tollgate_store::Page<tollgate_model::records::Execution>) -> ExecutionList {
    ExecutionList {
        items: page.items.into_iter().map(ExecutionDto::from).collect(),
        next_cursor: page.next_cursor,
    }
}

/// Executions, newest first.
#[utoipa::path(get, path = "/api/v1/executions", tag = "executions", params(ExecutionQuery, PageParams),
    responses((status = 200, body = ExecutionList), (status = 400, description = "unknown status or bad cursor", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    _caller: Caller,
    query: web::Query<ExecutionQuery>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<ExecutionStatus>)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let paused_reason = query
        .paused_reason
        .as_deref()
        .map(parse_reason)
        .transpose()?;
    // One name for one thing: `workflow_id` is what a definition calls its workflow, so
    // the author's key is accepted here too, besides the server's uuid of a version.
    let (workflow_id, key) = match query.workflow_id.as_deref() {
        Some(text) => match Uuid::parse_str(text) {
            Ok(id) => (Some(id), None),
            Err(_) => (None, Some(text.to_owned())),
        },
        None => (None, None),
    };
    let workflow_key = match (key, query.workflow_key.clone()) {
        (Some(a), Some(b)) if a != b => {
            return Err(ApiError::bad_request(format!(
                "workflow_id `{a}` and workflow_key `{b}` name different workflows"
            )))
        }
        (a, b) => a.or(b),
    };
    let filter = ExecutionFilter {
        status,
        workflow_id,
        workflow_key,
        paused_reason,
        approver_role: query.approver_role.clone(),
    };
    let page = state
        .store
        .list_executions(&filter, &page.request()?)
        .await?;
    Ok(HttpResponse::Ok().json(list_of(page)))
}

/// `paused` and `waiting` executions, oldest pause first.
#[utoipa::path(get, path = "/api/v1/executions/paused", tag = "executions", params(PageParams),
    responses((status = 200, body = ExecutionList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn paused(
    state: web::Data<AppState>,
    _caller: Caller,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let page = state.store.list_gated(&page.request()?).await?;
    Ok(HttpResponse::Ok().json(list_of(page)))
}

/// Executions set aside because what was stored for them could not be read, most
/// recent first, each with the stored row as it was. Operators repair or discard them;
/// `tollgate_quarantined_executions_total` counts them.
#[utoipa::path(get, path = "/api/v1/executions/quarantined", tag = "executions", params(PageParams),
    responses((status = 200, body = QuarantinedList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn quarantined(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ControlExecutions)?;
    let page = state.store.list_quarantined(&page.request()?).await?;
    Ok(HttpResponse::Ok().json(QuarantinedList {
        items: page.items.iter().map(crate::dto::quarantined).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One execution.
#[utoipa::path(get, path = "/api/v1/executions/{id}", tag = "executions",
    params(("id" = Uuid, Path, description = "execution id")),
    responses((status = 200, body = ExecutionDto), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "execution")?;
    let execution = state.store.get_execution(id).await?;
    Ok(HttpResponse::Ok().json(ExecutionDto::from(execution)))
}

/// The execution, its step records in order and the definition it runs.
#[utoipa::path(get, path = "/api/v1/executions/{id}/trace", tag = "executions",
    params(("id" = Uuid, Path, description = "execution id")),
    responses((status = 200, body = TraceDto), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn trace(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "execution")?;
    let execution = state.store.get_execution(id).await?;
    let steps = state.store.list_steps(id).await?;
    let definition = state.store.get_snapshot(&execution.snapshot_id).await?;
    Ok(HttpResponse::Ok().json(TraceDto {
        execution: ExecutionDto::from(execution),
        steps: steps.iter().map(StepRecordDto::from).collect(),
        definition: serde_json::to_value(definition.as_ref()).map_err(ApiError::internal)?,
    }))
}

/// Every attempt to wake the execution, accepted or refused, in order.
#[utoipa::path(get, path = "/api/v1/executions/{id}/resume-requests", tag = "executions",
    params(("id" = Uuid, Path, description = "execution id")),
    responses((status = 200, body = ResumeRequestList), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn resume_requests(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "execution")?;
    state.store.get_execution(id).await?;
    let rows = state.store.list_resume_requests(id).await?;
    Ok(HttpResponse::Ok().json(ResumeRequestList {
        items: rows.iter().map(ResumeRequestDto::from).collect(),
        next_cursor: None,
    }))
}

/// The execution's notifications with their delivery: status, attempts, the last
/// error and the next attempt (docs/notifications.md, "The outbox").
#[utoipa::path(get, path = "/api/v1/executions/{id}/notifications", tag = "executions",
    params(("id" = Uuid, Path, description = "execution id"), PageParams),
    responses((status = 200, body = NotificationList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn notifications(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "execution")?;
    state.store.get_execution(id).await?;
    let filter = tollgate_store::NotificationFilter {
        execution_id: Some(id),
    };
    let page = state
        .store
        .list_notifications(&filter, &page.request()?)
        .await?;
    Ok(HttpResponse::Ok().json(NotificationList {
        items: page.items.iter().map(NotificationDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Pauses a running execution (at its next step boundary when a step is in flight:
/// `pause_requested` is then true).
#[utoipa::path(post, path = "/api/v1/executions/{id}/pause", tag = "executions",
    params(("id" = Uuid, Path, description = "execution id")), request_body = ReasonDto,
    responses((status = 200, body = ExecutionDto), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, description = "not running", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn pause(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: OptionalJson<ReasonDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ControlExecutions)?;
    let id = parse_id(&id, "execution")?;
    let execution = state
        .control
        .pause(id, Some(caller.subject()), body.0.reason.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(ExecutionDto::from(execution)))
}

/// Resumes a manually paused execution, merging `data` into its context.
#[utoipa::path(post, path = "/api/v1/executions/{id}/resume", tag = "executions",
    params(("id" = Uuid, Path, description = "execution id"), WaitParams), request_body = ResumeDto,
    responses((status = 200, body = ExecutionDto), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "not manually paused (approval gates resume by deciding)", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn resume(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    wait: web::Query<WaitParams>,
    body: OptionalJson<ResumeDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ControlExecutions)?;
    let id = parse_id(&id, "execution")?;
    let body = body.0;
    let mut data = body.data;
    if let (Some(reason), Value::Object(map)) = (&body.reason, &mut data) {
        map.entry("resume_reason")
            .or_insert_with(|| Value::String(reason.clone()));
    }
    let progress = state
        .control
        .resume(id, Some(caller.subject()), data)
        .await?;
    let execution = settle(&state, progress, wait.wait).await?;
    Ok(HttpResponse::Ok().json(ExecutionDto::from(execution)))
}

/// Cancels an execution that has not ended; its open approvals become `cancelled`.
#[utoipa::path(post, path = "/api/v1/executions/{id}/cancel", tag = "executions",
    params(("id" = Uuid, Path, description = "execution id")), request_body = ReasonDto,
    responses((status = 200, body = ExecutionDto), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, description = "already ended", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn cancel(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: OptionalJson<ReasonDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ControlExecutions)?;
    let id = parse_id(&id, "execution")?;
    let execution = state
        .control
        .cancel(id, Some(caller.subject()), body.0.reason.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(ExecutionDto::from(execution)))
}

/// Starts a `failed` or `timed_out` execution again, from the step that stopped it or
/// a chosen top-level step (docs/operations.md, "Retrying a failed execution").
#[utoipa::path(post, path = "/api/v1/executions/{id}/retry", tag = "executions",
    params(("id" = Uuid, Path, description = "execution id"), WaitParams), request_body = RetryDto,
    responses((status = 200, body = ExecutionDto), (status = 400, description = "no reason, or an unknown step", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "not failed or timed_out, or retried by someone else first", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn retry(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
    wait: web::Query<WaitParams>,
    body: Json<RetryDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ControlExecutions)?;
    let id = parse_id(&id, "execution")?;
    let origin = origin(&req, "api");
    let progress = state
        .control
        .retry(
            id,
            RetryCommand {
                from_step: body.0.from_step.as_deref(),
                reason: &body.0.reason,
                actor: Some(caller.subject()),
                origin: origin.as_deref(),
            },
        )
        .await?;
    let execution = settle(&state, progress, wait.wait).await?;
    Ok(HttpResponse::Ok().json(ExecutionDto::from(execution)))
}

/// Retries the `failed` (or `timed_out`) executions a filter selects, at most `limit`
/// per call, each on its own; `dry_run` changes nothing and says what each retry would do.
#[utoipa::path(post, path = "/api/v1/executions/retry", tag = "executions",
    request_body = BulkRetryDto,
    responses((status = 200, body = RetryReportDto), (status = 400, description = "bad filter, limit or reason", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn retry_bulk(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Json<BulkRetryDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ControlExecutions)?;
    let body = body.0;
    let status = bulk_status(body.status.as_deref(), ExecutionStatus::Failed)?;
    let selection = RetrySelection {
        status,
        workflow_key: body.workflow_id,
        failed_step: body.failed_step,
        limit: body.limit.unwrap_or(DEFAULT_BULK),
        cursor: body.cursor,
    };
    let origin = origin(&req, "api");
    let report = state
        .control
        .retry_many(
            &selection,
            RetryCommand {
                from_step: body.from_step.as_deref(),
                reason: &body.reason,
                actor: Some(caller.subject()),
                origin: origin.as_deref(),
            },
            body.dry_run,
        )
        .await?;
    let items = report
        .items
        .into_iter()
        .map(|item| {
            let (outcome, reason) = match item.outcome {
                RetryOutcome::Retried => ("retried", None),
                RetryOutcome::WouldRetry => ("would_retry", None),
                RetryOutcome::Refused(reason) => ("refused", Some(reason)),
            };
            RetryItemDto {
                execution_id: item.execution_id,
                outcome: outcome.into(),
                from_step: item.from_step,
                reason,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(RetryReportDto {
        dry_run: body.dry_run,
        items,
        next_cursor: report.next_cursor,
    }))
}

/// Moves a paused or waiting execution to another version of its workflow; its gate
/// (pending approval or wait, deadline) carries over (docs/operations.md, "Migrating
/// paused executions").
#[utoipa::path(post, path = "/api/v1/executions/{id}/migrate", tag = "executions",
    params(("id" = Uuid, Path, description = "execution id")), request_body = MigrateDto,
    responses((status = 200, body = MigrationItemDto), (status = 400, description = "unknown version", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "not at a gate, or the target cannot continue its gate (the reason says why)", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn migrate(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
    body: Json<MigrateDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ControlExecutions)?;
    let id = parse_id(&id, "execution")?;
    let body = body.0;
    let origin = origin(&req, "api");
    let item = state
        .control
        .migrate(
            id,
            MigrateCommand {
                to_version: &body.to_version,
                step_map: &body.step_map,
                reason: body.reason.as_deref(),
                actor: Some(caller.subject()),
                origin: origin.as_deref(),
            },
            body.dry_run,
        )
        .await?;
    Ok(HttpResponse::Ok().json(migration_item(item)))
}

/// Moves the paused (or waiting) executions of a workflow to another version, at most
/// `limit` per call, each on its own; `dry_run` changes nothing.
#[utoipa::path(post, path = "/api/v1/executions/migrate", tag = "executions",
    request_body = BulkMigrateDto,
    responses((status = 200, body = MigrationReportDto), (status = 400, description = "unknown version, bad status or limit", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn migrate_bulk(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Json<BulkMigrateDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ControlExecutions)?;
    let body = body.0;
    let status = bulk_status(body.status.as_deref(), ExecutionStatus::Paused)?;
    let selection = MigrationSelection {
        workflow_key: body.workflow_id,
        from_version: body.from_version,
        status,
        limit: body.limit.unwrap_or(DEFAULT_BULK),
        cursor: body.cursor,
    };
    let origin = origin(&req, "api");
    let report = state
        .control
        .migrate_many(
            &selection,
            MigrateCommand {
                to_version: &body.to_version,
                step_map: &body.step_map,
                reason: body.reason.as_deref(),
                actor: Some(caller.subject()),
                origin: origin.as_deref(),
            },
            body.dry_run,
        )
        .await?;
    Ok(HttpResponse::Ok().json(MigrationReportDto {
        dry_run: body.dry_run,
        items: report.items.into_iter().map(migration_item).collect(),
        next_cursor: report.next_cursor,
    }))
}

fn migration_item(item: MigrationItem) -> MigrationItemDto {
    let (outcome, reason) = match item.outcome {
        MigrationOutcome::Migrated => ("migrated", None),
        MigrationOutcome::WouldMigrate => ("would_migrate", None),
        MigrationOutcome::Refused(reason) => ("refused", Some(reason)),
    };
    MigrationItemDto {
        execution_id: item.execution_id,
        outcome: outcome.into(),
        from_version: item.from_version,
        gate_step: item.gate_step,
        reason,
    }
}

/// How many executions a bulk retry or migration looks at when the request does not say.
const DEFAULT_BULK: u32 = 50;

/// Where a command came from, for the audit: the channel and the peer's address as the
/// server saw it (not a forwarding header a client could write).
pub(crate) fn origin(req: &HttpRequest, channel: &str) -> Option<String> {
    req.peer_addr()
        .map(|addr| format!("{channel} from {}", addr.ip()))
}

/// A bulk command's `status`: `default` when absent.
fn bulk_status(text: Option<&str>, default: ExecutionStatus) -> ApiResult<ExecutionStatus> {
    text.map_or(Ok(default), |text| {
        text.parse::<ExecutionStatus>()
            .map_err(|e| ApiError::bad_request(format!("`status`: {e}")))
    })
}

/// Delivers an event to one waiting execution.
#[utoipa::path(post, path = "/api/v1/executions/{id}/events", tag = "executions",
    params(("id" = Uuid, Path, description = "execution id"), WaitParams), request_body = DirectEventDto,
    responses((status = 200, body = ExecutionDto), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "not waiting for this event type (or its match does not hold)", body = ErrorEnvelope)),
    security(("bearer" = ["service", "operator", "admin"])))]
pub async fn deliver(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    wait: web::Query<WaitParams>,
    body: Json<DirectEventDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::SendEvents)?;
    let id = parse_id(&id, "execution")?;
    let body = body.0;
    if body.event_type.trim().is_empty() {
        return Err(ApiError::bad_request("`event_type` must not be empty"));
    }
    let payload = super::object_or_empty("payload", body.payload)?;
    if body
        .event_id
        .as_deref()
        .is_some_and(|k| k.trim().is_empty())
    {
        return Err(ApiError::bad_request(
            "`event_id` must not be empty when given",
        ));
    }
    let delivered = state
        .events
        .deliver_to(
            id,
            &body.event_type,
            payload,
            body.event_id,
            Some(caller.subject()),
        )
        .await?;
    let duplicate = delivered.duplicate;
    let execution = settle(&state, delivered.progress, wait.wait).await?;
    let mut response = HttpResponse::Ok();
    if duplicate {
        response.insert_header(("Idempotent-Replay", "true"));
    }
    Ok(response.json(ExecutionDto::from(execution)))
}
