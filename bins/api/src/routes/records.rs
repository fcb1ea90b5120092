//! Business records and notifications written by actions.

use actix_web::{web, HttpResponse};
use tollgate_store::NotificationFilter;

use super::PageParams;
use crate::auth::Caller;
use crate::dto::NotificationQuery;
use crate::dto::{NotificationDto, NotificationList, RecordDto};
use crate::error::{ApiResult, ErrorEnvelope};
use crate::state::AppState;

/// A record by entity type and id.
#[utoipa::path(get, path = "/api/v1/records/{entity}/{entity_id}", tag = "records",
    params(("entity" = String, Path, description = "entity type, e.g. `order`"), ("entity_id" = String, Path, description = "entity id")),
    responses((status = 200, body = RecordDto), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get_record(
    state: web::Data<AppState>,
    _caller: Caller,
    path: web::Path<(String, String)>,
) -> ApiResult<HttpResponse> {
    let (entity, entity_id) = path.into_inner();
    let record = state.store.get_record(&entity, &entity_id).await?;
    Ok(HttpResponse::Ok().json(RecordDto::from(&record)))
}

/// Notifications sent by `notify` actions, newest first.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "records", params(NotificationQuery, PageParams),
    responses((status = 200, body = NotificationList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn notifications(
    state: web::Data<AppState>,
    _caller: Caller,
    query: web::Query<NotificationQuery>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let filter = NotificationFilter {
        execution_id: query.execution_id,
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
