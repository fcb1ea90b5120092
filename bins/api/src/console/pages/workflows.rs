//! Workflows: the list, one workflow's page and graph, enabling and disabling, and the
//! definition checker.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;
use serde::Deserialize;
use serde_json::Value;
use tollgate_model::definition::compare_versions;
use tollgate_store::{PageRequest, WorkflowFilter};
use uuid::Uuid;

use super::{check_csrf, internal, not_found, now, problem, see_other, urlencode, Form, Page};
use crate::auth::{Caller, Permission};
use crate::console::graph::Path;
use crate::console::session::User;
use crate::console::{csrf_field, graph, page, pretty, session, Section};
use crate::state::AppState;

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

pub(super) fn trigger_text(trigger: &tollgate_model::Trigger) -> String {
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
    // Every version of this workflow_id, highest first: events start only the highest
    // enabled one, which the page says when there are several.
    let mut versions = match state
        .store
        .list_workflows(
            &WorkflowFilter {
                workflow_id: Some(w.workflow_id().to_owned()),
                ..WorkflowFilter::default()
            },
            &PageRequest::first(100),
        )
        .await
    {
        Ok(page) => page.items,
        Err(err) => return internal(Some(&user), err),
    };
    versions.sort_by(|a, b| compare_versions(b.version(), a.version()));
    let starts = versions.iter().find(|v| v.enabled).map(|v| v.id);
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
                @if versions.len() > 1 {
                    h2 { "Versions" }
                    @if versions.iter().filter(|v| v.enabled).count() > 1 {
                        p.notice #versions-note {
                            "Several versions are enabled; events start only the highest enabled one"
                            @if let Some(v) = versions.iter().find(|v| Some(v.id) == starts) { " (" (v.version()) ")" }
                            ". Manual and scheduled starts name their version."
                        }
                    }
                    ul.versions {
                        @for v in &versions {
                            li {
                                a href={"/workflows/" (v.id)} { (v.version()) }
                                " " span class={"badge " (if v.enabled { "completed" } else { "cancelled" })} { (if v.enabled { "enabled" } else { "disabled" }) }
                                @if Some(v.id) == starts { " " span.muted { "events start this one" } }
                                @if v.id == w.id { " " span.muted { "(this page)" } }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { "Graph" }
                div.graph-scroll { img.graph src={"/workflows/" (w.id) "/graph.svg"} alt={"The steps of " (w.definition.name)}; }
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
pub(super) type Validation = Result<
    Vec<tollgate_model::Problem>,
    (Vec<tollgate_model::Problem>, Vec<tollgate_model::Problem>),
>;

pub(super) fn validate_page(user: &User, text: &str, report: Option<Validation>) -> Page {
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
