//! Deciding many approval requests at once from the console (docs/approvals.md, "Bulk
//! decisions"): a filter and a decision give a dry run listing what each request would
//! meet; the decision then goes to exactly the requests the preview accepted, each under
//! its own rules, as `POST /api/v1/approvals/decide` decides them.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use super::{check_csrf, problem, Form, Page};
use crate::console::{csrf_field, page, Section};
use crate::dto::{BulkDecidedDto, BulkDecisionDto, BulkFilterDto};
use crate::state::AppState;

/// How many requests one preview takes.
const PREVIEW_LIMIT: usize = 100;

/// The filter and decision the form asks for.
#[derive(Debug, Default, Deserialize)]
pub struct DecideManyQuery {
    #[serde(default)]
    workflow: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    older_than: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
}

fn some(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// The outcome table of a dry run or a bulk decision.
fn outcomes(result: &BulkDecidedDto) -> Markup {
    html! {
        div.table-wrap { table #bulk-outcomes {
            thead { tr { th { "Request" } th { "Outcome" } th { "Status" } th { "Why not" } } }
            tbody {
                @for item in &result.items {
                    tr class={"outcome " (item.outcome)} {
                        td { a href={"/approvals/" (item.approval_id)} { code { (item.approval_id.to_string()[..8]) } } }
                        td { (item.outcome.replace('_', " ")) }
                        td { (item.status.as_deref().unwrap_or("")) }
                        td.muted { (item.error.as_ref().map_or("", |e| e.message.as_str())) }
                    }
                }
            }
        } }
    }
}

/// `GET /approvals/bulk`: the form, and with a filter, its dry run and the confirm form.
pub async fn decide_many(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<DecideManyQuery>,
) -> Page {
    let user = signed_in!(req, state);
    let q = query.into_inner();
    let asked = [&q.workflow, &q.step, &q.role, &q.older_than]
        .iter()
        .any(|f| !f.trim().is_empty());
    let decision = if q.decision == "reject" {
        "reject"
    } else {
        "approve"
    };
    let preview = if asked {
        let body = BulkDecisionDto {
            ids: Vec::new(),
            filter: Some(BulkFilterDto {
                workflow: some(&q.workflow),
                step: some(&q.step),
                role: some(&q.role),
                older_than: some(&q.older_than),
            }),
            limit: Some(PREVIEW_LIMIT),
            decision: decision.to_owned(),
            reason: some(&q.reason),
            dry_run: true,
        };
        Some(
            crate::routes::approvals::bulk_decide(&state, &user.principal, body)
                .await
                .map_err(|err| err.envelope().error.message),
        )
    } else {
        None
    };
    page(
        StatusCode::OK,
        "Decide many",
        Some(&user),
        Section::Inbox,
        html! {
            div.heading { h1 { "Decide many" } }
            section.card {
                p.muted { "Choose the pending requests by workflow, step, role or age. The preview decides nothing: it lists what each request would meet under its own rules (yours to decide, still pending, before its deadline). The decision then goes to exactly the requests the preview accepted." }
                form.filters method="get" action="/approvals/bulk" {
                    label { "Workflow " input type="text" name="workflow" id="bulk-workflow" value=(q.workflow) placeholder="any"; }
                    label { "Step " input type="text" name="step" id="bulk-step" value=(q.step) placeholder="any"; }
                    label { "Role " input type="text" name="role" id="bulk-role" value=(q.role) placeholder="any"; }
                    label { "Older than " input type="text" name="older_than" id="bulk-older" value=(q.older_than) placeholder="e.g. 2h"; }
                    label { "Decision "
                        select name="decision" id="bulk-decision" {
                            option value="approve" selected[decision == "approve"] { "Approve" }
                            option value="reject" selected[decision == "reject"] { "Reject" }
                        }
                    }
                    input type="text" name="reason" id="bulk-reason" value=(q.reason) placeholder="Reason (required to reject)" aria-label="Reason";
                    button type="submit" id="bulk-preview" { "Preview" }
                }
            }
            @if let Some(preview) = preview {
                section.card #preview {
                    @match preview {
                        Ok(result) => {
                            h2 { "Preview: " (result.decided) " would be decided, " (result.refused) " refused" }
                            (outcomes(&result))
                            @if result.more { p.muted { "More requests match: decide these, then preview again." } }
                            @let ids: Vec<String> = result.items.iter().filter(|i| i.outcome == "would_decide").map(|i| i.approval_id.to_string()).collect();
                            @if ids.is_empty() {
                                p.muted { "None of them can be decided by you." }
                            } @else {
                                form method="post" action="/approvals/bulk" {
                                    (csrf_field(&user))
                                    input type="hidden" name="ids" value=(ids.join(","));
                                    input type="hidden" name="decision" value=(decision);
                                    input type="hidden" name="reason" value=(q.reason);
                                    button type="submit" id="bulk-confirm" class=(if decision == "approve" { "approve" } else { "reject" }) {
                                        (if decision == "approve" { "Approve " } else { "Reject " }) (ids.len())
                                    }
                                }
                            }
                        }
                        Err(why) => { p.error #preview-error { (why) } }
                    }
                }
            }
        },
    )
}

/// `POST /approvals/bulk`: decides the requests the preview accepted, and shows each
/// one's outcome.
pub async fn decide_many_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<Form>,
) -> Page {
    let user = signed_in!(req, state);
    if let Err(refused) = check_csrf(&user, &form) {
        return *refused;
    }
    let mut ids = Vec::new();
    for id in form.ids.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match Uuid::parse_str(id) {
            Ok(id) => ids.push(id),
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    Some(&user),
                    "Not accepted",
                    &format!("`{id}` is not a request id"),
                )
            }
        }
    }
    let body = BulkDecisionDto {
        ids,
        filter: None,
        limit: None,
        decision: if form.decision == "reject" {
            "reject"
        } else {
            "approve"
        }
        .to_owned(),
        reason: some(&form.reason),
        dry_run: false,
    };
    let result = match crate::routes::approvals::bulk_decide(&state, &user.principal, body).await {
        Ok(result) => result,
        Err(err) => {
            return problem(
                StatusCode::BAD_REQUEST,
                Some(&user),
                "Not accepted",
                &err.envelope().error.message,
            )
        }
    };
    page(
        StatusCode::OK,
        "Decided",
        Some(&user),
        Section::Inbox,
        html! {
            div.heading { h1 { "Decided" } }
            section.card #result {
                h2 { (result.decided) " decided, " (result.refused) " refused" }
                (outcomes(&result))
                p { a href="/" { "Back to the inbox" } }
            }
        },
    )
}
