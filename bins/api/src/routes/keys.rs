//! API keys: admin only.

use actix_web::{web, HttpResponse};
use tollgate_model::records::ApiKey;
use uuid::Uuid;

use super::{parse_id, Json, PageParams};
use crate::auth::{generate_key, hash_key, Caller, Permission};
use crate::dto::{ApiKeyDto, ApiKeyList, CreatedApiKeyDto, NewApiKey, WhoAmIDto};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::state::AppState;

/// Checks a key's name and roles.
pub fn check_new_key(name: &str, roles: &[String]) -> ApiResult<()> {
    if name.trim().is_empty() || name.len() > 200 {
        return Err(ApiError::bad_request("`name` must be 1–200 characters"));
    }
    if roles.is_empty() {
        return Err(ApiError::bad_request(
            "`roles` must name at least one role (admin, operator, service, viewer, or an approver role)",
        ));
    }
    if let Some(bad) = roles.iter().find(|r| {
        r.is_empty()
            || r.len() > 100
            || !r.chars().all(|c| c.is_alphanumeric() || "_-.:".contains(c))
    }) {
        return Err(ApiError::bad_request(format!(
            "role `{bad}` is not valid: use letters, digits, `_`, `-`, `.` or `:` (at most 100)"
        )));
    }
    Ok(())
}

/// Creates a key record for `name` with `roles`; returns it with its secret.
pub async fn create_key(
    store: &dyn tollgate_store::ApiKeyStore,
    name: String,
    roles: Vec<String>,
    now: tollgate_model::records::Timestamp,
) -> ApiResult<CreatedApiKeyDto> {
    check_new_key(&name, &roles)?;
    let key = generate_key().map_err(ApiError::internal)?;
    let stored = store
        .create_api_key(ApiKey {
            id: Uuid::now_v7(),
            name,
            roles,
            key_hash: hash_key(&key),
            created_at: now,
        })
        .await?;
    Ok(CreatedApiKeyDto {
        id: stored.id,
        name: stored.name,
        roles: stored.roles,
        key,
        created_at: stored.created_at,
    })
}

/// Creates a key; the secret is in this response only.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "api-keys", request_body = NewApiKey,
    responses(
        (status = 201, body = CreatedApiKeyDto), (status = 400, body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 409, description = "name taken", body = ErrorEnvelope)),
    security(("bearer" = ["admin"])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    body: Json<NewApiKey>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ManageKeys)?;
    let body = body.0;
    let now = state.engine.clock().now();
    let created = create_key(state.store.as_ref(), body.name, body.roles, now).await?;
    tracing::info!(key = %created.name, by = %caller.subject(), "API key created");
    Ok(HttpResponse::Created().json(created))
}

/// Lists keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "api-keys", params(PageParams),
    responses((status = 200, body = ApiKeyList), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope)),
    security(("bearer" = ["admin"])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ManageKeys)?;
    let page = state.store.list_api_keys(&page.request()?).await?;
    Ok(HttpResponse::Ok().json(ApiKeyList {
        items: page.items.iter().map(ApiKeyDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Revokes a key at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = Uuid, Path, description = "key id")),
    responses((status = 204), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = ["admin"])))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::ManageKeys)?;
    let id = parse_id(&id, "API key")?;
    state.store.delete_api_key(id).await?;
    // The cache is keyed by hash, not id: forget every key; the next requests look
    // theirs up again.
    state.keys.clear();
    tracing::info!(key_id = %id, by = %caller.subject(), "API key revoked");
    Ok(HttpResponse::NoContent().finish())
}

/// The calling key's name and roles (what a client shows after logging in).
#[utoipa::path(get, path = "/api/v1/whoami", tag = "api-keys",
    responses((status = 200, body = WhoAmIDto), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn whoami(caller: Caller) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(WhoAmIDto {
        name: caller.0.subject.clone(),
        roles: caller.0.roles.clone(),
    }))
}
