//! The console's pages and form handlers.

use std::collections::BTreeMap;

use actix_web::http::header::LOCATION;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use tollgate_model::records::{ApprovalRequest, ApprovalStatus, DecisionKind, Execution};
use tollgate_model::{ExecutionStatus, PauseReason};
use tollgate_store::{ApprovalFilter, ExecutionFilter, PageRequest, WorkflowFilter};
use uuid::Uuid;

use super::graph::{self, Path};
use super::session::{self, User};
use super::{csrf_field, page, pretty, when, Section};
use crate::auth::{hash_key, Caller, Permission};
use crate::routes::executions::parse_reason;
use crate::state::AppState;

type Page = HttpResponse;

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, to))
        .finish()
}

fn now(state: &AppState) -> chrono::DateTime<chrono::Utc> {
    state.engine.clock().now()
}

/// A page for a failure: the status and a sentence, in the console's frame.
fn problem(status: StatusCode, user: Option<&User>, title: &str, message: &str) -> Page {
    page(
        status,
        title,
        user,
        Section::None,
        html! {
            section.card.problem {
                h1 { (title) }
                p { (message) }
                p { a href="/" { "Back to the inbox" } }
            }
        },
    )
}

fn not_found(user: &User, what: &str) -> Page {
    problem(
        StatusCode::NOT_FOUND,
        Some(user),
        "Not found",
        &format!("No such {what}."),
    )
}

fn internal(user: Option<&User>, err: impl std::fmt::Display) -> Page {
    tracing::error!("console page failed: {err}");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        user,
        "Something went wrong",
        "The server log has the details.",
    )
}

macro_rules! signed_in {
    ($req:expr, $state:expr) => {
        match session::current(&$req, &$state).await {
            Some(user) => user,
            None => return see_other("/sign-in"),
        }
    };
}

/// Form fields every console POST carries.
#[derive(Debug, Default, Deserialize)]
pub struct Form {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    definition: String,
}

/// Refuses a POST whose CSRF token is missing or wrong.
fn check_csrf(user: &User, form: &Form) -> Result<(), Box<Page>> {
    if session::tokens_match(&user.csrf, &form.csrf) {
        Ok(())
    } else {
        Err(Box::new(problem(
            StatusCode::FORBIDDEN,
            Some(user),
            "Form expired",
            "This form was not sent from a page of this session (missing or wrong CSRF token). Reload the page and try again.",
        )))
    }
}

// ------------------------------------------------------------------ sign-in

/// `GET /sign-in`.
pub async fn sign_in_form(req: HttpRequest) -> Page {
    let token = crate::auth::generate_key().unwrap_or_default();
    let mut res = sign_in_page(StatusCode::OK, &token, None);
    let _ = res.add_cookie(&session::cookie(
        &req,
        session::SIGN_IN_COOKIE,
        token,
        std::time::Duration::from_secs(3600),
    ));
    res
}

fn sign_in_page(status: StatusCode, token: &str, error: Option<&str>) -> Page {
    page(
        status,
        "Sign in",
        None,
        Section::None,
        html! {
            section.card.narrow {
                h1 { "Sign in" }
                p.muted { "Paste your Tollgate API key. It is checked once; the console keeps only a session." }
                @if let Some(error) = error { p.error role="alert" { (error) } }
                form method="post" action="/sign-in" {
                    input type="hidden" name="_csrf" value=(token);
                    label for="key" { "API key" }
                    input #key type="password" name="key" autocomplete="off" required placeholder="tg_…";
                    button.primary type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// `POST /sign-in`.
pub async fn sign_in(req: HttpRequest, state: web::Data<AppState>, form: web::Form<Form>) -> Page {
    let expected = req
        .cookie(session::SIGN_IN_COOKIE)
        .map(|c| c.value().to_owned())
        .unwrap_or_default();
    if !session::tokens_match(&expected, &form.csrf) {
        return sign_in_page(
            StatusCode::FORBIDDEN,
            &expected,
            Some("The sign-in form expired. Please try again."),
        );
    }
    let hash = hash_key(form.key.trim());
    match state.store.find_api_key(&hash).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return sign_in_page(
                StatusCode::UNAUTHORIZED,
                &expected,
                Some("That key is unknown or revoked."),
            );
        }
        Err(err) => return internal(None, err),
    }
    let Some(id) = session::start(&state, hash).await else {
        return internal(None, "no randomness for a session id");
    };
    let mut res = see_other("/");
    let _ = res.add_cookie(&session::cookie(
        &req,
        session::COOKIE,
        id,
        session::LIFETIME,
    ));
    let _ = res.add_removal_cookie(&session::removal(session::SIGN_IN_COOKIE));
    res
}

/// `POST /sign-out`.
pub async fn sign_out(req: HttpRequest, state: web::Data<AppState>, form: web::Form<Form>) -> Page {
    let user = signed_in!(req, state);
    if let Err(refused) = check_csrf(&user, &form) {
        return *refused;
    }
    if let Some(cookie) = req.cookie(session::COOKIE) {
        session::end(&state, cookie.value()).await;
    }
    let mut res = see_other("/sign-in");
    let _ = res.add_removal_cookie(&session::removal(session::COOKIE));
    res
}

// ------------------------------------------------------------------ inbox

/// `?notice=` shown after a redirect.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    notice: Option<String>,
}

fn entity(a: &ApprovalRequest) -> String {
    match (&a.entity_type, &a.entity_id) {
        (Some(t), Some(i)) => format!("{t} {i}"),
        (Some(t), None) => t.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => format!("step {}", a.step_id),
    }
}

fn decision_forms(user: &User, a: &ApprovalRequest) -> Markup {
    html! {
        div.decide {
            form method="post" action={"/approvals/" (a.id) "/approve"} {
                (csrf_field(user))
                input type="text" name="reason" placeholder="Reason (optional)" aria-label="Reason for approving";
                button.approve type="submit" { "Approve" }
            }
            form method="post" action={"/approvals/" (a.id) "/reject"} {
                (csrf_field(user))
                input type="text" name="reason" required placeholder="Reason (required)" aria-label="Reason for rejecting";
                button.reject type="submit" { "Reject" }
            }
        }
    }
}

/// `GET /`: what the signed-in subject may decide now.
pub async fn inbox(
    req: HttpRequest,
    state: web::Data<AppState>,
    notice: web::Query<Notice>,
) -> Page {
    let user = signed_in!(req, state);
    let filter = ApprovalFilter {
        status: Some(ApprovalStatus::Pending),
        decidable_by: Some(user.principal.clone()),
        ..ApprovalFilter::default()
    };
    let approvals = match state
        .store
        .list_approvals(&filter, &PageRequest::first(200))
        .await
    {
        Ok(page) => page.items,
        Err(err) => return internal(Some(&user), err),
    };
    // What each request is about: its entity, else its workflow and step.
    let mut titles = Vec::with_capacity(approvals.len());
    for a in &approvals {
        let title = if a.entity_type.is_some() || a.entity_id.is_some() {
            entity(a)
        } else {
            match state.store.get_execution(a.execution_id).await {
                Ok(e) => format!("{} · {}", e.workflow_key, a.step_id),
                Err(_) => entity(a),
            }
        };
        titles.push(title);
    }
    let now = now(&state);
    page(
        StatusCode::OK,
        "Inbox",
        Some(&user),
        Section::Inbox,
        html! {
            div.heading {
                h1 { "Inbox" }
                span.count { (approvals.len()) " waiting for you" }
            }
            @if let Some(notice) = &notice.notice { p.notice role="status" { (notice) } }
            @if approvals.is_empty() {
                section.card.empty { p { "Nothing waits for your decision." } }
            }
            ul.inbox data-refresh="30" {
                @for (a, title) in approvals.iter().zip(&titles) {
                    li.card.approval {
                        div.what {
                            a.title href={"/approvals/" (a.id)} { (title) }
                            @if let Some(reason) = &a.reason { p.reason { (reason) } }
                            dl.facts {
                                dt { "Requested by" } dd { (a.requested_by.as_deref().unwrap_or("—")) }
                                dt { "Age" } dd { (when(a.requested_at, now)) }
                                dt { "Deadline" }
                                dd {
                                    @match a.expires_at {
                                        Some(at) => { (when(at, now)) }
                                        None => { "none" }
                                    }
                                }
                                dt { "Approvals" } dd.quorum { (a.approvals()) " of " (a.required) }
                            }
                        }
                        (decision_forms(&user, a))
                    }
                }
            }
        },
    )
}

// ------------------------------------------------------------------ approvals

/// `GET /approvals/{id}`.
pub async fn approval(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Page {
    let user = signed_in!(req, state);
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found(&user, "approval");
    };
    let a = match state.store.get_approval(id).await {
        Ok(a) => a,
        Err(err) if err.is_not_found() => return not_found(&user, "approval"),
        Err(err) => return internal(Some(&user), err),
    };
    let execution = state.store.get_execution(a.execution_id).await.ok();
    let step = match &execution {
        Some(e) => state
            .store
            .get_snapshot(&e.snapshot_id)
            .await
            .ok()
            .and_then(|d| {
                d.step(&a.step_id)
                    .and_then(|s| serde_json::to_value(s).ok())
            }),
        None => None,
    };
    let may_decide = a.status == ApprovalStatus::Pending && a.authorize(&user.principal).is_ok();
    let now = now(&state);
    page(
        StatusCode::OK,
        &entity(&a),
        Some(&user),
        Section::Inbox,
        html! {
            div.heading {
                h1 { (entity(&a)) }
                span class={"badge " (a.status.as_str())} { (a.status.as_str()) }
            }
            section.card {
                @if let Some(reason) = &a.reason { p.reason { (reason) } }
                dl.facts {
                    dt { "Execution" } dd { a href={"/executions/" (a.execution_id)} { (a.execution_id) } }
                    dt { "Step" } dd { code { (a.step_id) } }
                    dt { "Approvers" } dd { (a.approver_roles.join(", ")) @if !a.approver_users.is_empty() { " · " (a.approver_users.join(", ")) } }
                    dt { "Requested by" } dd { (a.requested_by.as_deref().unwrap_or("—")) }
                    dt { "Requested" } dd { (when(a.requested_at, now)) }
                    dt { "Deadline" } dd { @match a.expires_at { Some(at) => { (when(at, now)) } None => { "none" } } }
                    dt { "Approvals" } dd { (a.approvals()) " of " (a.required) }
                }
                @if may_decide { (decision_forms(&user, &a)) }
            }
            section.card {
                h2 { "Decisions" }
                @if a.decisions.is_empty() { p.muted { "None yet." } }
                ol.timeline {
                    @for d in &a.decisions {
                        li {
                            strong { (d.decided_by) } " "
                            span class={"badge " (if d.decision == DecisionKind::Approve { "approved" } else { "rejected" })} {
                                (if d.decision == DecisionKind::Approve { "approved" } else { "rejected" })
                            }
                            " " (when(d.decided_at, now))
                            @if let Some(r) = &d.reason { p { (r) } }
                        }
                    }
                }
            }
            @if let Some(e) = &execution {
                section.card {
                    h2 { "Context" }
                    pre.json { (pretty(&e.context)) }
                }
            }
            @if let Some(step) = &step {
                section.card {
                    h2 { "The step it guards" }
                    pre.json { (pretty(step)) }
                }
            }
        },
    )
}

async fn decide(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: String,
    form: Form,
    kind: DecisionKind,
) -> Page {
    let user = signed_in!(req, state);
    if let Err(refused) = check_csrf(&user, &form) {
        return *refused;
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found(&user, "approval");
    };
    let reason = Some(form.reason.trim().to_owned()).filter(|r| !r.is_empty());
    if kind == DecisionKind::Reject && reason.is_none() {
        return problem(
            StatusCode::BAD_REQUEST,
            Some(&user),
            "A reason is needed",
            "Say why you reject this request.",
        );
    }
    let verb = if kind == DecisionKind::Approve {
        "Approved"
    } else {
        "Rejected"
    };
    match state
        .approvals
        .decide(id, &user.principal, kind, reason, serde_json::json!({}))
        .await
    {
        Ok(decided) => {
            let notice = format!("{verb}: {}", entity(&decided.approval));
            see_other(&format!("/?notice={}", urlencode(&notice)))
        }
        Err(tollgate_resumer::Error::Forbidden(message)) => problem(
            StatusCode::FORBIDDEN,
            Some(&user),
            "Not yours to decide",
            &message,
        ),
        Err(tollgate_resumer::Error::Conflict(_)) => {
            // Lost a race or decided already: say what happened instead.
            let what = match state.store.get_approval(id).await {
                Ok(a) => {
                    let last = a
                        .decisions
                        .last()
                        .map(|d| format!(" by {}", d.decided_by))
                        .unwrap_or_default();
                    format!("{} was already {}{last}.", entity(&a), a.status.as_str())
                }
                Err(_) => "That request was already decided.".to_owned(),
            };
            see_other(&format!("/?notice={}", urlencode(&what)))
        }
        Err(tollgate_resumer::Error::NotFound(_)) => not_found(&user, "approval"),
        Err(tollgate_resumer::Error::Invalid(message)) => problem(
            StatusCode::BAD_REQUEST,
            Some(&user),
            "Not accepted",
            &message,
        ),
        Err(err) => internal(Some(&user), err),
    }
}

/// `POST /approvals/{id}/approve`.
pub async fn approve(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<Form>,
) -> Page {
    decide(
        req,
        state,
        id.into_inner(),
        form.into_inner(),
        DecisionKind::Approve,
    )
    .await
}

/// `POST /approvals/{id}/reject`.
pub async fn reject(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<Form>,
) -> Page {
    decide(
        req,
        state,
        id.into_inner(),
        form.into_inner(),
        DecisionKind::Reject,
    )
    .await
}

fn urlencode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

// ------------------------------------------------------------------ executions

/// Filters of the executions page.
#[derive(Debug, Default, Deserialize)]
pub struct ExecutionQuery {
    status: Option<String>,
    workflow: Option<String>,
    paused_reason: Option<String>,
    approver_role: Option<String>,
    cursor: Option<String>,
}

fn status_badge(status: ExecutionStatus) -> Markup {
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
            div.table-wrap {
                table {
                    thead { tr { th { "Execution" } th { "Workflow" } th { "Status" } th { "At" } th { "Started" } } }
                    tbody {
                        @for e in &page_of.items {
                            tr {
                                td { a href={"/executions/" (e.id)} { code { (short(e.id)) } } }
                                td { (e.workflow_key) " " span.muted { (e.workflow_version) } }
                                td { (status_badge(e.status)) @if let Some(g) = e.gate.as_ref().filter(|_| e.status.is_gated()) { " " span.muted { (g.reason.as_str()) } } }
                                td { code { (e.gate.as_ref().map(|g| g.step_id.clone()).or_else(|| e.cursor.as_ref().map(|c| c.step_id.clone())).unwrap_or_default()) } }
                                td { (when(e.started_at, now)) }
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

fn short(id: Uuid) -> String {
    id.to_string()[..13].to_owned()
}

fn age_bucket(age: chrono::TimeDelta) -> &'static str {
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
const WAITING_SCAN: usize = 20_000;

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
    let mut by_role: BTreeMap<String, usize> = BTreeMap::new();
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
        for a in &page_of.items {
            for role in &a.approver_roles {
                *by_role.entry(role.clone()).or_default() += 1;
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
                    @for (role, n) in &by_role {
                        li { a href={"/executions?approver_role=" (urlencode(role)) "&paused_reason=approval"} { (role) } " " strong { (n) } }
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
    let operator = Caller(user.principal.clone())
        .require(Permission::ControlExecutions)
        .is_ok();
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
                @if operator { (commands(&user, &e)) }
            }
            section.card {
                h2 { "Path" }
                img.graph src={"/workflows/" (e.workflow_id) "/graph.svg?execution=" (e.id)} alt={"The workflow " (e.workflow_key) " with the path this execution took"};
            }
            section.card {
                h2 { "Timeline" }
                ol.timeline {
                    @for r in &steps {
                        li class={"step " (r.status.as_str())} {
                            div.row {
                                code { (r.step_id) } " " span.muted { (r.step_type) }
                                " " span class={"badge " (r.status.as_str())} { (r.status.as_str()) }
                                @if r.attempt > 1 { " " span.muted { "attempt " (r.attempt) } }
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
                                td.muted { (a.error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                } }
            }
            section.card {
                h2 { "Context" }
                pre.json { (pretty(&e.context)) }
            }
        },
    )
}

fn commands(user: &User, e: &Execution) -> Markup {
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

/// `POST /executions/{id}/{pause|resume|cancel}`.
pub async fn command(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<Form>,
) -> Page {
    let user = signed_in!(req, state);
    if let Err(refused) = check_csrf(&user, &form) {
        return *refused;
    }
    let (id, command) = path.into_inner();
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found(&user, "execution");
    };
    if let Err(err) = Caller(user.principal.clone()).require(Permission::ControlExecutions) {
        return problem(
            StatusCode::FORBIDDEN,
            Some(&user),
            "Not allowed",
            &err.to_string(),
        );
    }
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
        _ => return not_found(&user, "command"),
    };
    match outcome {
        Ok(()) | Err(tollgate_resumer::Error::Conflict(_)) => {
            see_other(&format!("/executions/{id}"))
        }
        Err(tollgate_resumer::Error::NotFound(_)) => not_found(&user, "execution"),
        Err(err) => internal(Some(&user), err),
    }
}

// ------------------------------------------------------------------ workflows

/// `GET /workflows`.
pub async fn workflows(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let user = signed_in!(req, state);
    let list = match state
        .store
        .list_workflows(&WorkflowFilter::default(), &PageRequest::first(500))
        .await
    {
        Ok(p) => p.items,
        Err(err) => return internal(Some(&user), err),
    };
    let operator = Caller(user.principal.clone())
        .require(Permission::WriteWorkflows)
        .is_ok();
    page(
        StatusCode::OK,
        "Workflows",
        Some(&user),
        Section::Workflows,
        html! {
            div.heading {
                h1 { "Workflows" }
                a.button href="/workflows/validate" { "Validate a definition" }
            }
            div.table-wrap { table {
                thead { tr { th { "Workflow" } th { "Version" } th { "Trigger" } th { "State" } @if operator { th {} } } }
                tbody {
                    @for w in &list {
                        tr {
                            td { a href={"/workflows/" (w.id)} { (w.definition.name) } br; code.muted { (w.workflow_id()) } }
                            td { (w.version()) }
                            td { (trigger_text(&w.definition.trigger)) }
                            td { span class={"badge " (if w.enabled { "completed" } else { "cancelled" })} { (if w.enabled { "enabled" } else { "disabled" }) } }
                            @if operator {
                                td {
                                    form method="post" action={"/workflows/" (w.id) "/" (if w.enabled { "disable" } else { "enable" })} {
                                        (csrf_field(&user))
                                        button type="submit" { (if w.enabled { "Disable" } else { "Enable" }) }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
            @if list.is_empty() { p.muted { "No workflows yet." } }
        },
    )
}

fn trigger_text(trigger: &tollgate_model::Trigger) -> String {
    match trigger {
        tollgate_model::Trigger::Event { event, .. } => format!("event {event}"),
        tollgate_model::Trigger::Manual => "manual".into(),
        tollgate_model::Trigger::Schedule { cron, timezone } => {
            format!("schedule {cron} {}", timezone.as_deref().unwrap_or("UTC"))
        }
    }
}

/// `GET /workflows/{id}`.
pub async fn workflow(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Page {
    let user = signed_in!(req, state);
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found(&user, "workflow");
    };
    let w = match state.store.get_workflow(id).await {
        Ok(w) => w,
        Err(err) if err.is_not_found() => return not_found(&user, "workflow"),
        Err(err) => return internal(Some(&user), err),
    };
    let json = serde_json::to_value(w.definition.as_ref()).unwrap_or(Value::Null);
    page(
        StatusCode::OK,
        &w.definition.name,
        Some(&user),
        Section::Workflows,
        html! {
            div.heading {
                h1 { (w.definition.name) " " span.muted { (w.version()) } }
                span class={"badge " (if w.enabled { "completed" } else { "cancelled" })} { (if w.enabled { "enabled" } else { "disabled" }) }
            }
            section.card {
                @if let Some(d) = &w.definition.description { p { (d) } }
                dl.facts {
                    dt { "Id" } dd { code { (w.workflow_id()) } }
                    dt { "Trigger" } dd { (trigger_text(&w.definition.trigger)) }
                    dt { "Executions" } dd { a href={"/executions?workflow=" (urlencode(w.workflow_id()))} { "see its executions" } }
                }
            }
            section.card {
                h2 { "Graph" }
                img.graph src={"/workflows/" (w.id) "/graph.svg"} alt={"The steps of " (w.definition.name)};
            }
            section.card {
                h2 { "Definition" }
                pre.json { (pretty(&json)) }
            }
        },
    )
}

/// `?execution=` of the graph.
#[derive(Debug, Default, Deserialize)]
pub struct GraphQuery {
    execution: Option<Uuid>,
}

/// `GET /workflows/{id}/graph.svg`: the definition as SVG (the one an execution ran,
/// with its path, when `?execution=` is given).
pub async fn graph_svg(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<GraphQuery>,
) -> HttpResponse {
    if session::current(&req, &state).await.is_none() {
        return HttpResponse::Unauthorized().finish();
    }
    let (definition, path) = match query.execution {
        Some(execution) => {
            let Ok(e) = state.store.get_execution(execution).await else {
                return HttpResponse::NotFound().finish();
            };
            let Ok(definition) = state.store.get_snapshot(&e.snapshot_id).await else {
                return HttpResponse::NotFound().finish();
            };
            let steps = state.store.list_steps(execution).await.unwrap_or_default();
            (definition, Some(Path::of(&steps)))
        }
        None => {
            let Ok(w) = Uuid::parse_str(&id).map_err(|_| ()) else {
                return HttpResponse::NotFound().finish();
            };
            match state.store.get_workflow(w).await {
                Ok(w) => (w.definition, None),
                Err(_) => return HttpResponse::NotFound().finish(),
            }
        }
    };
    let svg = graph::svg(&definition, path.as_ref());
    // The SVG is an image document of its own: its embedded <style> needs inline styles,
    // and it may run nothing.
    HttpResponse::Ok()
        .content_type("image/svg+xml")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; style-src 'unsafe-inline'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Cache-Control", "no-store"))
        .body(svg)
}

/// `POST /workflows/{id}/{enable|disable}`.
pub async fn toggle(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<Form>,
) -> Page {
    let user = signed_in!(req, state);
    if let Err(refused) = check_csrf(&user, &form) {
        return *refused;
    }
    if let Err(err) = Caller(user.principal.clone()).require(Permission::WriteWorkflows) {
        return problem(
            StatusCode::FORBIDDEN,
            Some(&user),
            "Not allowed",
            &err.to_string(),
        );
    }
    let (id, command) = path.into_inner();
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found(&user, "workflow");
    };
    let enabled = match command.as_str() {
        "enable" => true,
        "disable" => false,
        _ => return not_found(&user, "command"),
    };
    match state
        .store
        .set_workflow_enabled(id, enabled, now(&state))
        .await
    {
        Ok(_) => see_other("/workflows"),
        Err(err) if err.is_not_found() => not_found(&user, "workflow"),
        Err(err) => internal(Some(&user), err),
    }
}

/// A validation outcome: the warnings of a valid definition, or errors and warnings.
type Validation = Result<
    Vec<tollgate_model::Problem>,
    (Vec<tollgate_model::Problem>, Vec<tollgate_model::Problem>),
>;

fn validate_page(user: &User, text: &str, report: Option<Validation>) -> Page {
    page(
        StatusCode::OK,
        "Validate",
        Some(user),
        Section::Workflows,
        html! {
            div.heading { h1 { "Validate a definition" } }
            section.card {
                form method="post" action="/workflows/validate" {
                    (csrf_field(user))
                    label for="definition" { "Definition (JSON)" }
                    textarea #definition name="definition" rows="16" spellcheck="false" required { (text) }
                    button.primary type="submit" { "Validate" }
                }
            }
            @match report {
                Some(Ok(warnings)) => {
                    section.card.ok {
                        h2 { "Valid" }
                        @for w in &warnings { p.warning { code { (w.path) } " " (w.message) } }
                    }
                }
                Some(Err((errors, warnings))) => {
                    section.card.bad {
                        h2 { (errors.len()) " problem(s)" }
                        ul.problems {
                            @for e in &errors { li { code { (if e.path.is_empty() { "(document)" } else { e.path.as_str() }) } " " (e.message) } }
                        }
                        @for w in &warnings { p.warning { code { (w.path) } " " (w.message) } }
                    }
                }
                None => {}
            }
        },
    )
}

/// `GET /workflows/validate`.
pub async fn validate_form(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let user = signed_in!(req, state);
    validate_page(&user, "", None)
}

/// `POST /workflows/validate`.
pub async fn validate(req: HttpRequest, state: web::Data<AppState>, form: web::Form<Form>) -> Page {
    let user = signed_in!(req, state);
    if let Err(refused) = check_csrf(&user, &form) {
        return *refused;
    }
    let report = match tollgate_model::load_str(&form.definition) {
        Ok(loaded) => Ok(loaded.warnings),
        Err(report) => Err((report.errors, report.warnings)),
    };
    validate_page(&user, &form.definition, Some(report))
}

#[cfg(test)]
mod tests {
    use super::super::relative;
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        let now = chrono::Utc::now();
        assert_eq!(
            relative(now - chrono::TimeDelta::minutes(5), now),
            "5 min ago"
        );
        assert_eq!(relative(now + chrono::TimeDelta::hours(3), now), "in 3 h");
        assert_eq!(age_bucket(chrono::TimeDelta::days(3)), "1 – 7 d");
    }
}
