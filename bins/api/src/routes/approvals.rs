//! Approvals: the inbox and decisions.

use actix_web::{web, HttpResponse};
use tollgate_model::records::{ApprovalStatus, DecisionKind};
use tollgate_store::ApprovalFilter;

use super::{parse_id, settle, OptionalJson, PageParams, WaitParams};
use crate::auth::Caller;
use crate::dto::ApprovalQuery;
use crate::dto::{ApprovalDto, ApprovalList, DecidedDto, DecisionBody, ExecutionDto};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::state::AppState;

/// Parses an approval status filter.
pub fn parse_status(text: &str) -> ApiResult<ApprovalStatus> {
    [
        ApprovalStatus::Pending,
        ApprovalStatus::Approved,
        ApprovalStatus::Rejected,
        ApprovalStatus::Expired,
        ApprovalStatus::Cancelled,
        ApprovalStatus::Superseded,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown approval status `{text}` (expected pending, approved, rejected, expired, cancelled or superseded)"
        ))
    })
}

/// Approval requests, newest first.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals", params(ApprovalQuery, PageParams),
    responses((status = 200, body = ApprovalList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ApprovalQuery>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let filter = ApprovalFilter {
        status: query.status.as_deref().map(parse_status).transpose()?,
        role: query.role.clone(),
        execution_id: query.execution_id,
        decidable_by: query.mine.then(|| caller.0.clone()),
    };
    let page = state
        .store
        .list_approvals(&filter, &page.request()?)
        .await?;
    Ok(HttpResponse::Ok().json(ApprovalList {
        items: page.items.iter().map(ApprovalDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One approval request with its decisions.
#[utoipa::path(get, path = "/api/v1/approvals/{id}", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id")),
    responses((status = 200, body = ApprovalDto), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "approval")?;
    let approval = state.store.get_approval(id).await?;
    Ok(HttpResponse::Ok().json(ApprovalDto::from(&approval)))
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: &str,
    kind: DecisionKind,
    body: DecisionBody,
    wait: bool,
) -> ApiResult<HttpResponse> {
    let id = parse_id(id, "approval")?;
    let data = super::object_or_empty("data", body.data)?;
    let decided = state
        .approvals
        .decide(id, &caller.0, kind, body.reason, data)
        .await?;
    let execution = settle(state, decided.progress, wait).await?;
    Ok(HttpResponse::Ok().json(DecidedDto {
        approval: ApprovalDto::from(&decided.approval),
        execution: ExecutionDto::from(&execution),
    }))
}

/// Approves (one vote towards the quorum).
#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id"), WaitParams), request_body = DecisionBody,
    responses((status = 200, body = DecidedDto), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, description = "the caller may not decide this request", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "already decided, expired, cancelled or superseded, or already approved by this caller", body = ErrorEnvelope)),
    security(("bearer" = ["approver", "admin"])))]
pub async fn approve(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    wait: web::Query<WaitParams>,
    body: OptionalJson<DecisionBody>,
) -> ApiResult<HttpResponse> {
    decide(
        &state,
        &caller,
        &id,
        DecisionKind::Approve,
        body.0,
        wait.wait,
    )
    .await
}

/// Rejects (a non-empty `reason` is required).
#[utoipa::path(post, path = "/api/v1/approvals/{id}/reject", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id"), WaitParams), request_body = DecisionBody,
    responses((status = 200, body = DecidedDto), (status = 400, description = "no reason", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope)),
    security(("bearer" = ["approver", "admin"])))]
pub async fn reject(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    wait: web::Query<WaitParams>,
    body: OptionalJson<DecisionBody>,
) -> ApiResult<HttpResponse> {
    decide(
        &state,
        &caller,
        &id,
        DecisionKind::Reject,
        body.0,
        wait.wait,
    )
    .await
}
