//! The console's pages and form handlers, one file per area: signing in, the approval
//! inbox, executions, and workflows. What every page shares lives here.

use actix_web::http::header::LOCATION;
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use maud::html;
use serde::Deserialize;

use super::session::User;
use super::{page, session, Section};
use crate::state::AppState;

/// The signed-in user, or a redirect to the sign-in page.
macro_rules! signed_in {
    ($req:expr, $state:expr) => {
        match crate::console::session::current(&$req, &$state).await {
            Some(user) => user,
            None => return crate::console::pages::see_other("/sign-in"),
        }
    };
}

mod approvals;
mod bulk;
mod decide_many;
mod decision_form;
mod executions;
mod link;
mod sign_in;
mod workflows;

pub(super) use approvals::{approval, approve, comment, hold, inbox, reject};
pub(super) use bulk::bulk_command;
pub(super) use decide_many::{decide_many, decide_many_post};
pub(super) use executions::{command, execution, executions, waiting};
pub(super) use link::{link_decide, link_form};
pub(super) use sign_in::{sign_in, sign_in_form, sign_out};
pub(super) use workflows::{graph_svg, toggle, validate, validate_form, workflow, workflows};

pub(super) type Page = HttpResponse;

pub(super) fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((LOCATION, to))
        .finish()
}

pub(super) fn now(state: &AppState) -> chrono::DateTime<chrono::Utc> {
    state.engine.clock().now()
}

/// A page for a failure: the status and a sentence, in the console's frame.
pub(super) fn problem(status: StatusCode, user: Option<&User>, title: &str, message: &str) -> Page {
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

pub(super) fn not_found(user: &User, what: &str) -> Page {
    problem(
        StatusCode::NOT_FOUND,
        Some(user),
        "Not found",
        &format!("No such {what}."),
    )
}

pub(super) fn internal(user: Option<&User>, err: impl std::fmt::Display) -> Page {
    tracing::error!("console page failed: {err}");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        user,
        "Something went wrong",
        "The server log has the details.",
    )
}

/// Form fields every console POST carries.
#[derive(Debug, Default, Deserialize)]
pub struct Form {
    #[serde(default, rename = "_csrf")]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    comment: String,
    /// Assign: whom to.
    #[serde(default)]
    to: String,
    /// A decision as this subject's delegate.
    #[serde(default)]
    on_behalf_of: String,
    /// Bulk decisions: `approve` or `reject`.
    #[serde(default)]
    decision: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    definition: String,
    #[serde(default)]
    from_step: String,
    #[serde(default)]
    to_version: String,
    /// Bulk commands: the comma-separated executions their preview accepted.
    #[serde(default)]
    ids: String,
    /// Everything else the form posted: a decision form's `field.<name>` inputs.
    #[serde(flatten)]
    rest: std::collections::BTreeMap<String, String>,
}

/// Refuses an operator's command POST: a missing or wrong CSRF token, or a signed-in
/// subject who may not control executions.
pub(super) fn operator_post(user: &User, form: &Form) -> Result<(), Box<Page>> {
    check_csrf(user, form)?;
    crate::auth::Caller(user.principal.clone())
        .require(crate::auth::Permission::ControlExecutions)
        .map_err(|err| {
            Box::new(problem(
                StatusCode::FORBIDDEN,
                Some(user),
                "Not allowed",
                &err.to_string(),
            ))
        })
}

/// Refuses a POST whose CSRF token is missing or wrong.
pub(super) fn check_csrf(user: &User, form: &Form) -> Result<(), Box<Page>> {
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

pub(super) fn urlencode(text: &str) -> String {
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
