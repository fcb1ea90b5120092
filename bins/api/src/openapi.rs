//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto;
use crate::error;
use crate::routes::{approvals, events, executions, keys, meta, records, schedules, workflows};

/// Tollgate's REST API (docs/api.md).
#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate", description = "Durable workflows that stop at approvals, events and deadlines."),
    paths(
        meta::live, meta::ready, meta::metrics, meta::openapi,
        keys::create, keys::list, keys::delete,
        workflows::create, workflows::validate, workflows::list, workflows::get, workflows::replace,
        workflows::delete, workflows::enable, workflows::disable, workflows::execute,
        events::ingest, events::get,
        executions::list, executions::paused, executions::get, executions::trace,
        executions::resume_requests, executions::pause, executions::resume, executions::cancel,
        executions::deliver,
        approvals::list, approvals::get, approvals::approve, approvals::reject,
        records::get_record, records::notifications,
        schedules::list_for_workflow, schedules::create, schedules::list, schedules::get,
        schedules::replace, schedules::delete, schedules::next, schedules::ticks,
    ),
    components(schemas(
        error::ErrorEnvelope, error::ErrorBody, error::Detail,
        dto::WorkflowDto, dto::WorkflowList, dto::ExecutionDto, dto::ExecutionList, dto::WaitDto,
        dto::ExecutionErrorDto, dto::StepRecordDto, dto::StepErrorDto, dto::TraceDto,
        dto::ApprovalDto, dto::ApprovalList, dto::DecisionDto, dto::DecidedDto, dto::EventDto,
        dto::EventAcceptedDto, dto::ExecutionStateDto, dto::ResumeRequestDto, dto::ResumeRequestList, dto::RecordDto,
        dto::NotificationDto, dto::NotificationList, dto::ApiKeyDto, dto::ApiKeyList,
        dto::CreatedApiKeyDto, dto::NewApiKey, dto::NewEventDto, dto::DirectEventDto,
        dto::ExecuteDto, dto::ReasonDto, dto::ResumeDto, dto::DecisionBody, dto::ValidationDto,
        dto::HealthDto,
        schedules::ScheduleDto, schedules::ScheduleList, schedules::ScheduleBody, schedules::TickDto,
        schedules::TickList, schedules::NextFiresDto,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "meta", description = "Health, metrics, this document (no key needed)"),
        (name = "api-keys", description = "Admin only"),
        (name = "workflows"), (name = "events"), (name = "executions"), (name = "approvals"),
        (name = "records", description = "Records and notifications written by actions"),
        (name = "schedules", description = "Cron schedules: each tick starts one execution"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
