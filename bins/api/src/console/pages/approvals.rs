//! The approval inbox, one approval's page, and its decision forms.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use tollgate_model::definition::FormSpec;
use tollgate_model::records::{
    ApprovalAssignment, ApprovalRequest, ApprovalSla, ApprovalStatus, DecisionKind, Permission,
    Timestamp,
};
use tollgate_store::{ApprovalFilter, PageRequest};
use uuid::Uuid;

use super::decision_form::{self, Filled};
use super::{check_csrf, internal, not_found, now, problem, see_other, Form, Page};
use crate::console::session::User;
use crate::console::{csrf_field, page, pretty, when, Section};
use crate::state::AppState;

/// `?decided=<approval id>`: where a decision form redirects to. The inbox says what
/// became of that request, in words it makes from the stored request; nothing a URL
/// carries is ever shown as text (a link with a made-up "notice" would be a phishing aid
/// in a page that asks for keys).
#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    decided: Option<String>,
}

/// The approval step's `data` (rendered at the gate), for the approvers: an object as
/// labelled values, anything else as JSON; nothing when there is none.
pub(super) fn approval_data(data: &Value) -> Markup {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    html! {
        @match data {
            Value::Object(map) if !map.is_empty() => {
                dl.data {
                    @for (label, value) in map { dt { (label) } dd { (text(value)) } }
                }
            }
            Value::Null | Value::Object(_) => {}
            other => { pre.data { (pretty(other)) } }
        }
    }
}

/// Who may decide: the roles, then the named users, whichever there are.
pub(super) fn approvers(a: &ApprovalRequest) -> String {
    [a.approver_roles.join(", "), a.approver_users.join(", ")]
        .into_iter()
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" · ")
}

/// What the inbox says about the request `subject` just tried to decide: their own
/// decision (with the quorum still open, how far it got), or who decided it first.
pub(super) fn decision_notice(a: &ApprovalRequest, subject: &str) -> String {
    let what = entity(a);
    let mine = a.decisions.iter().rev().find(|d| d.decided_by == subject);
    match (mine.map(|d| d.decision), a.status) {
        (Some(DecisionKind::Approve), ApprovalStatus::Pending) => format!(
            "Your approval of {what} is recorded: {} of {} needed.",
            a.approvals(),
            a.quorum()
        ),
        (Some(DecisionKind::Approve), ApprovalStatus::Approved) => format!("Approved: {what}"),
        (Some(DecisionKind::Reject), ApprovalStatus::Rejected) => format!("Rejected: {what}"),
        _ => {
            let by = a
                .decisions
                .last()
                .map(|d| format!(" by {}", d.decided_by))
                .unwrap_or_default();
            format!("{what} was already {}{by}.", a.status.as_str())
        }
    }
}

pub(super) fn entity(a: &ApprovalRequest) -> String {
    match (&a.entity_type, &a.entity_id) {
        (Some(t), Some(i)) => format!("{t} {i}"),
        (Some(t), None) => t.clone(),
        (None, Some(i)) => i.clone(),
        (None, None) => format!("step {}", a.step_id),
    }
}

/// The approve and reject forms of request `a` for `user`, deciding for `for_whom` (a
/// delegator) when given. With a decision form, approving takes its fields; `prefix`
/// keeps their ids apart on a page with several requests.
pub(super) fn decision_forms(
    user: &User,
    a: &ApprovalRequest,
    for_whom: Option<&str>,
    form: Option<&FormSpec>,
    filled: Filled,
    prefix: &str,
) -> Markup {
    html! {
        div.decide {
            form.with-fields[form.is_some()] method="post" action={"/approvals/" (a.id) "/approve"} novalidate[form.is_some()] {
                (csrf_field(user))
                @if let Some(x) = for_whom { input type="hidden" name="on_behalf_of" value=(x); }
                @if let Some(spec) = form { (decision_form::fields(spec, &a.data, prefix, filled)) }
                input type="text" name="reason" value=[filled.reason] placeholder="Reason (optional)" aria-label="Reason for approving";
                button.approve type="submit" { "Approve" @if let Some(x) = for_whom { " for " (x) } }
            }
            form method="post" action={"/approvals/" (a.id) "/reject"} {
                (csrf_field(user))
                @if let Some(x) = for_whom { input type="hidden" name="on_behalf_of" value=(x); }
                input type="text" name="reason" required placeholder="Reason (required)" aria-label="Reason for rejecting";
                button.reject type="submit" { "Reject" @if let Some(x) = for_whom { " for " (x) } }
            }
        }
    }
}

/// The pending requests `user` may decide as a delegate now: for each delegation to
/// them, its delegator's requests that it covers and that `user` has not voted on, with
/// the delegator's name. Requests `user` may decide themselves are left to that.
async fn delegated(
    state: &AppState,
    user: &User,
    own: &[ApprovalRequest],
    now: Timestamp,
) -> Result<Vec<(ApprovalRequest, String)>, tollgate_store::Error> {
    let me = user.principal.subject.as_str();
    let mut found: Vec<(ApprovalRequest, String)> = Vec::new();
    for d in state.store.delegations_to(me, now).await? {
        let filter = ApprovalFilter {
            status: Some(ApprovalStatus::Pending),
            decidable_by: Some(d.delegator_principal()),
            workflow_key: d.workflow_key.clone(),
            role: d.role.clone(),
            ..ApprovalFilter::default()
        };
        let page = state
            .store
            .list_approvals(&filter, &PageRequest::first(200))
            .await?;
        for a in page.items {
            let voted = a.decisions.iter().any(|x| x.people().any(|p| p == me));
            let requested = !a.allow_self_approval && a.requested_by.as_deref() == Some(me);
            let taken = own.iter().any(|o| o.id == a.id) || found.iter().any(|(f, _)| f.id == a.id);
            if !voted && !requested && !taken {
                found.push((a, d.delegator.clone()));
            }
        }
    }
    Ok(found)
}

/// `GET /`: what the signed-in subject may decide now.
pub async fn inbox(
    req: HttpRequest,
    state: web::Data<AppState>,
    notice: web::Query<Notice>,
) -> Page {
    let user = signed_in!(req, state);
    let notice = match notice.decided.as_deref().map(Uuid::parse_str) {
        Some(Ok(id)) => state
            .store
            .get_approval(id)
            .await
            .ok()
            .map(|a| decision_notice(&a, &user.principal.subject)),
        _ => None,
    };
    let filter = ApprovalFilter {
        status: Some(ApprovalStatus::Pending),
        decidable_by: Some(user.principal.clone()),
        ..ApprovalFilter::default()
    };
    let own = match state
        .store
        .list_approvals(&filter, &PageRequest::first(200))
        .await
    {
        Ok(page) => page.items,
        Err(err) => return internal(Some(&user), err),
    };
    let for_others = match delegated(&state, &user, &own, now(&state)).await {
        Ok(found) => found,
        Err(err) => return internal(Some(&user), err),
    };
    // Each request with whom the signed-in subject decides it for (none: themselves).
    let mut approvals: Vec<(ApprovalRequest, Option<String>)> = own
        .into_iter()
        .map(|a| (a, None))
        .chain(for_others.into_iter().map(|(a, x)| (a, Some(x))))
        .collect();
    let ids: Vec<Uuid> = approvals.iter().map(|(a, _)| a.id).collect();
    let (held, slas) = match state.store.assignments_and_slas(&ids).await {
        Ok(both) => both,
        Err(err) => return internal(Some(&user), err),
    };
    let holder = |id: Uuid| held.iter().find(|h| h.approval_id == id);
    let sla = |id: Uuid| slas.iter().find(|s| s.approval_id == id);
    // Mine first, then nobody's, then someone else's. Within each, by due time (the
    // most overdue first, none last), then the more urgent, then newest first.
    let me = user.principal.subject.as_str();
    approvals.sort_by_key(|(a, _)| {
        let group = match holder(a.id) {
            Some(h) if h.assignee == me => 0,
            None => 1,
            Some(_) => 2,
        };
        let due = sla(a.id).and_then(|s| s.due_at);
        let rank = sla(a.id).map_or(1, ApprovalSla::rank);
        (group, due.is_none(), due, std::cmp::Reverse(rank))
    });
    // What each request is about (its entity, else its workflow and step), and what
    // approving it takes (its step's decision form, if any), read side by side.
    let looked_up =
        futures_util::future::try_join_all(approvals.iter().map(|(a, _)| about(&state, a))).await;
    let (titles, forms): (Vec<String>, Vec<Option<FormSpec>>) = match looked_up {
        Ok(found) => found.into_iter().unzip(),
        Err(err) => return internal(Some(&user), err),
    };
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
                a.button href="/approvals/bulk" id="decide-many" { "Decide many…" }
            }
            @if let Some(notice) = &notice { p.notice role="status" { (notice) } }
            @if approvals.is_empty() {
                section.card.empty { p { "Nothing waits for your decision." } }
            }
            ul.inbox data-refresh="30" {
                @for (((a, for_whom), title), form) in approvals.iter().zip(&titles).zip(&forms) {
                    li.card.approval {
                        div.what {
                            a.title href={"/approvals/" (a.id)} { (title) }
                            @if let Some(x) = for_whom { " " span.badge.delegated { "for " (x) } }
                            @if let Some(h) = holder(a.id) { " " (hold_badge(h, me)) }
                            @if let Some(s) = sla(a.id) { (sla_badges(s, a.status, now)) }
                            @if let Some(reason) = &a.reason { p.reason { (reason) } }
                            (approval_data(&a.data))
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
                                dt { "Approvals" } dd.quorum { (a.approvals()) " of " (a.quorum()) }
                                @if let Some(due) = sla(a.id).and_then(|s| s.due_at) { dt { "Due" } dd.due { (when(due, now)) } }
                            }
                        }
                        (decision_forms(&user, a, for_whom.as_deref(), form.as_ref(), Filled::default(), &format!("a-{}-", a.id)))
                    }
                }
            }
        },
    )
}

/// What an inbox card says request `a` is about (its entity, else its workflow and
/// step), and its step's decision form, if any.
async fn about(
    state: &AppState,
    a: &ApprovalRequest,
) -> Result<(String, Option<FormSpec>), tollgate_resumer::Error> {
    let execution = match state.store.get_execution(a.execution_id).await {
        Ok(e) => e,
        // Purged under it: nothing more to say, and nothing to fill in.
        Err(err) if err.is_not_found() => return Ok((entity(a), None)),
        Err(err) => return Err(err.into()),
    };
    let title = if a.entity_type.is_none() && a.entity_id.is_none() {
        format!("{} · {}", execution.workflow_key, a.step_id)
    } else {
        entity(a)
    };
    let form = form_at(state, &execution.snapshot_id, &a.step_id).await?;
    Ok((title, form))
}

/// The decision form of step `step_id` in the definition `snapshot_id`, if it has one.
async fn form_at(
    state: &AppState,
    snapshot_id: &str,
    step_id: &str,
) -> Result<Option<FormSpec>, tollgate_resumer::Error> {
    state.approvals.decision_form(snapshot_id, step_id).await
}

/// `GET /approvals/{id}`.
pub async fn approval(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Page {
    let user = signed_in!(req, state);
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found(&user, "approval");
    };
    approval_page(&state, &user, id, StatusCode::OK, Filled::default()).await
}

/// One approval's page; after a refused decision (`filled`), with what was posted and
/// its problems in the decision form.
async fn approval_page(
    state: &AppState,
    user: &User,
    id: Uuid,
    status: StatusCode,
    filled: Filled<'_>,
) -> Page {
    let a = match state.store.get_approval(id).await {
        Ok(a) => a,
        Err(err) if err.is_not_found() => return not_found(user, "approval"),
        Err(err) => return internal(Some(user), err),
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
    let form = match &execution {
        Some(e) => match form_at(state, &e.snapshot_id, &a.step_id).await {
            Ok(form) => form,
            Err(err) => return internal(Some(user), err),
        },
        None => None,
    };
    let may_decide = a.status == ApprovalStatus::Pending && a.authorize(&user.principal).is_ok();
    // Whom else the signed-in subject may decide it for, by delegation.
    let for_whom = if a.status == ApprovalStatus::Pending && !may_decide {
        match delegated(state, user, &[], now(state)).await {
            Ok(found) => found
                .into_iter()
                .find(|(d, _)| d.id == a.id)
                .map(|(_, x)| x),
            Err(err) => return internal(Some(user), err),
        }
    } else {
        None
    };
    // The thread's first page (200 comments); a longer one is in the API.
    let comments = state
        .store
        .list_comments(a.id, &PageRequest::first(200))
        .await
        .map(|page| page.items)
        .unwrap_or_default();
    let rungs = state.store.list_rungs(a.id).await.unwrap_or_default();
    let (mut held, mut slas) = state
        .store
        .assignments_and_slas(&[a.id])
        .await
        .unwrap_or_default();
    let (held, sla) = (held.pop(), slas.pop());
    let me = user.principal.subject.as_str();
    let pending = a.status == ApprovalStatus::Pending;
    let may_assign = pending && user.principal.may(Permission::AssignApprovals);
    let now = now(state);
    page(
        status,
        &entity(&a),
        Some(user),
        Section::Inbox,
        html! {
            div.heading {
                h1 { (entity(&a)) }
                span class={"badge " (a.status.as_str())} { (a.status.as_str()) }
                @if let Some(s) = &sla { (sla_badges(s, a.status, now)) }
            }
            @if a.status == ApprovalStatus::Superseded {
                p.notice id="superseded" {
                    "Superseded: another gate of step " code { (a.step_id) } " fired first"
                    @if let Some(won) = superseded_by(execution.as_ref(), &a.step_id) { " (" (won) ")" }
                    ", so this request decides nothing."
                }
            }
            section.card {
                @if let Some(reason) = &a.reason { p.reason { (reason) } }
                (approval_data(&a.data))
                dl.facts {
                    dt { "Execution" } dd { a href={"/executions/" (a.execution_id)} { (a.execution_id) } }
                    dt { "Step" } dd { code { (a.step_id) } }
                    dt { "Approvers" } dd { (approvers(&a)) }
                    dt { "Requested by" } dd { (a.requested_by.as_deref().unwrap_or("—")) }
                    dt { "Requested" } dd { (when(a.requested_at, now)) }
                    @if a.status == ApprovalStatus::Pending {
                        dt { "Deadline" } dd { @match a.expires_at { Some(at) => { (when(at, now)) } None => { "none" } } }
                    } @else {
                        // A settled request's deadline no longer counts down: say when
                        // it was settled (by its deadline, for an expired one).
                        dt { "Decided" } dd id="decided" { @match a.decided_at.or(a.expires_at) { Some(at) => { (when(at, now)) } None => { "—" } } }
                    }
                    dt { "Approvals" } dd { (a.approvals()) " of " (a.quorum()) }
                    @if let Some(due) = sla.as_ref().and_then(|s| s.due_at) { dt { "Due" } dd id="due" { (when(due, now)) } }
                    @if !rungs.is_empty() { dt { "Reminders" } dd id="ladder" { (ladder_summary(&rungs, now)) } }
                    dt { "On it" }
                    dd id="holder" {
                        @match &held {
                            Some(h) => { (hold_badge(h, me)) " " span.muted { (when(h.assigned_at, now)) } }
                            None => { span.muted { "nobody" } }
                        }
                    }
                }
                div.decide {
                    @if may_decide && held.is_none() {
                        form method="post" action={"/approvals/" (a.id) "/hold/claim"} {
                            (csrf_field(user))
                            button type="submit" id="claim" { "Claim" }
                        }
                    }
                    @if pending && held.as_ref().is_some_and(|h| h.assignee == me || may_assign) {
                        form method="post" action={"/approvals/" (a.id) "/hold/unclaim"} {
                            (csrf_field(user))
                            button type="submit" id="unclaim" { "Release" }
                        }
                    }
                    @if may_assign {
                        form method="post" action={"/approvals/" (a.id) "/hold/assign"} {
                            (csrf_field(user))
                            input type="text" name="to" id="assign-to" required placeholder="Assign to (key name)" aria-label="Assign to";
                            button type="submit" id="assign" { "Assign" }
                        }
                    }
                }
                @if may_decide { (decision_forms(user, &a, None, form.as_ref(), filled, "")) }
                @if let Some(x) = &for_whom {
                    p.muted { "You may decide this for " (x) ", who delegated it to you." }
                    (decision_forms(user, &a, Some(x), form.as_ref(), filled, ""))
                }
            }
            section.card {
                h2 { "Decisions" }
                @if a.decisions.is_empty() { p.muted { "None yet." } }
                ol.timeline {
                    @for d in &a.decisions {
                        li {
                            strong { (d.decided_by) } " "
                            @if let Some(by) = &d.delegate { span.muted { "(by " (by) " on their behalf) " } }
                            span class={"badge " (if d.decision == DecisionKind::Approve { "approved" } else { "rejected" })} {
                                (if d.decision == DecisionKind::Approve { "approved" } else { "rejected" })
                            }
                            " " (when(d.decided_at, now))
                            @if let Some(channel) = &d.channel { " " span.muted { "by " (channel) } }
                            @if let Some(r) = &d.reason { p { (r) } }
                        }
                    }
                }
            }
            section.card id="comments" {
                h2 { "Comments" }
                @if comments.is_empty() { p.muted { "None yet." } }
                ol.timeline {
                    @for c in &comments {
                        li.comment {
                            strong { (c.author) } " " (when(c.created_at, now))
                            p { (c.body) }
                        }
                    }
                }
                form method="post" action={"/approvals/" (a.id) "/comments"} {
                    (csrf_field(user))
                    textarea name="comment" id="comment" rows="2" required maxlength="4000"
                        aria-label="Comment" placeholder="Ask a question or leave a note (decides nothing)" {}
                    button type="submit" id="add-comment" { "Comment" }
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

/// The approval a form posted by `user` is about: `Err` with the page to answer when the
/// form did not come from this session or the id is not an approval's.
fn form_on_approval(user: &User, form: &Form, id: &str) -> Result<Uuid, Box<Page>> {
    check_csrf(user, form)?;
    Uuid::parse_str(id).map_err(|_| Box::new(not_found(user, "approval")))
}

pub(super) async fn decide(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: String,
    form: Form,
    kind: DecisionKind,
) -> Page {
    let user = signed_in!(req, state);
    let id = match form_on_approval(&user, &form, &id) {
        Ok(id) => id,
        Err(refused) => return *refused,
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
    // An approval of a request with a decision form carries its fields, by type.
    let posted = decision_form::posted_fields(&form.rest);
    let data = match kind {
        DecisionKind::Approve => match request_form(&state, id).await {
            Ok(Some(spec)) => decision_form::posted_data(&spec, &posted),
            Ok(None) => serde_json::json!({}),
            Err(tollgate_resumer::Error::NotFound(_)) => return not_found(&user, "approval"),
            Err(err) => return internal(Some(&user), err),
        },
        DecisionKind::Reject => serde_json::json!({}),
    };
    let for_whom = form.on_behalf_of.trim();
    let decided = if for_whom.is_empty() {
        state
            .approvals
            .decide(id, &user.principal, kind, reason, data)
            .await
    } else {
        state
            .approvals
            .decide_on_behalf(id, &user.principal, for_whom, None, kind, reason, data)
            .await
    };
    match decided {
        Ok(decided) => see_other(&format!("/?decided={}", decided.approval.id)),
        Err(tollgate_resumer::Error::Forbidden(message)) => problem(
            StatusCode::FORBIDDEN,
            Some(&user),
            "Not yours to decide",
            &message,
        ),
        // Lost a race or decided already: the inbox says what happened instead.
        Err(tollgate_resumer::Error::Conflict(_)) => see_other(&format!("/?decided={id}")),
        Err(tollgate_resumer::Error::NotFound(_)) => not_found(&user, "approval"),
        Err(tollgate_resumer::Error::Invalid(message)) => problem(
            StatusCode::BAD_REQUEST,
            Some(&user),
            "Not accepted",
            &message,
        ),
        // The request's page again, with what was typed and each problem at its field.
        Err(tollgate_resumer::Error::FormInvalid(problems)) => {
            let filled = Filled {
                values: Some(&posted),
                problems: &problems,
                reason: Some(&form.reason),
            };
            approval_page(&state, &user, id, StatusCode::BAD_REQUEST, filled).await
        }
        Err(err) => internal(Some(&user), err),
    }
}

/// The decision form of approval `id`'s step, in its execution's pinned definition.
pub(super) async fn request_form(
    state: &AppState,
    id: Uuid,
) -> Result<Option<FormSpec>, tollgate_resumer::Error> {
    let pin = state.store.approval_pin(id).await?;
    form_at(state, &pin.snapshot_id, &pin.step_id).await
}

/// `POST /approvals/{id}/comments`: adds to the thread, back to the request's page.
pub async fn comment(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    form: web::Form<Form>,
) -> Page {
    let user = signed_in!(req, state);
    let id = match form_on_approval(&user, &form, &id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    match crate::routes::approvals::add_comment(&state, id, &user.principal.subject, &form.comment)
        .await
    {
        Ok(_) => see_other(&format!("/approvals/{id}#comments")),
        Err(err) if err.code() == "not_found" => not_found(&user, "approval"),
        Err(err) if err.code() == "bad_request" => problem(
            StatusCode::BAD_REQUEST,
            Some(&user),
            "Not accepted",
            &err.envelope().error.message,
        ),
        Err(err) => internal(
            Some(&user),
            err.cause()
                .map_or_else(|| err.envelope().error.message, str::to_owned),
        ),
    }
}

/// "urgent", "overdue": the badges of a request's service level (none for a `normal`
/// request that is on time).
fn sla_badges(s: &ApprovalSla, status: ApprovalStatus, now: Timestamp) -> Markup {
    html! {
        @if s.priority != "normal" { " " span class={"badge priority-" (s.priority)} { (s.priority) } }
        @if s.is_overdue(status, now) { " " span.badge.overdue { "overdue" } }
    }
}

/// "assigned to you", "claimed by maria": who holds a request, as `me` reads it.
fn hold_badge(h: &ApprovalAssignment, me: &str) -> Markup {
    let verb = if h.is_claim() {
        "claimed by"
    } else {
        "assigned to"
    };
    html! {
        @if h.assignee == me {
            span.badge.mine { (verb) " you" }
        } @else {
            span.badge.held { (verb) " " (h.assignee) }
        }
    }
}

/// `POST /approvals/{id}/hold/{claim|unclaim|assign}`: claims, releases or assigns
/// the request under the API's rules, back to its page.
pub async fn hold(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<Form>,
) -> Page {
    let user = signed_in!(req, state);
    let (id, command) = path.into_inner();
    let id = match form_on_approval(&user, &form, &id) {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    let done = match command.as_str() {
        "claim" => state.approvals.claim(id, &user.principal).await,
        "unclaim" => state.approvals.unclaim(id, &user.principal).await,
        "assign" => {
            if !user.principal.may(Permission::AssignApprovals) {
                return problem(
                    StatusCode::FORBIDDEN,
                    Some(&user),
                    "Not yours to assign",
                    Permission::AssignApprovals.describe(),
                );
            }
            match crate::routes::approvals::assignee_named(&state, &form.to).await {
                Ok(to) => state.approvals.assign(id, &user.principal, &to).await,
                Err(err) => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        Some(&user),
                        "Not accepted",
                        &err.envelope().error.message,
                    )
                }
            }
        }
        _ => return not_found(&user, "page"),
    };
    match done {
        Ok(_) => see_other(&format!("/approvals/{id}")),
        Err(tollgate_resumer::Error::NotFound(_)) => not_found(&user, "approval"),
        Err(tollgate_resumer::Error::Forbidden(message)) => {
            problem(StatusCode::FORBIDDEN, Some(&user), "Not allowed", &message)
        }
        Err(tollgate_resumer::Error::Conflict(message)) => {
            problem(StatusCode::CONFLICT, Some(&user), "Not now", &message)
        }
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

/// What won the `first_of` step whose approval was superseded, as its execution's
/// context records it: the event type, or the deadline.
fn superseded_by(
    execution: Option<&tollgate_model::records::Execution>,
    step_id: &str,
) -> Option<String> {
    let output = &execution?.context.get("steps")?.get(step_id)?;
    match output.get("gate")?.as_str()? {
        "event" => Some(format!("event `{}`", output.get("event_type")?.as_str()?)),
        "after" => Some("its deadline".to_owned()),
        _ => None,
    }
}

/// "reminded 2×, escalated to director 3 h ago; next: reminder in 20 h" — what the
/// request's ladder did and will do.
fn ladder_summary(rungs: &[tollgate_model::records::ApprovalRung], now: Timestamp) -> Markup {
    let fired = |r: &&tollgate_model::records::ApprovalRung| r.outcome.as_deref() == Some("fired");
    let reminded = rungs
        .iter()
        .filter(fired)
        .filter(|r| r.kind == "reminder")
        .count();
    let escalations: Vec<_> = rungs
        .iter()
        .filter(fired)
        .filter(|r| r.kind == "escalation")
        .collect();
    let next = rungs.iter().find(|r| r.fired_at.is_none());
    html! {
        @if reminded > 0 { "reminded " (reminded) "×" } @else { "not reminded yet" }
        @for r in &escalations {
            ", escalated to " (r.add_roles.iter().chain(&r.add_users).cloned().collect::<Vec<_>>().join(", "))
            @if let Some(at) = r.fired_at { " " (when(at, now)) }
        }
        @if let Some(r) = next { span.muted { "; next: " (r.kind) " " (when(r.due_at, now)) } }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tollgate_model::records::Decision;

    use super::*;

    fn request(
        required: u32,
        status: ApprovalStatus,
        decisions: &[(&str, DecisionKind)],
    ) -> ApprovalRequest {
        let mut a: ApprovalRequest = serde_json::from_value(serde_json::json!({
            "id": Uuid::now_v7(), "execution_id": Uuid::now_v7(), "step_id": "approve", "visit": 1,
            "entity_type": "expense", "entity_id": "e-5", "approver_roles": ["manager"],
            "approver_users": [], "required": required, "status": status, "reason": null,
            "data": {}, "decisions": [], "requested_by": "shop", "allow_self_approval": false,
            "requested_at": "2026-12-02T10:00:00Z", "expires_at": null, "decided_at": null,
        }))
        .unwrap();
        a.decisions = decisions
            .iter()
            .map(|(who, kind)| Decision {
                decided_by: (*who).into(),
                decision: *kind,
                reason: None,
                data: serde_json::Value::Null,
                decided_at: a.requested_at,
                channel: None,
                delegate: None,
            })
            .collect();
        a
    }

    #[test]
    fn approvers_are_listed_without_a_stray_separator() {
        let mut a = request(1, ApprovalStatus::Pending, &[]);
        assert_eq!(approvers(&a), "manager");
        a.approver_users = vec!["ann".into(), "bo".into()];
        assert_eq!(approvers(&a), "manager · ann, bo");
        a.approver_roles.clear();
        assert_eq!(approvers(&a), "ann, bo");
    }

    #[test]
    fn notices_say_what_became_of_the_request() {
        use ApprovalStatus::{Approved, Pending, Rejected};
        use DecisionKind::{Approve, Reject};
        assert_eq!(
            decision_notice(&request(2, Pending, &[("ann", Approve)]), "ann"),
            "Your approval of expense e-5 is recorded: 1 of 2 needed."
        );
        assert_eq!(
            decision_notice(&request(1, Approved, &[("ann", Approve)]), "ann"),
            "Approved: expense e-5"
        );
        assert_eq!(
            decision_notice(&request(1, Rejected, &[("ann", Reject)]), "ann"),
            "Rejected: expense e-5"
        );
        assert_eq!(
            decision_notice(&request(1, Approved, &[("bob", Approve)]), "ann"),
            "expense e-5 was already approved by bob."
        );
    }
}
