//! The web console: server-rendered HTML for approvers and operators, at `/`.
//!
//! It goes through the same services and permission checks as the REST API (the
//! `ApprovalService`, `ExecutionControl`, the store, [`Caller::require`](crate::auth::Caller::require)), never around
//! them. Pages work without JavaScript; `console.js` only refreshes the inbox and keeps
//! relative times current. Every form carries the session's CSRF token, every page is
//! served with a `Content-Security-Policy` that allows no inline script.

pub mod graph;
mod pages;
pub mod session;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse};
use maud::{html, Markup, DOCTYPE};

use self::session::User;

/// The console's stylesheet and script, compiled into the binary.
const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The policy of every console page: only our own stylesheet and script, no inline
/// code, no framing, forms only to ourselves.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Registers the console's routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(pages::inbox))
        .route("/sign-in", web::get().to(pages::sign_in_form))
        .route("/sign-in", web::post().to(pages::sign_in))
        .route("/sign-out", web::post().to(pages::sign_out))
        .route("/approvals/bulk", web::get().to(pages::decide_many))
        .route("/approvals/bulk", web::post().to(pages::decide_many_post))
        .route("/approvals/{id}", web::get().to(pages::approval))
        .route("/approvals/{id}/approve", web::post().to(pages::approve))
        .route("/approvals/{id}/reject", web::post().to(pages::reject))
        .route("/approvals/{id}/comments", web::post().to(pages::comment))
        .route(
            "/approvals/{id}/hold/{command}",
            web::post().to(pages::hold),
        )
        .route("/executions", web::get().to(pages::executions))
        .route("/executions/waiting", web::get().to(pages::waiting))
        .route("/executions/{id}", web::get().to(pages::execution))
        .route(
            "/executions/bulk/{command}",
            web::post().to(pages::bulk_command),
        )
        .route("/executions/{id}/{command}", web::post().to(pages::command))
        .route("/workflows", web::get().to(pages::workflows))
        .route("/workflows/validate", web::get().to(pages::validate_form))
        .route("/workflows/validate", web::post().to(pages::validate))
        .route("/workflows/{id}", web::get().to(pages::workflow))
        .route("/workflows/{id}/graph.svg", web::get().to(pages::graph_svg))
        .route("/workflows/{id}/{command}", web::post().to(pages::toggle))
        .route("/d/{token}", web::get().to(pages::link_form))
        .route("/d/{token}", web::post().to(pages::link_decide))
        .route("/assets/console.css", web::get().to(css))
        .route("/assets/console.js", web::get().to(js));
}

async fn css() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

async fn js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", JS)
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

/// Which top-level section a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The inbox.
    Inbox,
    /// Executions and waiting counts.
    Executions,
    /// Workflows.
    Workflows,
    /// Sign-in (no navigation).
    None,
}

/// A whole HTML page with the console's headers.
pub fn page(
    status: actix_web::http::StatusCode,
    title: &str,
    user: Option<&User>,
    section: Section,
    body: Markup,
) -> HttpResponse {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Tollgate" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "Tollgate" }
                    @if let Some(user) = user {
                        nav {
                            a href="/" class=[(section == Section::Inbox).then_some("active")] { "Inbox" }
                            a href="/executions" class=[(section == Section::Executions).then_some("active")] { "Executions" }
                            a href="/workflows" class=[(section == Section::Workflows).then_some("active")] { "Workflows" }
                        }
                        form.signout method="post" action="/sign-out" {
                            (csrf_field(user))
                            span.who { (user.principal.subject) }
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(markup.into_string())
}

/// The hidden CSRF field of a form.
pub fn csrf_field(user: &User) -> Markup {
    html! { input type="hidden" name="_csrf" value=(user.csrf); }
}

/// A timestamp shown relative to now, kept current by `console.js`.
pub fn when(at: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) title=(at.format("%Y-%m-%d %H:%M:%S UTC")) { (relative(at, now)) }
    }
}

/// "5 min ago", "in 2 h".
pub fn relative(at: chrono::DateTime<chrono::Utc>, now: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (at - now).num_seconds();
    let (future, secs) = (secs > 0, secs.unsigned_abs());
    // Two units from an hour on, so that a deadline two days out, seen a minute later,
    // reads "in 1 d 23 h" rather than "in 1 d"; a week or more needs no hours.
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    let amount = if secs < 60 {
        format!("{secs} s")
    } else if secs < 3600 {
        format!("{minutes} min")
    } else if days == 0 && minutes > 0 {
        format!("{hours} h {minutes} min")
    } else if days == 0 {
        format!("{hours} h")
    } else if days < 7 && hours > 0 {
        format!("{days} d {hours} h")
    } else {
        format!("{days} d")
    };
    if future {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

/// Pretty JSON for a `<pre>`.
pub fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}
