//! Schedules: cron triggers attached to workflows, their next fire times and history.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use tollgate_model::schedule::{CronSchedule, Schedule};
use tollgate_store::ScheduleFilter;
use utoipa::IntoParams;
use uuid::Uuid;

use super::{parse_id, Json, PageParams};
use crate::auth::{Caller, Permission};
use crate::dto::ScheduleQuery;
use crate::dto::{NextFiresDto, ScheduleBody, ScheduleDto, ScheduleList, TickDto, TickList};
use crate::error::{ApiError, ApiResult, Detail, ErrorEnvelope};
use crate::state::AppState;

/// `?count=` of `GET /schedules/{id}/next`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountParams {
    /// How many, 1–100 (default 10).
    pub count: Option<usize>,
}

/// Checks the expression and zone; every problem is a detail with its field.
fn checked(body: &ScheduleBody) -> ApiResult<(CronSchedule, String)> {
    let timezone = body.timezone.clone().unwrap_or_else(|| "UTC".to_owned());
    match CronSchedule::checked(&body.cron, &timezone) {
        Ok(cron) => Ok((cron, timezone)),
        Err(problems) => Err(ApiError::validation(
            format!("the schedule has {} error(s)", problems.len()),
            problems
                .into_iter()
                .map(|p| Detail {
                    path: p.path,
                    message: p.message,
                })
                .collect(),
        )),
    }
}

fn list_of(page: tollgate_store::Page<Schedule>) -> ScheduleList {
    ScheduleList {
        items: page.items.iter().map(ScheduleDto::from).collect(),
        next_cursor: page.next_cursor,
    }
}

/// A workflow's schedules.
#[utoipa::path(get, path = "/api/v1/workflows/{id}/schedules", tag = "schedules",
    params(("id" = Uuid, Path, description = "workflow id"), PageParams),
    responses((status = 200, body = ScheduleList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list_for_workflow(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "workflow")?;
    state.store.get_workflow(id).await?;
    let filter = ScheduleFilter {
        workflow_id: Some(id),
    };
    let page = state
        .store
        .list_schedules(&filter, &page.request()?)
        .await?;
    Ok(HttpResponse::Ok().json(list_of(page)))
}

/// Attaches a schedule to a workflow.
#[utoipa::path(post, path = "/api/v1/workflows/{id}/schedules", tag = "schedules",
    params(("id" = Uuid, Path, description = "workflow id")), request_body = ScheduleBody,
    responses((status = 201, body = ScheduleDto),
        (status = 400, description = "malformed, or `validation_failed` naming `cron`/`timezone`", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: Json<ScheduleBody>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::WriteWorkflows)?;
    let workflow_id = parse_id(&id, "workflow")?;
    let body = body.0;
    let (cron, timezone) = checked(&body)?;
    let now = state.engine.clock().now();
    let schedule = state
        .store
        .create_schedule(Schedule {
            id: Uuid::now_v7(),
            workflow_id,
            cron: body.cron,
            timezone,
            enabled: body.enabled.unwrap_or(true),
            catch_up: body.catch_up.unwrap_or_default(),
            from_trigger: false,
            next_fire_at: cron.next_after(now),
            last_fired_at: None,
            created_at: now,
            updated_at: now,
        })
        .await?;
    tracing::info!(schedule_id = %schedule.id, workflow_uuid = %workflow_id, by = %caller.subject(), "schedule created");
    Ok(HttpResponse::Created().json(ScheduleDto::from(&schedule)))
}

/// Every schedule.
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules", params(ScheduleQuery, PageParams),
    responses((status = 200, body = ScheduleList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    _caller: Caller,
    query: web::Query<ScheduleQuery>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let filter = ScheduleFilter {
        workflow_id: query.workflow_id,
    };
    let page = state
        .store
        .list_schedules(&filter, &page.request()?)
        .await?;
    Ok(HttpResponse::Ok().json(list_of(page)))
}

/// One schedule.
#[utoipa::path(get, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "schedule id")),
    responses((status = 200, body = ScheduleDto), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "schedule")?;
    let schedule = state.store.get_schedule(id).await?;
    Ok(HttpResponse::Ok().json(ScheduleDto::from(&schedule)))
}

/// Changes a schedule. A new expression or zone counts from now; the same one keeps its
/// next fire time. The schedule of a workflow's own trigger takes its expression from
/// the definition: only `enabled` and `catch_up` may change here (409 otherwise).
#[utoipa::path(put, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "schedule id")), request_body = ScheduleBody,
    responses((status = 200, body = ScheduleDto), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "the cron of a trigger schedule is changed through its workflow's definition", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn replace(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: Json<ScheduleBody>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::WriteWorkflows)?;
    let id = parse_id(&id, "schedule")?;
    let body = body.0;
    let (cron, timezone) = checked(&body)?;
    let mut schedule = state.store.get_schedule(id).await?;
    let moved = schedule.cron != body.cron || schedule.timezone != timezone;
    if moved && schedule.from_trigger {
        return Err(ApiError::conflict(
            "this schedule is its workflow's `schedule` trigger: change the cron or time zone in the workflow's definition (PUT /workflows/{id})",
        ));
    }
    let now = state.engine.clock().now();
    if moved {
        schedule.next_fire_at = cron.next_after(now);
    }
    schedule.cron = body.cron;
    schedule.timezone = timezone;
    schedule.enabled = body.enabled.unwrap_or(schedule.enabled);
    schedule.catch_up = body.catch_up.unwrap_or(schedule.catch_up);
    schedule.updated_at = now;
    let schedule = state.store.update_schedule(schedule).await?;
    Ok(HttpResponse::Ok().json(ScheduleDto::from(&schedule)))
}

/// Deletes a schedule and its tick history (executions it started stay).
#[utoipa::path(delete, path = "/api/v1/schedules/{id}", tag = "schedules",
    params(("id" = Uuid, Path, description = "schedule id")),
    responses((status = 204), (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::WriteWorkflows)?;
    let id = parse_id(&id, "schedule")?;
    state.store.delete_schedule(id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The coming fire times, computed without side effects.
#[utoipa::path(get, path = "/api/v1/schedules/{id}/next", tag = "schedules",
    params(("id" = Uuid, Path, description = "schedule id"), CountParams),
    responses((status = 200, body = NextFiresDto), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn next(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
    query: web::Query<CountParams>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "schedule")?;
    let count = query.count.unwrap_or(10);
    if !(1..=100).contains(&count) {
        return Err(ApiError::bad_request(format!(
            "`count` must be between 1 and 100, not {count}"
        )));
    }
    let schedule = state.store.get_schedule(id).await?;
    let cron =
        CronSchedule::new(&schedule.cron, Some(&schedule.timezone)).map_err(ApiError::internal)?;
    let next = match schedule.next_fire_at {
        Some(first) => std::iter::once(first)
            .chain(cron.upcoming(first, count - 1))
            .collect(),
        None => Vec::new(),
    };
    Ok(HttpResponse::Ok().json(NextFiresDto {
        schedule_id: id,
        next,
    }))
}

/// The schedule's ticks, newest first, with each execution's outcome.
#[utoipa::path(get, path = "/api/v1/schedules/{id}/ticks", tag = "schedules",
    params(("id" = Uuid, Path, description = "schedule id"), PageParams),
    responses((status = 200, body = TickList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn ticks(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "schedule")?;
    state.store.get_schedule(id).await?;
    let page = state.store.list_ticks(id, &page.request()?).await?;
    Ok(HttpResponse::Ok().json(TickList {
        items: page
            .items
            .iter()
            .map(|v| TickDto {
                tick_time: v.tick.tick_time,
                status: v.tick.status.as_str().to_owned(),
                execution_id: v.tick.execution_id,
                outcome: v.outcome.map(|o| o.as_str().to_owned()),
                claimed_at: v.tick.claimed_at,
                started_at: v.tick.started_at,
                error: v.tick.error.clone(),
            })
            .collect(),
        next_cursor: page.next_cursor,
    }))
}
