//! Delegations: a subject lets another decide their approval requests for a period
//! (docs/approvals.md, "Delegation").

use actix_web::{web, HttpResponse};
use tollgate_model::records::{Delegation, Permission};
use uuid::Uuid;

use super::{parse_id, Json, PageParams};
use crate::auth::Caller;
use crate::dto::{DelegationDto, DelegationList, DelegationQuery, NewDelegationDto};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::state::AppState;

/// The longest a delegation may run: a year and a day, so none is made "for ever".
const LONGEST: chrono::TimeDelta = chrono::TimeDelta::days(366);

/// Lets `to` decide the caller's approval requests (or, for an operator, `from`'s) for
/// a period: all of them, or those of one workflow or one role. The delegate decides
/// with `on_behalf_of` and the delegator's roles as they are now; the decision counts
/// as the delegator's. Delegations do not pass on.
#[utoipa::path(post, path = "/api/v1/delegations", tag = "approvals", request_body = NewDelegationDto,
    responses((status = 201, body = DelegationDto),
        (status = 400, description = "a delegation to oneself, an empty or ended period, one longer than 366 days, or an unknown `from`", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, description = "`from` names someone else and the caller is no operator", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<NewDelegationDto>,
) -> ApiResult<HttpResponse> {
    let body = body.0;
    let now = state.engine.clock().now();
    let to = body.to.trim();
    let from = body.from.as_deref().map_or(caller.subject(), str::trim);
    if to.is_empty() || to.len() > 200 {
        return Err(ApiError::bad_request(
            "`to` must name a subject (1–200 characters)",
        ));
    }
    if to == from {
        return Err(ApiError::bad_request(format!(
            "`to` is {to}, who would delegate to themselves"
        )));
    }
    let starts_at = body.starts_at.unwrap_or(now);
    if body.ends_at <= starts_at || body.ends_at <= now {
        return Err(ApiError::bad_request(
            "`ends_at` must come after `starts_at` and after now",
        ));
    }
    if body.ends_at - starts_at > LONGEST {
        return Err(ApiError::bad_request(
            "a delegation runs at most 366 days: make a new one when it ends",
        ));
    }
    // The delegator's roles: the caller's own, or (for an operator acting for someone)
    // those of the key of that name.
    let roles = if from == caller.subject() {
        caller.0.roles.clone()
    } else {
        caller.require(Permission::ManageDelegations)?;
        let principal = super::approvals::assignee_named(&state, from).await?;
        if principal.roles.is_empty() {
            return Err(ApiError::bad_request(format!(
                "`from`: no API key is named {from}"
            )));
        }
        principal.roles
    };
    let delegation = Delegation {
        id: Uuid::now_v7(),
        delegator: from.to_owned(),
        delegator_roles: roles,
        delegate: to.to_owned(),
        workflow_key: body.workflow.filter(|w| !w.trim().is_empty()),
        role: body.role.filter(|r| !r.trim().is_empty()),
        starts_at,
        ends_at: body.ends_at,
        reason: body.reason.filter(|r| !r.trim().is_empty()),
        created_by: caller.subject().to_owned(),
        created_at: now,
        revoked_at: None,
    };
    state.store.create_delegation(&delegation).await?;
    tracing::info!(delegation_id = %delegation.id, from = %delegation.delegator, to = %delegation.delegate, by = %caller.subject(), "delegation made");
    Ok(HttpResponse::Created().json(DelegationDto::from(&delegation)))
}

/// Delegations from or to the caller, newest first, ended and revoked ones included;
/// everyone's with `all=true` (operators and administrators).
#[utoipa::path(get, path = "/api/v1/delegations", tag = "approvals", params(DelegationQuery, PageParams),
    responses((status = 200, body = DelegationList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, description = "`all=true` from a caller who is no operator", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<DelegationQuery>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let subject = if query.all {
        caller.require(Permission::ManageDelegations)?;
        None
    } else {
        Some(caller.subject())
    };
    let page = state
        .store
        .list_delegations(subject, &page.request()?)
        .await?;
    Ok(HttpResponse::Ok().json(DelegationList {
        items: page.items.iter().map(DelegationDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Revokes a delegation at once: decisions that start after it can no longer use it.
/// Its delegator, its delegate (giving it back) or an operator may.
#[utoipa::path(delete, path = "/api/v1/delegations/{id}", tag = "approvals",
    params(("id" = Uuid, Path, description = "delegation id")),
    responses((status = 200, body = DelegationDto), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope), (status = 409, description = "already revoked, or ended", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn revoke(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "delegation")?;
    let mut page = tollgate_store::PageRequest::first(500);
    // Whose it is, for the permission check (a subject has few delegations).
    let owned = loop {
        let listed = state
            .store
            .list_delegations(Some(caller.subject()), &page)
            .await?;
        if listed.items.iter().any(|d| d.id == id) {
            break true;
        }
        match listed.next_cursor {
            Some(c) => page = tollgate_store::PageRequest::after(500, c),
            None => break false,
        }
    };
    if !owned && !caller.0.may(Permission::ManageDelegations) {
        // Not theirs to see either: the same answer as an unknown id.
        return Err(ApiError::not_found(format!("delegation {id} not found")));
    }
    let now = state.engine.clock().now();
    let revoked = state.store.revoke_delegation(id, now).await?;
    tracing::info!(delegation_id = %id, by = %caller.subject(), "delegation revoked");
    Ok(HttpResponse::Ok().json(DelegationDto::from(&revoked)))
}
