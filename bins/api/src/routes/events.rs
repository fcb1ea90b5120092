//! Events: start workflows and resume waits.

use actix_web::{web, HttpResponse};
use futures_util::future::try_join_all;
use tollgate_resumer::NewEvent;

use super::{parse_id, Json, WaitParams};
use crate::auth::{Caller, Permission};
use crate::dto::{EventAcceptedDto, EventDto, ExecutionStateDto, NewEventDto};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::state::AppState;

/// Longest accepted `event_type`, `event_id` and `source`.
const MAX_NAME: usize = 200;

pub(crate) fn check_name(field: &str, value: &str) -> ApiResult<()> {
    if value.trim().is_empty() || value.len() > MAX_NAME {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be 1–{MAX_NAME} characters"
        )));
    }
    Ok(())
}

/// Ingests an event: starts every enabled workflow it triggers and resumes every waiting
/// execution it satisfies. A repeated `event_id` returns 200 with the first response.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", request_body = NewEventDto,
    params(WaitParams),
    responses(
        (status = 202, description = "Accepted: what it started and resumed", body = EventAcceptedDto),
        (status = 200, description = "A repeat of an `event_id` already received: the first response", body = EventAcceptedDto),
        (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope),
        (status = 413, body = ErrorEnvelope), (status = 415, body = ErrorEnvelope)),
    security(("bearer" = ["service", "operator", "admin"])))]
pub async fn ingest(
    state: web::Data<AppState>,
    caller: Caller,
    wait: web::Query<WaitParams>,
    body: Json<NewEventDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::SendEvents)?;
    let body = body.0;
    check_name("event_type", &body.event_type)?;
    if let Some(event_id) = &body.event_id {
        check_name("event_id", event_id)?;
    }
    if let Some(source) = &body.source {
        check_name("source", source)?;
    }
    let payload = super::object_or_empty("payload", body.payload)?;
    let ingested = state
        .events
        .ingest(NewEvent {
            event_type: body.event_type,
            payload,
            source: body.source,
            event_id: body.event_id,
            correlation_id: body.correlation_id,
            submitted_by: Some(caller.subject().to_owned()),
        })
        .await?;
    let mut dto = EventAcceptedDto::from(&ingested.event);
    if ingested.duplicate {
        // A resend: nothing was started or resumed now, so there is nothing to wait for;
        // with `?wait=true` the answer still says where the first sending's executions
        // stand.
        if wait.wait {
            let event = &ingested.event;
            let executions = try_join_all(
                event
                    .started
                    .iter()
                    .chain(&event.resumed)
                    .map(|id| state.store.get_execution(*id)),
            )
            .await?;
            dto.executions = Some(executions.iter().map(ExecutionStateDto::from).collect());
        }
        return Ok(HttpResponse::Ok().json(dto));
    }
    let event = &ingested.event;
    if event.started.is_empty() && event.resumed.is_empty() {
        // Legal (a workflow may be deployed later), but worth a line: a typo in an event
        // type looks exactly like this.
        tracing::info!(event_id = %event.id, event_type = %event.event_type, "event stored; no workflow started and no execution resumed");
    }
    if event.event_id.is_none() {
        tracing::debug!(event_id = %event.id, event_type = %event.event_type, "event without event_id: a resend would count again");
    }
    if wait.wait {
        let timeout = state.wait_timeout;
        let engine = &state.engine;
        let settled = try_join_all(
            ingested
                .started
                .into_iter()
                .chain(ingested.resumed)
                .map(|p| p.settled(engine, timeout)),
        )
        .await?;
        dto.executions = Some(settled.iter().map(ExecutionStateDto::from).collect());
    }
    Ok(HttpResponse::Accepted().json(dto))
}

/// One event with what it started and resumed.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = Uuid, Path, description = "the server's event id")),
    responses((status = 200, body = EventDto), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "event")?;
    let event = state.store.get_event(id).await?;
    Ok(HttpResponse::Ok().json(EventDto::from(&event)))
}
