//! Executions: the filtered list, what is waiting and for how long, one execution's
//! page, and the operator's commands.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use tollgate_model::records::{ApprovalStatus, Execution, StepRecord};
use tollgate_model::{ExecutionStatus, PauseReason};
use tollgate_resumer::{MigrateCommand, RetryCommand};
use tollgate_store::{ApprovalFilter, ExecutionFilter, PageRequest};
use uuid::Uuid;

use super::{internal, not_found, now, operator_post, problem, see_other, urlencode, Form, Page};
use crate::auth::{Caller, Permission};
use crate::console::session::User;
use crate::console::{csrf_field, page, pretty, when, Section};
use crate::routes::executions::parse_reason;
use crate::state::AppState;

/// Filters of the executions page.
#[derive(Debug, Default, Deserialize)]
pub struct ExecutionQuery {
    status: Option<String>,
    workflow: Option<String>,
    paused_reason: Option<String>,
    approver_role: Option<String>,
    cursor: Option<String>,
    #[serde(flatten)]
    bulk: super::bulk::BulkQuery,
}

/// The badge of a step record: a gate's outcome — an approval `approved`, `rejected` or
/// `expired`, a wait `timed_out` — rather than the generic `completed` of leaving it.
pub(super) fn record_badge(r: &StepRecord) -> &str {
    let output = &r.output;
    match output.get("status").and_then(Value::as_str) {
        Some(outcome @ ("approved" | "rejected" | "expired"))
            if output.get("approval_id").is_some() =>
        {
            outcome
        }
        _ if output.get("timed_out") == Some(&Value::Bool(true)) => "timed_out",
        _ => r.status.as_str(),
    }
}

pub(super) fn status_badge(status: ExecutionStatus) -> Markup {
    html! { span class={"badge " (status.as_str())} { (status.as_str()) } }
}

/// `GET /executions`.
pub async fn executions(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ExecutionQuery>,
) -> Page {
    let user = signed_in!(req, state);
    let empty = |s: &Option<String>| s.clone().filter(|v| !v.is_empty());
    let status = match empty(&query.status)
        .map(|s| s.parse::<ExecutionStatus>())
        .transpose()
    {
        Ok(s) => s,
        Err(err) => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(&user),
                "Unknown status",
                &err.to_string(),
            )
        }
    };
    let reason = match empty(&query.paused_reason)
        .map(|r| parse_reason(&r))
        .transpose()
    {
        Ok(r) => r,
        Err(err) => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(&user),
                "Unknown reason",
                &err.to_string(),
            )
        }
    };
    let filter = ExecutionFilter {
        status,
        workflow_key: empty(&query.workflow),
        paused_reason: reason,
        approver_role: empty(&query.approver_role),
        ..ExecutionFilter::default()
    };
    let request = PageRequest {
        limit: 50,
        cursor: empty(&query.cursor),
    };
    let page_of = match state.store.list_executions(&filter, &request).await {
        Ok(p) => p,
        Err(err) if matches!(err, tollgate_store::Error::Invalid(_)) => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(&user),
                "Bad page",
                &err.to_string(),
            )
        }
        Err(err) => return internal(Some(&user), err),
    };
    let next = page_of.next_cursor.as_ref().map(|c| {
        format!(
            "/executions?status={}&workflow={}&paused_reason={}&approver_role={}&cursor={}",
            urlencode(query.status.as_deref().unwrap_or("")),
            urlencode(query.workflow.as_deref().unwrap_or("")),
            urlencode(query.paused_reason.as_deref().unwrap_or("")),
            urlencode(query.approver_role.as_deref().unwrap_or("")),
            urlencode(c)
        )
    });
    let bulk = super::bulk::section(
        &state,
        &user,
        status,
        filter.workflow_key.as_deref(),
        &query.bulk,
    )
    .await;
    let now = now(&state);
    page(
        StatusCode::OK,
        "Executions",
        Some(&user),
        Section::Executions,
        html! {
            div.heading {
                h1 { "Executions" }
                a.button href="/executions/waiting" { "Waiting now" }
            }
            form.filters method="get" action="/executions" {
                label { "Status "
                    select name="status" {
                        option value="" { "any" }
                        @for s in ExecutionStatus::ALL {
                            option value=(s.as_str()) selected[status == Some(s)] { (s.as_str()) }
                        }
                    }
                }
                label { "Workflow " input type="text" name="workflow" value=(query.workflow.as_deref().unwrap_or("")) placeholder="workflow_id"; }
                label { "Paused for "
                    select name="paused_reason" {
                        option value="" { "any" }
                        @for r in ["approval", "event", "manual"] {
                            option value=(r) selected[query.paused_reason.as_deref() == Some(r)] { (r) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            (bulk)
            div.table-wrap {
                table.stack {
                    thead { tr { th { "Execution" } th { "About" } th { "Workflow" } th { "Status" } th { "At" } th { "Started" } } }
                    tbody {
                        @for e in &page_of.items {
                            tr {
                                td data-label="Execution" { a href={"/executions/" (e.id)} { code { (short(e.id)) } } }
                                td.about data-label="About" { (subject(&e.trigger_payload)) }
                                td data-label="Workflow" { (e.workflow_key) " " span.muted { (e.workflow_version) } }
                                td data-label="Status" {
                                    (status_badge(e.status))
                                    @if let Some(g) = e.gate.as_ref().filter(|_| e.status.is_gated()) { " " span.muted { (g.reason.as_str()) } }
                                    @if let Some(r) = e.result { " " span.result { "→ " (r.as_str()) } }
                                }
                                td data-label="At" { code { (e.gate.as_ref().map(|g| g.step_id.clone()).or_else(|| e.cursor.as_ref().map(|c| c.step_id.clone())).unwrap_or_default()) } }
                                td data-label="Started" { (when(e.started_at, now)) }
                            }
                        }
                    }
                }
            }
            @if page_of.items.is_empty() { p.muted { "No executions match." } }
            @if let Some(next) = next { p { a.button href=(next) { "Older →" } } }
        },
    )
}

/// What an execution is about, from its trigger payload: up to three top-level scalar
/// fields, identifiers first (`order_id o-7 · total 25000`), so that a list of
/// executions of one workflow tells them apart without opening each.
pub(super) fn subject(payload: &Value) -> String {
    let Some(fields) = payload.as_object() else {
        return String::new();
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.chars().take(40).collect::<String>()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let is_id = |k: &str| k == "id" || k.ends_with("_id") || k.ends_with("Id");
    let mut shown: Vec<(&String, String)> = fields
        .iter()
        .filter_map(|(k, v)| scalar(v).map(|v| (k, v)))
        .collect();
    shown.sort_by_key(|(k, _)| !is_id(k));
    shown
        .into_iter()
        .take(3)
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(" · ")
}

pub(super) fn short(id: Uuid) -> String {
    id.to_string()[..13].to_owned()
}

pub(super) fn age_bucket(age: chrono::TimeDelta) -> &'static str {
    if age < chrono::TimeDelta::hours(1) {
        "under 1 h"
    } else if age < chrono::TimeDelta::days(1) {
        "1 h – 1 d"
    } else if age < chrono::TimeDelta::days(7) {
        "1 – 7 d"
    } else {
        "over 7 d"
    }
}

/// At most this many gated executions are counted on the "Waiting now" page.
pub(super) const WAITING_SCAN: usize = 20_000;

/// `GET /executions/waiting`: paused and waiting executions by reason, approver role and
/// age.
pub async fn waiting(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let user = signed_in!(req, state);
    let now = now(&state);
    let mut by_reason: BTreeMap<&'static str, BTreeMap<&'static str, usize>> = BTreeMap::new();
    let mut scanned = 0;
    let mut request = PageRequest::first(500);
    loop {
        let page_of = match state.store.list_gated(&request).await {
            Ok(p) => p,
            Err(err) => return internal(Some(&user), err),
        };
        for e in &page_of.items {
            if let Some(g) = &e.gate {
                *by_reason
                    .entry(g.reason.as_str())
                    .or_default()
                    .entry(age_bucket(now - g.paused_at))
                    .or_default() += 1;
            }
        }
        scanned += page_of.items.len();
        match page_of.next_cursor {
            Some(c) if scanned < WAITING_SCAN => request = PageRequest::after(500, c),
            _ => break,
        }
    }
    // Pending requests per role, and how many of them are past their due time.
    let mut by_role: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut request = PageRequest::first(500);
    let pending = ApprovalFilter {
        status: Some(ApprovalStatus::Pending),
        ..ApprovalFilter::default()
    };
    let mut counted = 0;
    loop {
        let page_of = match state.store.list_approvals(&pending, &request).await {
            Ok(p) => p,
            Err(err) => return internal(Some(&user), err),
        };
        let ids: Vec<_> = page_of.items.iter().map(|a| a.id).collect();
        let slas = match state.store.slas(&ids).await {
            Ok(slas) => slas,
            Err(err) => return internal(Some(&user), err),
        };
        for a in &page_of.items {
            let overdue = slas
                .iter()
                .any(|s| s.approval_id == a.id && s.is_overdue(a.status, now));
            for role in &a.approver_roles {
                let counts = by_role.entry(role.clone()).or_default();
                counts.0 += 1;
                counts.1 += usize::from(overdue);
            }
        }
        counted += page_of.items.len();
        match page_of.next_cursor {
            Some(c) if counted < WAITING_SCAN => request = PageRequest::after(500, c),
            _ => break,
        }
    }
    let buckets = ["under 1 h", "1 h – 1 d", "1 – 7 d", "over 7 d"];
    page(
        StatusCode::OK,
        "Waiting now",
        Some(&user),
        Section::Executions,
        html! {
            div.heading { h1 { "Waiting now" } }
            section.card {
                h2 { "By reason and age" }
                div.table-wrap { table {
                    thead { tr { th { "Paused for" } @for b in buckets { th { (b) } } th { "Total" } } }
                    tbody {
                        @for (reason, ages) in &by_reason {
                            tr {
                                td { a href={"/executions?paused_reason=" (reason)} { (reason) } }
                                @for b in buckets { td { a href={"/executions?paused_reason=" (reason)} { (ages.get(b).copied().unwrap_or(0)) } } }
                                td { strong { (ages.values().sum::<usize>()) } }
                            }
                        }
                    }
                } }
                @if by_reason.is_empty() { p.muted { "Nothing is paused or waiting." } }
            }
            section.card {
                h2 { "Pending approvals by role" }
                ul.counts {
                    @for (role, (n, overdue)) in &by_role {
                        li { a href={"/executions?approver_role=" (urlencode(role)) "&paused_reason=approval"} { (role) } " " strong { (n) }
                            @if *overdue > 0 { " " span.badge.overdue { (overdue) " overdue" } } }
                    }
                }
                @if by_role.is_empty() { p.muted { "No pending approvals." } }
            }
            @if scanned >= WAITING_SCAN { p.muted { "Counted the oldest " (WAITING_SCAN) " only." } }
        },
    )
}

/// `GET /executions/{id}`.
pub async fn execution(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ExecutionPageQuery>,
) -> Page {
    let user = signed_in!(req, state);
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found(&user, "execution");
    };
    let e = match state.store.get_execution(id).await {
        Ok(e) => e,
        Err(err) if err.is_not_found() => return not_found(&user, "execution"),
        Err(err) => return internal(Some(&user), err),
    };
    let steps = state.store.list_steps(id).await.unwrap_or_default();
    let audit = state
        .store
        .list_resume_requests(id)
        .await
        .unwrap_or_default();
    // The first 200 notifications; the API pages through the rest.
    let notifications = state
        .store
        .list_notifications(
            &tollgate_store::NotificationFilter {
                execution_id: Some(id),
            },
            &tollgate_store::PageRequest::first(200),
        )
        .await
        .map(|page| page.items)
        .unwrap_or_default();
    let operator = Caller(user.principal.clone())
        .require(Permission::ControlExecutions)
        .is_ok();
    // The steps a retry may start from: the top-level steps of the pinned definition.
    let retry_steps: Vec<String> = if operator && retryable(&e) {
        state
            .store
            .get_snapshot(&e.snapshot_id)
            .await
            .map(|d| d.steps.iter().map(|s| s.id.clone()).collect())
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    // The versions a gated execution may move to, and, when asked, whether it can.
    let (migrate_versions, migrate_check) = if operator && e.status.is_gated() {
        migration_preview(&state, &e, query.check_version.as_deref()).await
    } else {
        (Vec::new(), None)
    };
    let now = now(&state);
    page(
        StatusCode::OK,
        &format!("Execution {}", short(e.id)),
        Some(&user),
        Section::Executions,
        html! {
            div.heading {
                h1 { (e.workflow_key) " " span.muted { (e.workflow_version) } }
                span #status class={"badge " (e.status.as_str())} { (e.status.as_str()) }
            }
            section.card {
                dl.facts {
                    dt { "Execution" } dd { code { (e.id) } }
                    dt { "Result" } dd { (e.result.map_or("—", |r| r.as_str())) }
                    dt { "Triggered by" } dd { (e.trigger_event) @if let Some(by) = &e.requested_by { " · " (by) } }
                    dt { "Started" } dd { (when(e.started_at, now)) }
                    @if let Some(done) = e.completed_at { dt { "Ended" } dd { (when(done, now)) } }
                    @if let Some(g) = e.gate.as_ref().filter(|_| e.status.is_gated()) {
                        dt { "Stopped at" } dd { code { (g.step_id) } " (" (g.reason.as_str()) ") " (when(g.paused_at, now)) }
                        @if let Some(approval) = g.approval_id { dt { "Approval" } dd { a href={"/approvals/" (approval)} { "open the request" } } }
                    }
                    @if let Some(err) = &e.error { dt { "Error" } dd.error { (err.message) } }
                }
                @if operator { (commands(&user, &e, &retry_steps)) }
                @if !migrate_versions.is_empty() { (migrate_form(&user, &e, &migrate_versions, migrate_check.as_ref())) }
            }
            section.card {
                h2 { "Path" }
                div.graph-scroll { img.graph src={"/workflows/" (e.workflow_id) "/graph.svg?execution=" (e.id)} alt={"The workflow " (e.workflow_key) " with the path this execution took"}; }
            }
            section.card {
                h2 { "Timeline" }
                ol.timeline {
                    @for (i, r) in steps.iter().enumerate() {
                        @let badge = record_badge(r);
                        li class={"step " (r.status.as_str())} {
                            div.row {
                                code { (r.step_id) } " " span.muted { (r.step_type) }
                                " " span class={"badge " (badge)} { (badge.replace('_', " ")) }
                                // Where the deadline sent it: the step recorded next.
                                @if badge == "expired" || badge == "timed_out" {
                                    @if let Some(next) = steps.get(i + 1) { " → " code { (next.step_id) } }
                                }
                                // A `first_of` step: which of its gates won.
                                @if let Some(gate) = r.output.get("gate").and_then(Value::as_str) {
                                    " " span.muted.won { "won by " (gate)
                                        @if let Some(t) = r.output.get("event_type").and_then(Value::as_str) { " " code { (t) } } }
                                }
                                @if r.visit > 1 { " " span.muted { "visit " (r.visit) } }
                                @if r.attempt > 1 { " " span.muted { "attempt " (r.attempt) } }
                                @if r.output.get("kept") == Some(&Value::Bool(true)) { " " span.muted { "kept from before the retry" } }
                                @if let Some(ms) = r.duration_ms() { " " span.muted { (ms) " ms" } }
                                " " (when(r.started_at, now))
                            }
                            @for w in &r.warnings { p.warning { (w) } }
                            @if let Some(err) = &r.error { p.error { (err.message) } }
                            @if !r.output.is_null() && r.output != Value::Object(serde_json::Map::new()) {
                                details { summary { "Output" } pre.json { (pretty(&r.output)) } }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { "Resume requests" }
                @if audit.is_empty() { p.muted { "None." } }
                div.table-wrap { table {
                    thead { tr { th { "When" } th { "Trigger" } th { "Who" } th { "Outcome" } th { "Note" } } }
                    tbody {
                        @for a in &audit {
                            tr {
                                td { (when(a.requested_at, now)) }
                                td { (serde_json::to_value(a.trigger).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                                td { (a.actor.as_deref().unwrap_or("—")) }
                                td { (serde_json::to_value(a.outcome).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()) }
                                td.muted { (audit_note(a)) }
                            }
                        }
                    }
                } }
            }
            @if !notifications.is_empty() {
                section.card id="notifications" {
                    h2 { "Notifications" }
                    div.table-wrap { table {
                        thead { tr { th { "Queued" } th { "Kind" } th { "Channel" } th { "To" } th { "Status" } th { "Attempts" } th { "Last error" } } }
                        tbody {
                            @for n in &notifications {
                                tr class={"notification " (n.status)} {
                                    td { (when(n.created_at, now)) }
                                    td { (n.kind) }
                                    td { (n.channel) }
                                    td { (if n.recipients.is_empty() { "—".to_owned() } else { n.recipients.join(", ") }) }
                                    td { span class={"badge " (n.status)} { (n.status) }
                                        @if let Some(at) = n.sent_at { " " (when(at, now)) }
                                        @if let Some(at) = n.next_attempt_at.filter(|_| n.status == "queued") { " " span.muted { "next " (when(at, now)) } } }
                                    td { (n.attempts) }
                                    td.muted { (n.last_error.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    } }
                }
            }
            section.card {
                h2 { "Context" }
                pre.json { (pretty(&e.context)) }
            }
        },
    )
}

/// Query of the execution page: `check_version` previews a migration to that version.
#[derive(Debug, Default, Deserialize)]
pub struct ExecutionPageQuery {
    #[serde(default)]
    check_version: Option<String>,
}

/// The other versions of a gated execution's workflow, and the dry run of a move to
/// `check` when one is asked for: `Ok(gate step there)` or `Err(why not)`.
async fn migration_preview(
    state: &AppState,
    e: &Execution,
    check: Option<&str>,
) -> (Vec<String>, Option<(String, Result<String, String>)>) {
    let mut versions = super::bulk::versions_of(state, &e.workflow_key).await;
    versions.retain(|v| *v != e.workflow_version);
    let check = match check.filter(|v| !v.is_empty()) {
        Some(version) => {
            let map = BTreeMap::new();
            let command = MigrateCommand {
                to_version: version,
                step_map: &map,
                reason: None,
                actor: None,
                origin: None,
            };
            let result = match state.control.migrate(e.id, command, true).await {
                Ok(item) => Ok(item.gate_step.unwrap_or_default()),
                Err(err) => Err(err.to_string()),
            };
            Some((version.to_owned(), result))
        }
        None => None,
    };
    (versions, check)
}

/// Check (a dry run, shown on the page) and move a gated execution to another version.
fn migrate_form(
    user: &User,
    e: &Execution,
    versions: &[String],
    check: Option<&(String, Result<String, String>)>,
) -> Markup {
    html! {
        div.commands {
            form.retry method="get" action={"/executions/" (e.id)} {
                label { "Move to version "
                    select name="check_version" aria-label="Version to move to" {
                        @for v in versions {
                            option value=(v) selected[check.is_some_and(|(c, _)| c == v)] { (v) }
                        }
                    }
                }
                button type="submit" { "Check" }
            }
            @if let Some((version, result)) = check {
                @match result {
                    Ok(step) => {
                        p #migrate-check.muted { "Version " (version) " can continue this execution at " code { (step) } "; its pending gate carries over." }
                        form method="post" action={"/executions/" (e.id) "/migrate"} {
                            (csrf_field(user))
                            input type="hidden" name="to_version" value=(version);
                            input type="text" name="reason" placeholder="Reason (optional)" aria-label="Reason for moving";
                            button.approve type="submit" { "Move to " (version) }
                        }
                    }
                    Err(why) => { p #migrate-check.error { (why) } }
                }
            }
        }
    }
}

/// How long a retry from the console waits for the execution's next stop before it
/// shows the page (well inside the request's time limit).
const CONSOLE_RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether an operator may retry it (docs/operations.md, "Retrying a failed execution").
fn retryable(e: &Execution) -> bool {
    matches!(
        e.status,
        ExecutionStatus::Failed | ExecutionStatus::TimedOut
    )
}

/// The note column of the resume audit: a refusal's reason, or what an operator's
/// retry asked for.
fn audit_note(a: &tollgate_model::records::ResumeRequest) -> String {
    let retry = (a.data.get("command").and_then(Value::as_str) == Some("retry")).then(|| {
        let step = a
            .data
            .get("from_step")
            .and_then(Value::as_str)
            .unwrap_or("the step that stopped it");
        let reason = a.data.get("reason").and_then(Value::as_str).unwrap_or("");
        format!("retry from {step}: {reason}")
    });
    match (retry, a.error.as_deref()) {
        (Some(retry), Some(error)) => format!("{retry} — {error}"),
        (Some(retry), None) => retry,
        (None, error) => error.unwrap_or("").to_owned(),
    }
}

pub(super) fn commands(user: &User, e: &Execution, retry_steps: &[String]) -> Markup {
    let stopped_at = e.cursor.as_ref().map(|c| c.step_id.as_str());
    let manual = e
        .gate
        .as_ref()
        .is_some_and(|g| g.reason == PauseReason::Manual)
        && e.status == ExecutionStatus::Paused;
    html! {
        div.commands {
            @if e.status == ExecutionStatus::Running {
                form method="post" action={"/executions/" (e.id) "/pause"} { (csrf_field(user)) button type="submit" { "Pause" } }
            }
            @if manual {
                form method="post" action={"/executions/" (e.id) "/resume"} { (csrf_field(user)) button.approve type="submit" { "Resume" } }
            }
            @if retryable(e) {
                form.retry method="post" action={"/executions/" (e.id) "/retry"} {
                    (csrf_field(user))
                    label { "Retry from "
                        select name="from_step" aria-label="Step to retry from" {
                            option value="" selected { "the step that stopped it" @if let Some(step) = stopped_at { " (" (step) ")" } }
                            @for step in retry_steps { option value=(step) { (step) } }
                        }
                    }
                    input type="text" name="reason" required placeholder="Reason (required)" aria-label="Reason for retrying";
                    button.approve type="submit" { "Retry" }
                    p.muted { "Side effects on the way run again with new idempotency keys; approvals already granted are kept unless you retry from the approval itself." }
                }
            }
            @if !e.status.is_terminal() {
                form method="post" action={"/executions/" (e.id) "/cancel"} {
                    (csrf_field(user))
                    input type="text" name="reason" placeholder="Reason (optional)" aria-label="Reason for cancelling";
                    button.reject type="submit" { "Cancel" }
                }
            }
        }
    }
}

/// `POST /executions/{id}/{pause|resume|cancel|retry|migrate}`.
pub async fn command(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<Form>,
) -> Page {
    let user = signed_in!(req, state);
    if let Err(refused) = operator_post(&user, &form) {
        return *refused;
    }
    let (id, command) = path.into_inner();
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found(&user, "execution");
    };
    let actor = Some(user.principal.subject.as_str());
    let reason = Some(form.reason.trim()).filter(|r| !r.is_empty());
    let outcome = match command.as_str() {
        "pause" => state.control.pause(id, actor, reason).await.map(|_| ()),
        "resume" => state
            .control
            .resume(id, actor, Value::Null)
            .await
            .map(|_| ()),
        "cancel" => state.control.cancel(id, actor, reason).await.map(|_| ()),
        "retry" => {
            let origin = crate::routes::executions::origin(&req, "console");
            let command = RetryCommand {
                from_step: Some(form.from_step.trim()).filter(|s| !s.is_empty()),
                reason: reason.unwrap_or(""),
                actor,
                origin: origin.as_deref(),
            };
            match state.control.retry(id, command).await {
                // The page then shows where the retry led (its next gate or its end),
                // not the moment it started.
                Ok(progress) => {
                    let patience = state.wait_timeout.min(CONSOLE_RETRY_WAIT);
                    if let Err(err) = progress.settled(&state.engine, patience).await {
                        tracing::warn!(execution_id = %id, "retried execution not settled: {err}");
                    }
                    Ok(())
                }
                Err(err) => Err(err),
            }
        }
        "migrate" => {
            let origin = crate::routes::executions::origin(&req, "console");
            let map = BTreeMap::new();
            let command = MigrateCommand {
                to_version: form.to_version.trim(),
                step_map: &map,
                reason,
                actor,
                origin: origin.as_deref(),
            };
            state.control.migrate(id, command, false).await.map(|_| ())
        }
        _ => return not_found(&user, "command"),
    };
    match outcome {
        Err(tollgate_resumer::Error::Invalid(message)) => {
            problem(StatusCode::BAD_REQUEST, Some(&user), "Refused", &message)
        }
        Ok(()) | Err(tollgate_resumer::Error::Conflict(_)) => {
            see_other(&format!("/executions/{id}"))
        }
        Err(tollgate_resumer::Error::NotFound(_)) => not_found(&user, "execution"),
        Err(err) => internal(Some(&user), err),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::console::relative;

    #[test]
    fn gate_records_show_their_outcome() {
        let record = |output: Value| -> StepRecord {
            serde_json::from_value(serde_json::json!({
                "id": Uuid::now_v7(), "execution_id": Uuid::now_v7(), "step_id": "approve",
                "step_type": "approval", "parent_step_id": null, "iteration": null, "visit": 1,
                "attempt": 1, "status": "completed", "input": null, "output": output,
                "warnings": [], "started_at": "2026-12-02T10:00:00Z",
                "completed_at": "2026-12-02T11:00:00Z", "error": null,
            }))
            .unwrap()
        };
        let approval =
            |status: &str| serde_json::json!({"approval_id": Uuid::now_v7(), "status": status});
        assert_eq!(record_badge(&record(approval("expired"))), "expired");
        assert_eq!(record_badge(&record(approval("approved"))), "approved");
        assert_eq!(
            record_badge(&record(
                serde_json::json!({"timed_out": true, "at": "2026-12-02T11:00:00Z"})
            )),
            "timed_out"
        );
        assert_eq!(
            record_badge(&record(serde_json::json!({"status": "expired"}))),
            "completed"
        );
        assert_eq!(record_badge(&record(Value::Null)), "completed");
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = chrono::Utc::now();
        assert_eq!(
            relative(now - chrono::TimeDelta::minutes(5), now),
            "5 min ago"
        );
        assert_eq!(relative(now + chrono::TimeDelta::hours(3), now), "in 3 h");
        let two_days = chrono::TimeDelta::days(2);
        assert_eq!(relative(now + two_days, now), "in 2 d");
        assert_eq!(
            relative(now + two_days - chrono::TimeDelta::minutes(1), now),
            "in 1 d 23 h"
        );
        assert_eq!(
            relative(now - chrono::TimeDelta::minutes(90), now),
            "1 h 30 min ago"
        );
        assert_eq!(relative(now + chrono::TimeDelta::days(9), now), "in 9 d");
        assert_eq!(age_bucket(chrono::TimeDelta::days(3)), "1 – 7 d");
    }
}
