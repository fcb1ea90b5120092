//! The page a signed decision link opens (`/d/{token}`): the request and a form to
//! approve or reject it, for someone with no API key or console session. `GET` only
//! shows (mail scanners and chat unfurlers fetch links); the form's `POST` decides, as
//! the link's subject, under the API's rules (docs/notifications.md).

use std::collections::BTreeMap;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;
use tollgate_model::definition::FormSpec;
use tollgate_model::records::{ApprovalRequest, ApprovalStatus, DecisionKind};
use tollgate_resumer::Error;

use super::approvals::{approval_data, entity, request_form};
use super::decision_form::{self, Filled};
use super::{now, Page};
use crate::console::{page, when, Section};
use crate::links::LinkClaims;
use crate::state::{AppState, Links};

/// The decision form's fields.
#[derive(Debug, Deserialize)]
pub struct LinkForm {
    nonce: String,
    decision: String,
    #[serde(default)]
    reason: String,
    /// Everything else: the decision form's `field.<name>` inputs.
    #[serde(flatten)]
    rest: BTreeMap<String, String>,
}

/// `GET /d/{token}`: the decision page, or the page saying why the link decides nothing.
/// Never decides.
pub async fn link_form(state: web::Data<AppState>, token: web::Path<String>) -> Page {
    match open(&state, &token).await {
        Ok((links, claims, approval)) => match request_form(&state, approval.id).await {
            Ok(spec) => decision_page(
                &state,
                &links,
                &token,
                &claims,
                &approval,
                StatusCode::OK,
                spec.as_ref(),
                Filled::default(),
            ),
            Err(err) => unreadable(&approval, &err),
        },
        Err(refused) => refused,
    }
}

/// The decision page with a fresh nonce; after a refused approval (`filled`), with what
/// was typed and each problem next to its field.
#[allow(clippy::too_many_arguments)]
fn decision_page(
    state: &AppState,
    links: &Links,
    token: &str,
    claims: &LinkClaims,
    approval: &ApprovalRequest,
    status: StatusCode,
    spec: Option<&FormSpec>,
    filled: Filled,
) -> Page {
    let nonce = links.keys.form_nonce(token, now(state));
    let body = form(state, token, &nonce, claims, approval, spec, filled);
    private(page(status, &entity(approval), None, Section::None, body))
}

/// The page for a request whose definition did not read.
fn unreadable(approval: &ApprovalRequest, err: &Error) -> Page {
    tracing::error!(approval_id = %approval.id, "a decision link's form did not read: {err}");
    said(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again in a moment",
        "The server could not read this request.",
    )
}

/// `POST /d/{token}`: decides as the link's subject, once.
pub async fn link_decide(
    state: web::Data<AppState>,
    token: web::Path<String>,
    form: web::Form<LinkForm>,
) -> Page {
    let (links, claims, approval) = match open(&state, &token).await {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    if !links.keys.check_nonce(&token, &form.nonce, now(&state)) {
        return said(
            StatusCode::BAD_REQUEST,
            "This form has expired",
            "The decision page was opened too long ago, or not from this link. Open the link again to decide.",
        );
    }
    let kind = match form.decision.as_str() {
        "approve" => DecisionKind::Approve,
        "reject" => DecisionKind::Reject,
        other => {
            return said(
                StatusCode::BAD_REQUEST,
                "Unknown decision",
                &format!("`{other}` is neither approve nor reject."),
            )
        }
    };
    let reason = Some(form.reason.trim().to_owned()).filter(|r| !r.is_empty());
    let spec = match request_form(&state, approval.id).await {
        Ok(spec) => spec,
        Err(err) => return unreadable(&approval, &err),
    };
    let posted = decision_form::posted_fields(&form.rest);
    let data = match (&spec, kind) {
        (Some(spec), DecisionKind::Approve) => decision_form::posted_data(spec, &posted),
        _ => serde_json::Value::Object(serde_json::Map::new()),
    };
    let decided = state
        .approvals
        .decide_through(
            approval.id,
            &claims.principal(),
            Some("link"),
            kind,
            reason,
            data,
        )
        .await;
    match decided {
        Ok(decided) => {
            let a = &decided.approval;
            let (title, outcome) = match (kind, a.status) {
                (DecisionKind::Reject, _) => ("Rejected", "The request is rejected.".to_owned()),
                (_, ApprovalStatus::Approved) => {
                    ("Approved", "The request is approved.".to_owned())
                }
                _ => (
                    "Approval recorded",
                    format!(
                        "{} of {} approvals so far; the request waits for the others.",
                        a.approvals(),
                        a.quorum()
                    ),
                ),
            };
            said(
                StatusCode::OK,
                title,
                &format!("Thank you, {}. {outcome}", claims.subject),
            )
        }
        Err(Error::Forbidden(message)) => said(
            StatusCode::FORBIDDEN,
            "You may not decide this request",
            &message,
        ),
        Err(Error::Conflict(message)) => {
            said(StatusCode::CONFLICT, "Nothing was decided", &message)
        }
        Err(Error::Invalid(message)) => said(
            StatusCode::BAD_REQUEST,
            "Nothing was decided",
            &format!("{message}. Go back and give one."),
        ),
        Err(Error::FormInvalid(problems)) => decision_page(
            &state,
            &links,
            &token,
            &claims,
            &approval,
            StatusCode::BAD_REQUEST,
            spec.as_ref(),
            Filled {
                values: Some(&posted),
                problems: &problems,
                reason: Some(&form.reason),
            },
        ),
        Err(Error::NotFound(_)) => invalid(),
        Err(err) => {
            tracing::error!(approval_id = %approval.id, "a decision by link failed: {err}");
            said(
                StatusCode::SERVICE_UNAVAILABLE,
                "Nothing was decided",
                "The server could not record the decision. Try again in a moment.",
            )
        }
    }
}

/// The link's keys, claims and request when the link may still decide; otherwise the
/// page saying why not. A link that does not verify (forged, changed, expired, from
/// another server) gets the same page whatever the reason.
async fn open(
    state: &AppState,
    token: &str,
) -> Result<(std::sync::Arc<Links>, LinkClaims, ApprovalRequest), Page> {
    let Some(links) = state.links.clone() else {
        return Err(invalid());
    };
    let Some(claims) = links.keys.verify(token, now(state)) else {
        return Err(invalid());
    };
    let approval = match state.store.get_approval(claims.approval_id).await {
        Ok(approval) => approval,
        Err(err) if err.is_not_found() => return Err(invalid()),
        Err(err) => {
            tracing::error!(approval_id = %claims.approval_id, "a decision link's request did not read: {err}");
            return Err(said(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again in a moment",
                "The server could not read this request.",
            ));
        }
    };
    if approval.status != ApprovalStatus::Pending {
        let (title, message) = closed(&approval);
        return Err(said(StatusCode::CONFLICT, title, &message));
    }
    if crate::links::digest(&approval) != claims.digest {
        return Err(said(
            StatusCode::CONFLICT,
            "This request has changed",
            "What approvers are shown changed after this link was sent, so it decides nothing. Ask for a new link.",
        ));
    }
    if let Some(mine) = approval
        .decisions
        .iter()
        .find(|d| d.decided_by == claims.subject)
    {
        let verb = if mine.decision == DecisionKind::Approve {
            "approved"
        } else {
            "rejected"
        };
        return Err(said(
            StatusCode::CONFLICT,
            "You already decided",
            &format!(
                "{} {verb} this request at {}. A link decides once.",
                claims.subject,
                mine.decided_at.format("%Y-%m-%d %H:%M UTC")
            ),
        ));
    }
    Ok((links, claims, approval))
}

/// What became of a request that is no longer pending.
fn closed(a: &ApprovalRequest) -> (&'static str, String) {
    let by = a
        .decisions
        .last()
        .map(|d| format!(" by {}", d.decided_by))
        .unwrap_or_default();
    match a.status {
        ApprovalStatus::Approved => (
            "Already approved",
            format!("This request was approved{by}; nothing is left to decide."),
        ),
        ApprovalStatus::Rejected => (
            "Already rejected",
            format!("This request was rejected{by}; nothing is left to decide."),
        ),
        ApprovalStatus::Expired => (
            "Expired",
            "This request reached its deadline before it was decided.".to_owned(),
        ),
        ApprovalStatus::Superseded => (
            "No longer needed",
            "Another gate of this step fired first, so this request decides nothing.".to_owned(),
        ),
        ApprovalStatus::Cancelled => (
            "Cancelled",
            "The execution this request belonged to was cancelled.".to_owned(),
        ),
        ApprovalStatus::Pending => ("Pending", String::new()),
    }
}

/// The decision page's body.
fn form(
    state: &AppState,
    token: &str,
    nonce: &str,
    claims: &LinkClaims,
    a: &ApprovalRequest,
    spec: Option<&FormSpec>,
    filled: Filled,
) -> Markup {
    let now = now(state);
    let action = format!("/d/{token}");
    html! {
        div.heading {
            h1 { (entity(a)) }
            span class="badge pending" { "pending" }
        }
        section.card {
            @if let Some(reason) = &a.reason { p.reason { (reason) } }
            (approval_data(&a.data))
            dl.facts {
                dt { "Requested by" } dd { (a.requested_by.as_deref().unwrap_or("—")) }
                dt { "Requested" } dd { (when(a.requested_at, now)) }
                dt { "Deadline" } dd { @match a.expires_at { Some(at) => { (when(at, now)) } None => { "none" } } }
                dt { "Approvals" } dd id="quorum" { (a.approvals()) " of " (a.quorum()) }
                dt { "You decide as" } dd id="subject" {
                    (claims.subject)
                    @if let Some(role) = &claims.role { " (role " (role) ")" }
                }
                dt { "This link works until" } dd { (when(claims.expiry(), now)) }
            }
        }
        section.card.decide {
            form.with-fields[spec.is_some()] method="post" action=(action) novalidate[spec.is_some()] {
                input type="hidden" name="nonce" value=(nonce);
                input type="hidden" name="decision" value="approve";
                @if let Some(spec) = spec { (decision_form::fields(spec, &a.data, "", filled)) }
                label for="approve-reason" { "Comment (optional)" }
                textarea id="approve-reason" name="reason" rows="2" { (filled.reason.unwrap_or_default()) }
                button.approve type="submit" id="approve" { "Approve" }
            }
            form method="post" action=(action) {
                input type="hidden" name="nonce" value=(nonce);
                input type="hidden" name="decision" value="reject";
                label for="reject-reason" { "Reason (required to reject)" }
                textarea id="reject-reason" name="reason" rows="2" required {}
                button.reject type="submit" id="reject" { "Reject" }
            }
        }
    }
}

/// The page for a link that does not verify: no detail about why.
fn invalid() -> Page {
    said(
        StatusCode::NOT_FOUND,
        "This link is invalid",
        "It may have expired or been changed. Ask for a new one.",
    )
}

/// A page that says one thing.
fn said(status: StatusCode, title: &str, message: &str) -> Page {
    private(page(
        status,
        title,
        None,
        Section::None,
        html! {
            section.card.problem id="outcome" {
                h1 { (title) }
                p { (message) }
            }
        },
    ))
}

/// A link page is for its recipient only: never cached, never framed, never indexed,
/// and its address (the token) never sent onwards as a referrer.
fn private(mut res: HttpResponse) -> HttpResponse {
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::HeaderName::from_static("x-robots-tag"),
        HeaderValue::from_static("noindex, nofollow"),
    );
    res
}
