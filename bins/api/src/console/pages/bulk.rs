//! Bulk repair from the executions list: retry the failed executions a filter shows, or
//! move the paused ones to another version — always a dry run first, listing per
//! execution what would happen and why not, then exactly the executions the preview
//! accepted (not whatever the filter matches by then).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::{html, Markup};
use serde::Deserialize;
use tollgate_model::ExecutionStatus;
use tollgate_resumer::{
    MigrateCommand, MigrationOutcome, MigrationSelection, RetryCommand, RetryOutcome,
    RetrySelection,
};
use tollgate_store::PageRequest;
use uuid::Uuid;

use super::executions::short;
use super::{internal, not_found, operator_post, problem, Form, Page};
use crate::auth::{Caller, Permission};
use crate::console::session::User;
use crate::console::{csrf_field, page, Section};
use crate::state::AppState;

/// How many executions one preview looks at: one page of the list.
pub(super) const PREVIEW_LIMIT: u32 = 50;

/// The reason a preview passes for the dry run: a dry run audits nothing, and the real
/// command asks the operator for theirs.
const PREVIEW_REASON: &str = "preview";

/// What the list page's bulk forms ask for.
#[derive(Debug, Default, Deserialize)]
pub struct BulkQuery {
    /// `retry` or `migrate`: show that dry run.
    #[serde(default)]
    pub(super) preview: Option<String>,
    /// Retry: only executions that stopped at this step.
    #[serde(default)]
    pub(super) failed_step: Option<String>,
    /// Retry: where to continue (default: the step that stopped each).
    #[serde(default)]
    pub(super) from_step: Option<String>,
    /// Migrate: the target version.
    #[serde(default)]
    pub(super) to_version: Option<String>,
}

/// One row of a preview or of a bulk command's result.
struct Row {
    id: Uuid,
    at: Option<String>,
    accepted: bool,
    note: String,
}

/// The trimmed value of a form field, unless it is empty.
fn nonempty(s: Option<&String>) -> Option<&str> {
    s.map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// The bulk section of the list page for an operator: the forms for the list's status,
/// and the preview when one was asked for. Empty when the filter allows no bulk command.
pub(super) async fn section(
    state: &AppState,
    user: &User,
    status: Option<ExecutionStatus>,
    workflow: Option<&str>,
    query: &BulkQuery,
) -> Markup {
    let operator = Caller(user.principal.clone())
        .require(Permission::ControlExecutions)
        .is_ok();
    let Some(status) = status.filter(|_| operator) else {
        return html! {};
    };
    match status {
        ExecutionStatus::Failed | ExecutionStatus::TimedOut => {
            let failed_step = nonempty(query.failed_step.as_ref());
            let from_step = nonempty(query.from_step.as_ref());
            let preview = if query.preview.as_deref() == Some("retry") {
                Some(retry_preview(state, status, workflow, failed_step, from_step).await)
            } else {
                None
            };
            html! {
                section.card #bulk-retry {
                    h2 { "Retry these" }
                    form.filters method="get" action="/executions" {
                        input type="hidden" name="status" value=(status.as_str());
                        input type="hidden" name="workflow" value=(workflow.unwrap_or(""));
                        input type="hidden" name="preview" value="retry";
                        label { "Stopped at " input type="text" name="failed_step" value=(failed_step.unwrap_or("")) placeholder="any step" aria-label="Only those stopped at step"; }
                        label { "Continue from " input type="text" name="from_step" value=(from_step.unwrap_or("")) placeholder="the step that stopped each" aria-label="Step to retry from"; }
                        button type="submit" { "Preview retry" }
                    }
                    p.muted { "The preview looks at the newest " (PREVIEW_LIMIT) " " (status.as_str()) " executions of the filter and changes nothing. Retrying then runs exactly those it accepted: side effects on the way run again with new idempotency keys." }
                    @if let Some(preview) = preview {
                        @match preview {
                            Ok(rows) => {
                                (table(&rows, "Continues at"))
                                @let ids = accepted_ids(&rows);
                                @if ids.is_empty() {
                                    p #bulk-preview.muted { "None of them can be retried." }
                                } @else {
                                    form.filters method="post" action="/executions/bulk/retry" {
                                        (csrf_field(user))
                                        input type="hidden" name="ids" value=(ids);
                                        input type="hidden" name="from_step" value=(from_step.unwrap_or(""));
                                        input type="text" name="reason" required placeholder="Reason (required)" aria-label="Reason for retrying these";
                                        button.approve type="submit" { "Retry " (rows.iter().filter(|r| r.accepted).count()) }
                                    }
                                }
                            }
                            Err(why) => { p #bulk-preview.error { (why) } }
                        }
                    }
                }
            }
        }
        ExecutionStatus::Paused | ExecutionStatus::Waiting => {
            let Some(workflow) = workflow else {
                return html! { p.muted #bulk-migrate { "Filter by one workflow to move its paused executions to another version." } };
            };
            let versions = versions_of(state, workflow).await;
            let to_version = nonempty(query.to_version.as_ref());
            let preview = match (query.preview.as_deref(), to_version) {
                (Some("migrate"), Some(version)) => {
                    Some(migrate_preview(state, status, workflow, version).await)
                }
                _ => None,
            };
            html! {
                section.card #bulk-migrate {
                    h2 { "Move these to another version" }
                    form.filters method="get" action="/executions" {
                        input type="hidden" name="status" value=(status.as_str());
                        input type="hidden" name="workflow" value=(workflow);
                        input type="hidden" name="preview" value="migrate";
                        label { "Version "
                            select name="to_version" aria-label="Version to move to" {
                                @for v in &versions { option value=(v) selected[to_version == Some(v.as_str())] { (v) } }
                            }
                        }
                        button type="submit" { "Preview move" }
                    }
                    p.muted { "The preview looks at the newest " (PREVIEW_LIMIT) " " (status.as_str()) " executions of " (workflow) " and changes nothing; each keeps its pending gate." }
                    @if let (Some(preview), Some(version)) = (preview, to_version) {
                        @match preview {
                            Ok(rows) => {
                                (table(&rows, "Gate there"))
                                @let ids = accepted_ids(&rows);
                                @if ids.is_empty() {
                                    p #bulk-preview.muted { "None of them can move to " (version) "." }
                                } @else {
                                    form.filters method="post" action="/executions/bulk/migrate" {
                                        (csrf_field(user))
                                        input type="hidden" name="ids" value=(ids);
                                        input type="hidden" name="to_version" value=(version);
                                        input type="text" name="reason" placeholder="Reason (optional)" aria-label="Reason for moving these";
                                        button.approve type="submit" { "Move " (rows.iter().filter(|r| r.accepted).count()) " to " (version) }
                                    }
                                }
                            }
                            Err(why) => { p #bulk-preview.error { (why) } }
                        }
                    }
                }
            }
        }
        _ => html! {},
    }
}

async fn retry_preview(
    state: &AppState,
    status: ExecutionStatus,
    workflow: Option<&str>,
    failed_step: Option<&str>,
    from_step: Option<&str>,
) -> Result<Vec<Row>, String> {
    let selection = RetrySelection {
        status,
        workflow_key: workflow.map(str::to_owned),
        failed_step: failed_step.map(str::to_owned),
        limit: PREVIEW_LIMIT,
        cursor: None,
    };
    let command = RetryCommand {
        from_step,
        reason: PREVIEW_REASON,
        actor: None,
        origin: None,
    };
    let report = state
        .control
        .retry_many(&selection, command, true)
        .await
        .map_err(|err| err.to_string())?;
    Ok(report
        .items
        .into_iter()
        .map(|item| {
            let (accepted, note) = match item.outcome {
                RetryOutcome::WouldRetry => (true, "would retry".to_owned()),
                RetryOutcome::Retried => (true, "retried".to_owned()),
                RetryOutcome::Refused(why) => (false, why),
            };
            Row {
                id: item.execution_id,
                at: item.from_step,
                accepted,
                note,
            }
        })
        .collect())
}

async fn migrate_preview(
    state: &AppState,
    status: ExecutionStatus,
    workflow: &str,
    to_version: &str,
) -> Result<Vec<Row>, String> {
    let selection = MigrationSelection {
        workflow_key: workflow.to_owned(),
        from_version: None,
        status,
        limit: PREVIEW_LIMIT,
        cursor: None,
    };
    let map = BTreeMap::new();
    let command = MigrateCommand {
        to_version,
        step_map: &map,
        reason: None,
        actor: None,
        origin: None,
    };
    let report = state
        .control
        .migrate_many(&selection, command, true)
        .await
        .map_err(|err| err.to_string())?;
    Ok(report.items.into_iter().map(migration_row).collect())
}

fn migration_row(item: tollgate_resumer::MigrationItem) -> Row {
    let (accepted, note) = match item.outcome {
        MigrationOutcome::WouldMigrate => (true, format!("would move from {}", item.from_version)),
        MigrationOutcome::Migrated => (true, format!("moved from {}", item.from_version)),
        MigrationOutcome::Refused(why) => (false, why),
    };
    Row {
        id: item.execution_id,
        at: item.gate_step,
        accepted,
        note,
    }
}

/// The versions of `workflow`, newest first.
pub(super) async fn versions_of(state: &AppState, workflow: &str) -> Vec<String> {
    let filter = tollgate_store::WorkflowFilter {
        workflow_id: Some(workflow.to_owned()),
        ..tollgate_store::WorkflowFilter::default()
    };
    let mut versions: Vec<String> = state
        .store
        .list_workflows(&filter, &PageRequest::first(100))
        .await
        .map(|p| p.items.iter().map(|w| w.version().to_owned()).collect())
        .unwrap_or_default();
    versions.sort_by(|a, b| tollgate_model::definition::compare_versions(b, a));
    versions
}

fn accepted_ids(rows: &[Row]) -> String {
    rows.iter()
        .filter(|r| r.accepted)
        .map(|r| r.id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn table(rows: &[Row], at_heading: &str) -> Markup {
    html! {
        @if rows.is_empty() {
            p #bulk-preview.muted { "No executions match." }
        } @else {
            div.table-wrap { table #bulk-preview {
                thead { tr { th { "Execution" } th { (at_heading) } th { "Outcome" } } }
                tbody {
                    @for r in rows {
                        tr class=(if r.accepted { "accepted" } else { "refused" }) {
                            td { a href={"/executions/" (r.id)} { code { (short(r.id)) } } }
                            td { code { (r.at.as_deref().unwrap_or("—")) } }
                            td class=[(!r.accepted).then_some("error")] { (r.note) }
                        }
                    }
                }
            } }
        }
    }
}

/// The executions a bulk form names: the preview's accepted ids, at most one page.
fn parse_ids(ids: &str) -> Result<Vec<Uuid>, String> {
    let ids: Vec<Uuid> = ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Uuid::parse_str(s).map_err(|_| format!("`{s}` is not an execution id")))
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err("no executions were named: preview first".to_owned());
    }
    if ids.len() > PREVIEW_LIMIT as usize {
        return Err(format!(
            "{} executions named; at most {PREVIEW_LIMIT} at a time",
            ids.len()
        ));
    }
    Ok(ids)
}

/// `POST /executions/bulk/{retry|migrate}`: runs the command on each execution the
/// preview accepted, each on its own (one refusal does not stop the others), and shows
/// what happened to each.
pub async fn bulk_command(
    req: HttpRequest,
    state: web::Data<AppState>,
    command: web::Path<String>,
    form: web::Form<Form>,
) -> Page {
    let user = signed_in!(req, state);
    if let Err(refused) = operator_post(&user, &form) {
        return *refused;
    }
    let ids = match parse_ids(&form.ids) {
        Ok(ids) => ids,
        Err(why) => return problem(StatusCode::BAD_REQUEST, Some(&user), "Refused", &why),
    };
    let actor = Some(user.principal.subject.as_str());
    let reason = form.reason.trim();
    let origin = crate::routes::executions::origin(&req, "console");
    let mut rows = Vec::with_capacity(ids.len());
    let (title, at_heading) = match command.as_str() {
        "retry" => {
            if reason.is_empty() {
                return problem(
                    StatusCode::BAD_REQUEST,
                    Some(&user),
                    "Refused",
                    "`reason`: a retry needs one (it is audited)",
                );
            }
            let from_step = Some(form.from_step.trim()).filter(|s| !s.is_empty());
            for id in ids {
                let command = RetryCommand {
                    from_step,
                    reason,
                    actor,
                    origin: origin.as_deref(),
                };
                rows.push(match state.control.retry(id, command).await {
                    Ok(progress) => Row {
                        id,
                        at: progress.execution.cursor.map(|c| c.step_id),
                        accepted: true,
                        note: "retried".to_owned(),
                    },
                    Err(err) => match refusal(id, err) {
                        Ok(row) => row,
                        Err(err) => return internal(Some(&user), err),
                    },
                });
            }
            ("Retried", "Continues at")
        }
        "migrate" => {
            let map = BTreeMap::new();
            for id in ids {
                let command = MigrateCommand {
                    to_version: form.to_version.trim(),
                    step_map: &map,
                    reason: Some(reason).filter(|r| !r.is_empty()),
                    actor,
                    origin: origin.as_deref(),
                };
                rows.push(match state.control.migrate(id, command, false).await {
                    Ok(item) => migration_row(item),
                    Err(err) => match refusal(id, err) {
                        Ok(row) => row,
                        Err(err) => return internal(Some(&user), err),
                    },
                });
            }
            ("Moved", "Gate there")
        }
        _ => return not_found(&user, "command"),
    };
    let done = rows.iter().filter(|r| r.accepted).count();
    page(
        StatusCode::OK,
        title,
        Some(&user),
        Section::Executions,
        html! {
            div.heading { h1 { (title) " " (done) " of " (rows.len()) } }
            section.card #bulk-result {
                (table(&rows, at_heading))
                p { a.button href="/executions" { "Back to executions" } }
            }
        },
    )
}

/// The row of a per-execution refusal (its reason), or an error that ends the page.
fn refusal(id: Uuid, err: tollgate_resumer::Error) -> Result<Row, tollgate_resumer::Error> {
    match err {
        tollgate_resumer::Error::Conflict(why)
        | tollgate_resumer::Error::Invalid(why)
        | tollgate_resumer::Error::NotFound(why) => Ok(Row {
            id,
            at: None,
            accepted: false,
            note: why,
        }),
        err => Err(err),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bulk_forms_name_at_most_one_page_of_real_ids() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(parse_ids(&format!("{a}, {b},")).unwrap(), vec![a, b]);
        assert!(parse_ids("").unwrap_err().contains("preview first"));
        assert!(parse_ids("nope").unwrap_err().contains("`nope`"));
        let many: Vec<String> = (0..=PREVIEW_LIMIT)
            .map(|_| Uuid::now_v7().to_string())
            .collect();
        assert!(parse_ids(&many.join(","))
            .unwrap_err()
            .contains("at most 50"));
    }
}
