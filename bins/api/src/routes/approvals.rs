//! Approvals: the inbox and decisions.

use actix_web::{web, HttpRequest, HttpResponse};
use tollgate_model::records::{
    ApprovalRequest, ApprovalStatus, DecisionKind, Permission, Principal,
};
use tollgate_store::ApprovalFilter;

use super::{parse_id, settle, OptionalJson, PageParams, WaitParams};
use crate::auth::Caller;
use crate::dto::ApprovalQuery;
use crate::dto::{
    ApprovalDto, ApprovalList, ApprovalRungDto, ApprovalRungList, AssignDto, BulkDecidedDto,
    BulkDecisionDto, BulkItemDto, CommentDto, CommentList, DecidedDto, DecisionBody,
    DecisionLinkDto, DecisionLinksDto, ExecutionDto, LinkRecipientDto, NewCommentDto, NewLinksDto,
};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::links::LinkClaims;
use crate::state::AppState;

/// Parses an approval status filter.
pub fn parse_status(text: &str) -> ApiResult<ApprovalStatus> {
    [
        ApprovalStatus::Pending,
        ApprovalStatus::Approved,
        ApprovalStatus::Rejected,
        ApprovalStatus::Expired,
        ApprovalStatus::Cancelled,
        ApprovalStatus::Superseded,
    ]
    .into_iter()
    .find(|s| s.as_str() == text)
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown approval status `{text}` (expected pending, approved, rejected, expired, cancelled or superseded)"
        ))
    })
}

/// Approval requests, newest first.
#[utoipa::path(get, path = "/api/v1/approvals", tag = "approvals", params(ApprovalQuery, PageParams),
    responses((status = 200, body = ApprovalList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ApprovalQuery>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let filter = ApprovalFilter {
        status: query.status.as_deref().map(parse_status).transpose()?,
        role: query.role.clone(),
        execution_id: query.execution_id,
        decidable_by: query.mine.then(|| caller.0.clone()),
        workflow_key: query.workflow_key.clone(),
        step_id: query.step_id.clone(),
        requested_before: None,
        by_due: match query.sort.as_deref() {
            None | Some("newest") => false,
            Some("due") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "unknown sort `{other}` (expected newest or due)"
                )))
            }
        },
    };
    let page = state
        .store
        .list_approvals(&filter, &page.request()?)
        .await?;
    Ok(HttpResponse::Ok().json(ApprovalList {
        items: approval_dtos(&state, &page.items).await?,
        next_cursor: page.next_cursor,
    }))
}

/// Requests as the API shows them: with who holds each and its service level.
pub async fn approval_dtos(
    state: &AppState,
    approvals: &[ApprovalRequest],
) -> ApiResult<Vec<ApprovalDto>> {
    let ids: Vec<_> = approvals.iter().map(|a| a.id).collect();
    let (held, slas) = state.store.assignments_and_slas(&ids).await?;
    let now = state.engine.clock().now();
    Ok(approvals
        .iter()
        .map(|a| ApprovalDto::from(a).held(&held).with_sla(&slas, now))
        .collect())
}

/// The request as the API shows it: with who holds it and its service level.
pub async fn approval_dto(state: &AppState, approval: &ApprovalRequest) -> ApiResult<ApprovalDto> {
    let mut dtos = approval_dtos(state, std::slice::from_ref(approval)).await?;
    dtos.pop()
        .ok_or_else(|| ApiError::internal("no approval to show"))
}

/// One approval request with its decisions.
#[utoipa::path(get, path = "/api/v1/approvals/{id}", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id")),
    responses((status = 200, body = ApprovalDto), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn get(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "approval")?;
    let approval = state.store.get_approval(id).await?;
    Ok(HttpResponse::Ok().json(approval_dto(&state, &approval).await?))
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: &str,
    kind: DecisionKind,
    body: DecisionBody,
    wait: bool,
) -> ApiResult<HttpResponse> {
    let id = parse_id(id, "approval")?;
    let data = super::object_or_empty("data", body.data)?;
    let decided = match body.on_behalf_of.as_deref().map(str::trim) {
        Some("") => {
            return Err(ApiError::bad_request(
                "`on_behalf_of` must name a subject (or be left out)",
            ))
        }
        Some(delegator) => {
            state
                .approvals
                .decide_on_behalf(id, &caller.0, delegator, None, kind, body.reason, data)
                .await?
        }
        None => {
            state
                .approvals
                .decide(id, &caller.0, kind, body.reason, data)
                .await?
        }
    };
    let execution = settle(state, decided.progress, wait).await?;
    // Its holder and service level came with the decision: no read of their own.
    let approval = ApprovalDto::from(&decided.approval)
        .held(decided.assignment.as_slice())
        .with_sla(decided.sla.as_slice(), state.engine.clock().now());
    Ok(HttpResponse::Ok().json(DecidedDto {
        approval,
        execution: ExecutionDto::from(execution),
    }))
}

/// Approves (one vote towards the quorum).
#[utoipa::path(post, path = "/api/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id"), WaitParams), request_body = DecisionBody,
    responses((status = 200, body = DecidedDto),
        (status = 400, description = "`validation_failed` with a detail per field when `data` does not satisfy the step's decision form", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope),
        (status = 403, description = "the caller may not decide this request (or holds no delegation covering it, with `on_behalf_of`)", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "already decided, expired, cancelled or superseded, or already voted on by this caller (for themselves or as a delegate)", body = ErrorEnvelope)),
    security(("bearer" = ["approver", "admin"])))]
pub async fn approve(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    wait: web::Query<WaitParams>,
    body: OptionalJson<DecisionBody>,
) -> ApiResult<HttpResponse> {
    decide(
        &state,
        &caller,
        &id,
        DecisionKind::Approve,
        body.0,
        wait.wait,
    )
    .await
}

/// Rejects (a non-empty `reason` is required).
#[utoipa::path(post, path = "/api/v1/approvals/{id}/reject", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id"), WaitParams), request_body = DecisionBody,
    responses((status = 200, body = DecidedDto), (status = 400, description = "no reason", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, body = ErrorEnvelope)),
    security(("bearer" = ["approver", "admin"])))]
pub async fn reject(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    wait: web::Query<WaitParams>,
    body: OptionalJson<DecisionBody>,
) -> ApiResult<HttpResponse> {
    decide(
        &state,
        &caller,
        &id,
        DecisionKind::Reject,
        body.0,
        wait.wait,
    )
    .await
}

/// Makes signed decision links: one per recipient, each deciding once as its subject
/// under the same rules as this API (docs/notifications.md, "Decision links").
#[utoipa::path(post, path = "/api/v1/approvals/{id}/links", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id")), request_body = NewLinksDto,
    responses((status = 201, body = DecisionLinksDto),
        (status = 400, description = "a recipient the request does not address, or a malformed `expires_in`", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "the request is no longer pending, its deadline has passed, or this server serves no links", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn links(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: OptionalJson<NewLinksDto>,
) -> ApiResult<HttpResponse> {
    caller.require(Permission::MakeLinks)?;
    let id = parse_id(&id, "approval")?;
    let Some(links) = state.links.clone() else {
        return Err(ApiError::conflict(
            "decision links are off on this server (it was started without link keys)",
        ));
    };
    let body = body.0;
    let now = state.engine.clock().now();
    let until = match body.expires_in.as_deref() {
        Some(text) => Some(now + positive_duration("expires_in", text)?),
        None => None,
    };
    let approval = state.store.get_approval(id).await?;
    if approval.status != ApprovalStatus::Pending {
        return Err(ApiError::conflict(format!(
            "approval {id} is {}: a link to it would decide nothing",
            approval.status.as_str()
        )));
    }
    let default_end =
        now + chrono::Duration::from_std(links.lifetime).unwrap_or(chrono::Duration::days(7));
    let expires_at = match (until, approval.expires_at) {
        (Some(until), Some(deadline)) => until.min(deadline),
        (Some(until), None) => until,
        (None, Some(deadline)) => deadline,
        (None, None) => default_end,
    };
    if expires_at <= now {
        return Err(ApiError::conflict(format!(
            "approval {id}'s deadline has passed: a link to it would decide nothing"
        )));
    }
    let recipients = recipients(&approval, &body.recipients)?;
    let base = links.public_url.clone().unwrap_or_else(|| {
        let info = req.connection_info();
        format!("{}://{}", info.scheme(), info.host())
    });
    let digest = crate::links::digest(&approval);
    let made: Vec<DecisionLinkDto> = recipients
        .into_iter()
        .map(|(subject, role)| {
            let token = links.keys.mint(&LinkClaims {
                approval_id: id,
                subject: subject.clone(),
                role: role.clone(),
                digest: digest.clone(),
                expires_at: expires_at.timestamp(),
            });
            DecisionLinkDto {
                subject,
                role,
                url: format!("{base}/d/{token}"),
                expires_at,
            }
        })
        .collect();
    tracing::info!(execution_id = %approval.execution_id, step_id = %approval.step_id, approval_id = %id,
        made_by = %caller.subject(), links = made.len(), "decision links made");
    Ok(HttpResponse::Created().json(DecisionLinksDto { links: made }))
}

/// The (subject, role) each link decides as: the recipients asked for, each checked
/// against whom the request addresses, or by default each named user and each role.
fn recipients(
    approval: &ApprovalRequest,
    asked: &[LinkRecipientDto],
) -> ApiResult<Vec<(String, Option<String>)>> {
    let addressed = || {
        let mut who: Vec<String> = approval
            .approver_users
            .iter()
            .map(|u| format!("user `{u}`"))
            .collect();
        who.extend(
            approval
                .approver_roles
                .iter()
                .map(|r| format!("role `{r}`")),
        );
        if who.is_empty() {
            "nobody by name or role".to_owned()
        } else {
            who.join(", ")
        }
    };
    let mut out = Vec::new();
    if asked.is_empty() {
        out.extend(approval.approver_users.iter().map(|u| (u.clone(), None)));
        out.extend(
            approval
                .approver_roles
                .iter()
                .map(|r| (format!("role:{r}"), Some(r.clone()))),
        );
        if out.is_empty() {
            return Err(ApiError::bad_request(format!(
                "recipients: approval {} names no approvers to make links for; name them",
                approval.id
            )));
        }
    }
    for (i, r) in asked.iter().enumerate() {
        let at = format!("recipients[{i}]");
        let (subject, role) = match (&r.user, &r.role, &r.address) {
            (Some(user), None, None) if approval.approver_users.contains(user) => {
                (user.clone(), None)
            }
            (Some(user), None, None) => {
                return Err(ApiError::bad_request(format!(
                    "{at}.user: `{user}` is not named by approval {} (it addresses {})",
                    approval.id,
                    addressed()
                )))
            }
            (Some(_), _, _) => {
                return Err(ApiError::bad_request(format!(
                    "{at}: name a `user`, or a `role` with an optional `address`, not both"
                )))
            }
            (None, Some(role), address) if approval.approver_roles.contains(role) => (
                address.clone().unwrap_or_else(|| format!("role:{role}")),
                Some(role.clone()),
            ),
            (None, Some(role), _) => {
                return Err(ApiError::bad_request(format!(
                    "{at}.role: `{role}` is not an approver role of approval {} (it addresses {})",
                    approval.id,
                    addressed()
                )))
            }
            (None, None, _) => {
                return Err(ApiError::bad_request(format!(
                    "{at}: name a `user` or a `role`"
                )))
            }
        };
        if subject.trim().is_empty() {
            return Err(ApiError::bad_request(format!(
                "{at}.address: must not be empty"
            )));
        }
        out.push((subject, role));
    }
    for (subject, _) in &out {
        if !approval.allow_self_approval && approval.requested_by.as_deref() == Some(subject) {
            return Err(ApiError::bad_request(format!(
                "recipients: `{subject}` requested this approval and may not decide it (self-approval is off)"
            )));
        }
    }
    Ok(out)
}

/// `text` as a positive duration (`"30m"`, `"24h"`, `"7d"`); `400` naming `field`
/// otherwise.
fn positive_duration(field: &str, text: &str) -> ApiResult<chrono::Duration> {
    tollgate_bootstrap::config::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field}: `{text}` is not a positive duration (e.g. \"30m\", \"24h\", \"7d\")"
            ))
        })
}

/// Most requests one bulk decision takes.
pub const BULK_LIMIT: usize = 1_000;

/// Applies one decision to many pending requests (by id or by filter), each under its own
/// rules exactly as a single decision, recorded with channel `bulk`; or, with
/// `dry_run`, reports what each would do and decides nothing.
#[utoipa::path(post, path = "/api/v1/approvals/decide", tag = "approvals", request_body = BulkDecisionDto,
    responses((status = 200, description = "each request's outcome; refusals are per item", body = BulkDecidedDto),
        (status = 400, description = "neither or both of `ids` and `filter`, more than 1,000 ids, an empty filter, an unknown decision, or a rejection without a reason", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn decide_bulk(
    state: web::Data<AppState>,
    caller: Caller,
    body: crate::routes::Json<BulkDecisionDto>,
) -> ApiResult<HttpResponse> {
    Ok(HttpResponse::Ok().json(bulk_decide(&state, &caller.0, body.0).await?))
}

/// A bulk decision (or its dry run) by `principal`, as `POST /approvals/decide` makes
/// it; the console's bulk form calls it too.
pub async fn bulk_decide(
    state: &AppState,
    principal: &Principal,
    body: BulkDecisionDto,
) -> ApiResult<BulkDecidedDto> {
    let kind = match body.decision.as_str() {
        "approve" => DecisionKind::Approve,
        "reject" => DecisionKind::Reject,
        other => {
            return Err(ApiError::bad_request(format!(
                "decision: `{other}` is neither `approve` nor `reject`"
            )))
        }
    };
    let reason = body.reason.clone().filter(|r| !r.trim().is_empty());
    if kind == DecisionKind::Reject && reason.is_none() {
        return Err(ApiError::bad_request(
            "reason: a rejection needs a non-empty `reason`",
        ));
    }
    let now = state.engine.clock().now();
    let (approvals, more) = match (&body.filter, body.ids.is_empty()) {
        (Some(_), false) | (None, true) => {
            return Err(ApiError::bad_request(
                "give the requests either by `ids` or by `filter`, one of the two",
            ))
        }
        (None, false) => {
            if body.limit.is_some() {
                return Err(ApiError::bad_request(
                    "limit: only with `filter` (`ids` are all taken)",
                ));
            }
            if body.ids.len() > BULK_LIMIT {
                return Err(ApiError::bad_request(format!(
                    "ids: {} requests, at most {BULK_LIMIT} per call",
                    body.ids.len()
                )));
            }
            let mut found = Vec::with_capacity(body.ids.len());
            for id in &body.ids {
                match state.store.get_approval(*id).await {
                    Ok(a) => found.push(Ok(a)),
                    Err(err) if err.is_not_found() => found.push(Err(*id)),
                    Err(err) => return Err(err.into()),
                }
            }
            (found, false)
        }
        (Some(f), true) => {
            let older = match f.older_than.as_deref() {
                Some(text) => Some(now - positive_duration("filter.older_than", text)?),
                None => None,
            };
            let cap = body.limit.unwrap_or(BULK_LIMIT);
            if !(1..=BULK_LIMIT).contains(&cap) {
                return Err(ApiError::bad_request(format!(
                    "limit: {cap}, expected 1 to {BULK_LIMIT}"
                )));
            }
            if f.workflow.is_none() && f.step.is_none() && f.role.is_none() && older.is_none() {
                return Err(ApiError::bad_request(
                    "filter: name at least one of `workflow`, `step`, `role` or `older_than`",
                ));
            }
            let filter = ApprovalFilter {
                status: Some(ApprovalStatus::Pending),
                role: f.role.clone(),
                workflow_key: f.workflow.clone(),
                step_id: f.step.clone(),
                requested_before: older,
                ..ApprovalFilter::default()
            };
            let mut found = Vec::new();
            let mut page = tollgate_store::PageRequest::first(200);
            let more = loop {
                let listed = state.store.list_approvals(&filter, &page).await?;
                let mut left = false;
                for a in listed.items {
                    if found.len() == cap {
                        left = true;
                        break;
                    }
                    found.push(Ok(a));
                }
                match listed.next_cursor {
                    _ if left => break true,
                    Some(_) if found.len() == cap => break true,
                    Some(cursor) => page = tollgate_store::PageRequest::after(200, cursor),
                    None => break false,
                }
            };
            (found, more)
        }
    };
    let mut items = Vec::with_capacity(approvals.len());
    for found in approvals {
        let a = match found {
            Ok(a) => a,
            Err(id) => {
                items.push(refused(
                    id,
                    None,
                    &ApiError::not_found(format!("approval {id} not found")),
                ));
                continue;
            }
        };
        if body.dry_run {
            items.push(match would_decide(&a, principal, kind, now) {
                Ok(()) => BulkItemDto {
                    approval_id: a.id,
                    outcome: "would_decide".into(),
                    status: Some(a.status.as_str().into()),
                    error: None,
                },
                Err(err) => refused(a.id, Some(a.status), &err),
            });
            continue;
        }
        let decided = state
            .approvals
            .decide_through(
                a.id,
                principal,
                Some("bulk"),
                kind,
                reason.clone(),
                serde_json::Value::Object(serde_json::Map::new()),
            )
            .await;
        items.push(match decided {
            Ok(decided) => BulkItemDto {
                approval_id: a.id,
                outcome: "decided".into(),
                status: Some(decided.approval.status.as_str().into()),
                error: None,
            },
            Err(err @ (tollgate_resumer::Error::Store(_) | tollgate_resumer::Error::Engine(_))) => {
                // The store failed: the items so far stand, the rest are not tried.
                tracing::error!(approval_id = %a.id, "bulk decision stopped: {err}");
                items.push(refused(a.id, Some(a.status), &ApiError::from(err)));
                break;
            }
            Err(err) => refused(a.id, Some(a.status), &ApiError::from(err)),
        });
    }
    let decided = items.iter().filter(|i| i.error.is_none()).count();
    tracing::info!(decided_by = %principal.subject, dry_run = body.dry_run, decided,
        refused = items.len() - decided, "bulk decision");
    Ok(BulkDecidedDto {
        dry_run: body.dry_run,
        decided,
        refused: items.len() - decided,
        more,
        items,
    })
}

/// A refused item, with the error a single decision would get.
fn refused(id: uuid::Uuid, status: Option<ApprovalStatus>, err: &ApiError) -> BulkItemDto {
    BulkItemDto {
        approval_id: id,
        outcome: "refused".into(),
        status: status.map(|s| s.as_str().into()),
        error: Some(err.envelope().error),
    }
}

/// What a decision by `principal` would meet, without deciding: the checks of the
/// decision itself, in its order (still pending, an approver, not a second decision, the
/// deadline).
fn would_decide(
    a: &ApprovalRequest,
    principal: &tollgate_model::records::Principal,
    kind: DecisionKind,
    now: chrono::DateTime<chrono::Utc>,
) -> ApiResult<()> {
    if a.status != ApprovalStatus::Pending {
        return Err(ApiError::conflict(format!(
            "approval {} is {}",
            a.id,
            a.status.as_str()
        )));
    }
    let authorized = match kind {
        DecisionKind::Approve => a.authorize_approval(principal),
        DecisionKind::Reject => a.authorize(principal),
    };
    if let Err(refusal) = authorized {
        return Err(ApiError::forbidden(refusal.to_string()));
    }
    if a.decisions
        .iter()
        .any(|d| d.people().any(|p| p == principal.subject))
    {
        return Err(ApiError::conflict(format!(
            "{} already decided approval {}",
            principal.subject, a.id
        )));
    }
    if a.expires_at.is_some_and(|deadline| deadline <= now) {
        return Err(ApiError::conflict(format!(
            "approval {}'s deadline has passed",
            a.id
        )));
    }
    Ok(())
}

/// Longest comment, in characters.
pub const COMMENT_LIMIT: usize = 4_000;

/// Adds `body` to a request's thread as `author` (shared by the API and the console).
/// `400` for an empty or overlong body, `404` for an unknown request.
pub(crate) async fn add_comment(
    state: &AppState,
    approval_id: uuid::Uuid,
    author: &str,
    body: &str,
) -> ApiResult<tollgate_model::records::ApprovalComment> {
    let body = body.trim();
    if body.is_empty() {
        return Err(ApiError::bad_request("body: a comment needs some text"));
    }
    let length = body.chars().count();
    if length > COMMENT_LIMIT {
        return Err(ApiError::bad_request(format!(
            "body: {length} characters, at most {COMMENT_LIMIT}"
        )));
    }
    let comment = tollgate_model::records::ApprovalComment {
        id: uuid::Uuid::now_v7(),
        approval_id,
        author: author.to_owned(),
        body: body.to_owned(),
        created_at: state.engine.clock().now(),
    };
    state.store.add_comment(&comment).await?;
    tracing::info!(approval_id = %approval_id, author, "approval comment");
    Ok(comment)
}

/// A request's reminders and escalations, in order, and which fired when.
#[utoipa::path(get, path = "/api/v1/approvals/{id}/ladder", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id")),
    responses((status = 200, body = ApprovalRungList), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn ladder(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "approval")?;
    let rungs = state.store.list_rungs(id).await?;
    Ok(HttpResponse::Ok().json(ApprovalRungList {
        items: rungs.iter().map(ApprovalRungDto::from).collect(),
        next_cursor: None,
    }))
}

/// A request's comment thread, oldest first.
#[utoipa::path(get, path = "/api/v1/approvals/{id}/comments", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id"), PageParams),
    responses((status = 200, body = CommentList), (status = 400, body = ErrorEnvelope), (status = 401, body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn comments(
    state: web::Data<AppState>,
    _caller: Caller,
    id: web::Path<String>,
    page: web::Query<PageParams>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "approval")?;
    let page = state.store.list_comments(id, &page.request()?).await?;
    Ok(HttpResponse::Ok().json(CommentList {
        items: page.items.iter().map(CommentDto::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Comments on a request without deciding it: a question to the requester, a note for
/// the other approvers. Any key that can read the request may comment, before or after
/// the decision.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/comments", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id")), request_body = NewCommentDto,
    responses((status = 201, body = CommentDto), (status = 400, description = "an empty or overlong body", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn comment(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: crate::routes::Json<NewCommentDto>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "approval")?;
    let comment = add_comment(&state, id, caller.subject(), &body.0.body).await?;
    Ok(HttpResponse::Created().json(CommentDto::from(&comment)))
}

/// Claims a pending request for the caller ("I'm on it"): the other approvers see who
/// is on it. Only someone the request addresses may claim it; claiming one's own claim
/// again changes nothing. A claim is a signal, not a lock: anyone addressed may still
/// decide.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/claim", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id")),
    responses((status = 200, body = ApprovalDto), (status = 401, body = ErrorEnvelope),
        (status = 403, description = "the request does not address the caller", body = ErrorEnvelope),
        (status = 404, body = ErrorEnvelope),
        (status = 409, description = "someone else holds it, or it is no longer pending", body = ErrorEnvelope)),
    security(("bearer" = ["approver", "admin"])))]
pub async fn claim(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "approval")?;
    state.approvals.claim(id, &caller.0).await?;
    let approval = state.store.get_approval(id).await?;
    Ok(HttpResponse::Ok().json(approval_dto(&state, &approval).await?))
}

/// Lets go of a pending request: the caller's own claim or assignment, or anyone's for
/// an operator. Releasing a request nobody holds changes nothing.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/unclaim", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id")),
    responses((status = 200, body = ApprovalDto), (status = 401, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "someone else holds it (and the caller is no operator), or it is no longer pending", body = ErrorEnvelope)),
    security(("bearer" = [])))]
pub async fn unclaim(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "approval")?;
    state.approvals.unclaim(id, &caller.0).await?;
    let approval = state.store.get_approval(id).await?;
    Ok(HttpResponse::Ok().json(approval_dto(&state, &approval).await?))
}

/// Gives a pending request to an approver (roles `operator`, `admin`), replacing
/// whoever held it. `to` must be someone the request addresses: a user it names, or the
/// name of an API key holding one of its approver roles.
#[utoipa::path(post, path = "/api/v1/approvals/{id}/assign", tag = "approvals",
    params(("id" = Uuid, Path, description = "approval id")), request_body = AssignDto,
    responses((status = 200, body = ApprovalDto),
        (status = 400, description = "`to` is not someone the request addresses", body = ErrorEnvelope),
        (status = 401, body = ErrorEnvelope), (status = 403, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope),
        (status = 409, description = "it is no longer pending", body = ErrorEnvelope)),
    security(("bearer" = ["operator", "admin"])))]
pub async fn assign(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    body: crate::routes::Json<AssignDto>,
) -> ApiResult<HttpResponse> {
    let id = parse_id(&id, "approval")?;
    caller.require(Permission::AssignApprovals)?;
    let to = assignee_named(&state, &body.0.to).await?;
    state.approvals.assign(id, &caller.0, &to).await?;
    let approval = state.store.get_approval(id).await?;
    Ok(HttpResponse::Ok().json(approval_dto(&state, &approval).await?))
}

/// Who `name` is, for an assignment: the API key of that name (its roles), or a bare
/// subject when no key has it (the request must then name it as a user).
pub async fn assignee_named(state: &AppState, name: &str) -> ApiResult<Principal> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ApiError::bad_request("`to` must name a subject"));
    }
    let mut page = tollgate_store::PageRequest::first(500);
    loop {
        let keys = state.store.list_api_keys(&page).await?;
        if let Some(key) = keys.items.iter().find(|k| k.name == name) {
            return Ok(key.principal());
        }
        match keys.next_cursor {
            Some(cursor) => page = tollgate_store::PageRequest::after(500, cursor),
            None => {
                return Ok(Principal {
                    subject: name.to_owned(),
                    roles: Vec::new(),
                })
            }
        }
    }
}
