//! The approval inbox, one approval's page, and its decision forms.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::{html, Markup};
use serde::Deserialize;
use tollgate_model::records::{ApprovalRequest, ApprovalStatus, DecisionKind};
use tollgate_store::{ApprovalFilter, PageRequest};
use uuid::Uuid;

use super::{check_csrf, internal, not_found, now, problem, see_other, urlencode, Form, Page};
use crate::console::session::User;
use crate::console::{csrf_field, page, pretty, when, Section};
use crate::state::AppState;

/// `?notice=` shown after a redirect.
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    notice: Option<String>,
}

pub(super) fn entity(a: &ApprovalRequest) -> String {
    match (&a.entity_type, &a.entity_id) {
        (Some(t), Some(i)) => format!("{t} {i}"),
        (Some(t), None) => t.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => format!("step {}", a.step_id),
    }
}

pub(super) fn decision_forms(user: &User, a: &ApprovalRequest) -> Markup {
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

pub(super) async fn decide(
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
