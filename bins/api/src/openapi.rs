//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::dto;
use crate::error;
use crate::routes::{
    approvals, delegations, events, executions, keys, meta, records, schedules, workflows,
};

/// Tollgate's REST API (docs/api.md).
#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate", description = "Durable workflows that stop at approvals, events and deadlines."),
    paths(
        meta::live, meta::ready, meta::metrics, meta::openapi,
        keys::create, keys::list, keys::delete, keys::whoami,
        workflows::create, workflows::validate, workflows::list, workflows::get, workflows::replace,
        workflows::delete, workflows::enable, workflows::disable, workflows::execute,
        events::ingest, events::get,
        executions::list, executions::paused, executions::quarantined, executions::get, executions::trace,
        executions::resume_requests, executions::notifications, executions::pause, executions::resume, executions::cancel,
        executions::retry, executions::retry_bulk, executions::migrate, executions::migrate_bulk, executions::deliver,
        approvals::list, approvals::get, approvals::approve, approvals::reject, approvals::links, approvals::decide_bulk,
        approvals::comments, approvals::comment, approvals::ladder,
        approvals::claim, approvals::unclaim, approvals::assign,
        delegations::create, delegations::list, delegations::revoke,
        records::get_record, records::notifications,
        schedules::list_for_workflow, schedules::create, schedules::list, schedules::get,
        schedules::replace, schedules::delete, schedules::next, schedules::ticks,
    ),
    components(schemas(
        error::ErrorEnvelope, error::ErrorBody, error::Detail,
        dto::WorkflowDto, dto::WorkflowList, dto::ExecutionDto, dto::ExecutionList, dto::QuarantinedDto, dto::QuarantinedList, dto::WaitDto,
        dto::ExecutionErrorDto, dto::StepRecordDto, dto::StepErrorDto, dto::TraceDto,
        dto::ApprovalDto, dto::ApprovalList, dto::DecisionDto, dto::DecidedDto, dto::EventDto,
        dto::EventAcceptedDto, dto::ExecutionStateDto, dto::ResumeRequestDto, dto::ResumeRequestList, dto::RecordDto,
        dto::NotificationDto, dto::NotificationList, dto::ApiKeyDto, dto::ApiKeyList,
        dto::CreatedApiKeyDto, dto::WhoAmIDto, dto::NewApiKey, dto::NewEventDto, dto::DirectEventDto,
        dto::ExecuteDto, dto::ReasonDto, dto::ResumeDto, dto::DecisionBody, dto::NewLinksDto, dto::BulkDecisionDto, dto::BulkFilterDto, dto::BulkDecidedDto, dto::BulkItemDto,
        dto::CommentDto, dto::CommentList, dto::NewCommentDto, dto::AssignmentDto, dto::AssignDto,
        dto::NewDelegationDto, dto::DelegationDto, dto::DelegationList, dto::ApprovalRungDto, dto::ApprovalRungList,
        dto::LinkRecipientDto, dto::DecisionLinkDto, dto::DecisionLinksDto, dto::ValidationDto,
        dto::HealthDto, dto::WorkerDto, dto::RetryDto, dto::BulkRetryDto, dto::RetryItemDto,
        dto::RetryReportDto, dto::MigrateDto, dto::BulkMigrateDto, dto::MigrationItemDto,
        dto::MigrationReportDto,
        dto::ScheduleDto, dto::ScheduleList, dto::ScheduleBody, dto::TickDto,
        dto::TickList, dto::NextFiresDto,
    )),
    modifiers(&BearerAuth, &CommonAnswers),
    tags(
        (name = "meta", description = "Health, metrics, this document (no key needed)"),
        (name = "api-keys", description = "Managing keys (admin only); `whoami` for any key"),
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

/// Completes every operation's answers with those every route shares, so that the
/// document lists each status a client can meet (docs/api.md, "Errors"), and gives each
/// answer a description: an unauthenticated call (`401`) on every secured route, `403`
/// where the route names roles, `400` where a path or query parameter or a body can be
/// malformed, `413` and `415` where there is a body.
struct CommonAnswers;

impl Modify for CommonAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
            ];
            for operation in operations.into_iter().flatten() {
                complete(operation);
            }
        }
    }
}

/// The roles a secured operation names in its security requirement (OpenAPI 3.1 lets a
/// non-OAuth requirement list role names); `None` for an open route, empty for "any key".
pub fn roles(operation: &Operation) -> Option<Vec<String>> {
    let requirements = serde_json::to_value(operation.security.as_ref()?).ok()?;
    let roles = requirements.get(0)?.get("bearer")?.as_array()?;
    Some(
        roles
            .iter()
            .filter_map(|role| role.as_str().map(str::to_owned))
            .collect(),
    )
}

fn complete(operation: &mut Operation) {
    let roles = roles(operation);
    let parameters = operation.parameters.as_deref().unwrap_or_default();
    let takes_input = !parameters.is_empty() || operation.request_body.is_some();
    let path_ids = parameters
        .iter()
        .any(|p| matches!(p.parameter_in, ParameterIn::Path));
    let has_body = operation.request_body.is_some();
    let answers = &mut operation.responses.responses;
    let mut add = |status: &str, wanted: bool| {
        if wanted && !answers.contains_key(status) {
            answers.insert(
                status.to_owned(),
                RefOr::T(
                    ResponseBuilder::new()
                        .content(
                            "application/json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                                .build(),
                        )
                        .build(),
                ),
            );
        }
    };
    add("400", takes_input);
    add("401", roles.is_some());
    add("403", roles.as_ref().is_some_and(|r| !r.is_empty()));
    add("413", has_body);
    add("415", has_body);
    for (status, answer) in answers.iter_mut() {
        if let RefOr::T(answer) = answer {
            if answer.description.is_empty() {
                standard_description(status, path_ids).clone_into(&mut answer.description);
            }
        }
    }
}

/// What a status means on every route that does not say more.
fn standard_description(status: &str, path_ids: bool) -> &'static str {
    match status {
        "200" => "done",
        "201" => "created",
        "202" => "accepted",
        "204" => "done; no body",
        "400" if path_ids => "bad input: a malformed id in the path, bad query parameters or body",
        "400" => "bad input: bad query parameters or body (the message says which and why)",
        "401" => "no key, or a malformed, unknown or revoked one",
        "403" => "the key does not hold a role this route needs",
        "404" => "no such resource",
        "409" => "conflicts with the resource's current state",
        "413" => "the body is larger than the server's `--max-body-size`",
        "415" => "the body's `Content-Type` is not JSON",
        "503" => "not ready",
        _ => "see the message",
    }
}
