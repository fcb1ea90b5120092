//! Workflows: definitions, validation, enable/disable, manual execution.

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use serde_json::Value;
use tollgate_model::records::{snapshot_id, Workflow};
use tollgate_model::WorkflowDefinition;
use tollgate_store::WorkflowFilter;
use uuid::Uuid;

use super::{parse_id, settle, Json, OptionalJson, PageParams, WaitParams};
use crate::auth::{Caller, Permission};
use crate::dto::WorkflowQuery;
use crate::dto::{ExecuteDto, ExecutionDto, ValidationDto, WorkflowDto, WorkflowList};
use crate::error::{ApiError, ApiResult, Detail, ErrorEnvelope};
use crate::state::AppState;

fn details(problems: &[tollgate_model::Problem]) -> Vec<Detail> {
    problems
        .iter()
        .map(|p| Detail {
            path: p.path.clone(),
            message: p.message.clone(),
        })
        .collect()
}

/// Parses and validates a definition document; every problem is a detail with its path.
/// The warnings come back with it, so that the answer to a create or replace shows them.
pub fn load_definition(document: &Value) -> ApiResult<(WorkflowDefinition, Vec<Detail>)> {
    match tollgate_model::load(document) {
        Ok(loaded) => Ok((loaded.definition, details(&loaded.warnings))),
        Err(report) => Err(ApiError::validation(
            format!(
                "the workflow definition has {} error(s)",
                report.errors.len()
            ),
            details(&report.errors),
        )),
    }
}

/// Creates a workflow from a definition (flat, or nested under `definition`).
#[utoipa::path(post, path = "/api/v1/workflows", tag = "workflows",
    request_body(content = Object, description = "A workflow definition (docs/workflow-format.md)"),
    responses(
        (status = 201, body = WorkflowDto),
        (status = 400, description = "malformed JSON or `validation_failed` with paths", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 409, description = "`workflow_id` + `version` taken", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<Value>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::WriteWorkflows)?;
    let (definition, warnings) = load_definition(&body.0)?;
    let now = state.engine.clock().now();
    let workflow = Workflow {
        id: Uuid::now_v7(),
        snapshot_id: snapshot_id(&definition),
        enabled: definition.enabled,
        definition: Arc::new(definition),
        created_at: now,
        updated_at: now,
    };
    let created = state.store.create_workflow(workflow).await?;
    tracing::info!(workflow = %created.workflow_id(), version = %created.version(), by = %caller.subject(), warnings = warnings.len(), "workflow created");
    let mut dto = WorkflowDto::from(&created);
    dto.warnings = warnings;
    Ok(HttpResponse::Created().json(dto))
}

/// Validates a definition without storing it.
#[utoipa::path(post, path = "/api/v1/workflows/validate", tag = "workflows",
    request_body(content = Object, description = "A workflow definition"),
    responses((status = 200, body = ValidationDto), (status = 400, description = "malformed JSON", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn validate(_caller: Caller, body: Json<Value>) -> ApiResult<HttpResponse> {
    let dto = match tollgate_model::load(&body.0) {
        Ok(loaded) => ValidationDto {
            valid: true,
            errors: Vec::new(),
            warnings: details(&loaded.warnings),
        },
        Err(report) => ValidationDto {
            valid: false,
            errors: details(&report.errors),
            warnings: details(&report.warnings),
        },
    };
    Ok(HttpResponse::Ok().json(dto))
}

/// Lists workflows.
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows", params(WorkflowQuery, PageParams),
    responses((status = 200, body = WorkflowList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    _caller: Caller,
    filter: web::Query<WorkflowQuery>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let filter = WorkflowFilter {
        enabled: filter.enabled,
        workflow_id: filter.workflow_id.clone(),
        tag: filter.tag.clone(),
    };
    let page = state
        .store
        .list_workflows(&filter, &page.request()?)
        .await?;
    Ok(HttpResponse::Ok().json(WorkflowList {
        items: page.items.iter().map(WorkflowDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One workflow.
#[utoipa::path(get, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = Uuid, Path, description = "workflow id")),
    responses((status = 200, body = WorkflowDto), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "workflow")?;
    let workflow = state.store.get_workflow(id).await?;
    Ok(HttpResponse::Ok().json(WorkflowDto::from(&workflow)))
}

/// Replaces the definition; running executions keep the one they started with.
#[utoipa::path(put, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = Uuid, Path, description = "workflow id")),
    request_body(content = Object, description = "The full new definition"),
    responses((status = 200, body = WorkflowDto), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "`workflow_id` + `version` taken by another workflow", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn replace(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: Json<Value>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::WriteWorkflows)?;
    let id = parse_id(&id, "workflow")?;
    let (definition, warnings) = load_definition(&body.0)?;
    let now = state.engine.clock().now();
    let workflow = state
        .store
        .replace_workflow(id, Arc::new(definition), now)
        .await?;
    tracing::info!(workflow = %workflow.workflow_id(), by = %caller.subject(), warnings = warnings.len(), "workflow replaced");
    let mut dto = WorkflowDto::from(&workflow);
    dto.warnings = warnings;
    Ok(HttpResponse::Ok().json(dto))
}

/// Deletes a workflow; its executions stay readable.
#[utoipa::path(delete, path = "/api/v1/workflows/{id}", tag = "workflows",
    params(("id" = Uuid, Path, description = "workflow id")),
    responses((status = 204), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::WriteWorkflows)?;
    let id = parse_id(&id, "workflow")?;
    state.store.delete_workflow(id).await?;
    tracing::info!(workflow_uuid = %id, by = %caller.subject(), "workflow deleted");
    Ok(HttpResponse::NoContent().finish())
}

async fn set_enabled(
    state: &AppState,
    caller: &Caller,
    id: &str,
    enabled: bool,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::WriteWorkflows)?;
    let id = parse_id(id, "workflow")?;
    let now = state.engine.clock().now();
    let workflow = state.store.set_workflow_enabled(id, enabled, now).await?;
    Ok(HttpResponse::Ok().json(WorkflowDto::from(&workflow)))
}

/// Lets events start the workflow.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/enable", tag = "workflows",
    params(("id" = Uuid, Path, description = "workflow id")),
    responses((status = 200, body = WorkflowDto), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn enable(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_enabled(&state, &caller, &id, true).await
}

/// Stops events (and manual execution) from starting the workflow.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/disable", tag = "workflows",
    params(("id" = Uuid, Path, description = "workflow id")),
    responses((status = 200, body = WorkflowDto), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn disable(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    set_enabled(&state, &caller, &id, false).await
}

/// Starts an execution by hand (`trigger_event` = `manual`; the caller is the requester
/// of its approvals).
#[utoipa::path(post, path = "/api/v1/workflows/{id}/execute", tag = "workflows",
    params(("id" = Uuid, Path, description = "workflow id"), WaitParams),
    request_body(content = ExecuteDto, description = "Optional: `{\"payload\": {...}}`"),
    responses((status = 201, body = ExecutionDto), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "the workflow is disabled", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn execute(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    wait: web::Query<WaitParams>,
    body: OptionalJson<ExecuteDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::Execute)?;
    let id = parse_id(&id, "workflow")?;
    let body = body.0;
    if let Some(source) = &body.source {
        super::events::check_name("source", source)?;
    }
    let payload = super::object_or_empty("payload", body.payload)?;
    let progress = state
        .control
        .execute_from(id, payload, Some(caller.subject()), body.source.as_deref())
        .await?;
    let execution = settle(&state, progress, wait.wait).await?;
    Ok(HttpResponse::Created().json(ExecutionDto::from(execution)))
}
