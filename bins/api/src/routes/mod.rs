//! The route table of docs/api.md and what the handlers share.
//!
//! Every route is listed once in [`table`]; the server registers exactly that table and
//! the OpenAPI document is checked against it (see the `openapi` test), so neither can
//! drift from the other.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header::{self, ALLOW};
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tollgate_resumer::Progress;
use tollgate_store::PageRequest;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::telemetry::RouteTemplate;

pub mod approvals;
pub mod delegations;
pub mod events;
pub mod executions;
pub mod keys;
pub mod meta;
pub mod records;
pub mod schedules;
pub mod workflows;

/// The API's base path.
pub const BASE: &str = "/api/v1";

/// Every route: method, path template, handler.
pub fn table() -> Vec<(Method, &'static str, actix_web::Route)> {
    vec![
        at(Method::GET, "/health/live", meta::live),
        at(Method::GET, "/health/ready", meta::ready),
        at(Method::GET, "/metrics", meta::metrics),
        at(Method::GET, "/api/v1/openapi.json", meta::openapi),
        at(Method::GET, "/api/v1/api-keys", keys::list),
        at(Method::POST, "/api/v1/api-keys", keys::create),
        at(Method::DELETE, "/api/v1/api-keys/{id}", keys::delete),
        at(Method::GET, "/api/v1/whoami", keys::whoami),
        at(Method::GET, "/api/v1/workflows", workflows::list),
        at(Method::POST, "/api/v1/workflows", workflows::create),
        at(
            Method::POST,
            "/api/v1/workflows/validate",
            workflows::validate,
        ),
        at(Method::GET, "/api/v1/workflows/{id}", workflows::get),
        at(Method::PUT, "/api/v1/workflows/{id}", workflows::replace),
        at(Method::DELETE, "/api/v1/workflows/{id}", workflows::delete),
        at(
            Method::POST,
            "/api/v1/workflows/{id}/enable",
            workflows::enable,
        ),
        at(
            Method::POST,
            "/api/v1/workflows/{id}/disable",
            workflows::disable,
        ),
        at(
            Method::POST,
            "/api/v1/workflows/{id}/execute",
            workflows::execute,
        ),
        at(
            Method::GET,
            "/api/v1/workflows/{id}/schedules",
            schedules::list_for_workflow,
        ),
        at(
            Method::POST,
            "/api/v1/workflows/{id}/schedules",
            schedules::create,
        ),
        at(Method::GET, "/api/v1/schedules", schedules::list),
        at(Method::GET, "/api/v1/schedules/{id}", schedules::get),
        at(Method::PUT, "/api/v1/schedules/{id}", schedules::replace),
        at(Method::DELETE, "/api/v1/schedules/{id}", schedules::delete),
        at(Method::GET, "/api/v1/schedules/{id}/next", schedules::next),
        at(
            Method::GET,
            "/api/v1/schedules/{id}/ticks",
            schedules::ticks,
        ),
        at(Method::POST, "/api/v1/events", events::ingest),
        at(Method::GET, "/api/v1/events/{id}", events::get),
        at(Method::GET, "/api/v1/executions", executions::list),
        at(Method::GET, "/api/v1/executions/paused", executions::paused),
        at(
            Method::GET,
            "/api/v1/executions/quarantined",
            executions::quarantined,
        ),
        at(
            Method::POST,
            "/api/v1/executions/retry",
            executions::retry_bulk,
        ),
        at(
            Method::POST,
            "/api/v1/executions/migrate",
            executions::migrate_bulk,
        ),
        at(Method::GET, "/api/v1/executions/{id}", executions::get),
        at(
            Method::GET,
            "/api/v1/executions/{id}/trace",
            executions::trace,
        ),
        at(
            Method::GET,
            "/api/v1/executions/{id}/resume-requests",
            executions::resume_requests,
        ),
        at(
            Method::GET,
            "/api/v1/executions/{id}/notifications",
            executions::notifications,
        ),
        at(
            Method::POST,
            "/api/v1/executions/{id}/pause",
            executions::pause,
        ),
        at(
            Method::POST,
            "/api/v1/executions/{id}/resume",
            executions::resume,
        ),
        at(
            Method::POST,
            "/api/v1/executions/{id}/cancel",
            executions::cancel,
        ),
        at(
            Method::POST,
            "/api/v1/executions/{id}/retry",
            executions::retry,
        ),
        at(
            Method::POST,
            "/api/v1/executions/{id}/migrate",
            executions::migrate,
        ),
        at(
            Method::POST,
            "/api/v1/executions/{id}/events",
            executions::deliver,
        ),
        at(Method::GET, "/api/v1/approvals", approvals::list),
        // Before `{id}`: a resource matches by its pattern first, then by method.
        at(
            Method::POST,
            "/api/v1/approvals/decide",
            approvals::decide_bulk,
        ),
        at(Method::GET, "/api/v1/approvals/{id}", approvals::get),
        at(
            Method::POST,
            "/api/v1/approvals/{id}/approve",
            approvals::approve,
        ),
        at(
            Method::POST,
            "/api/v1/approvals/{id}/reject",
            approvals::reject,
        ),
        at(
            Method::POST,
            "/api/v1/approvals/{id}/links",
            approvals::links,
        ),
        at(
            Method::GET,
            "/api/v1/approvals/{id}/comments",
            approvals::comments,
        ),
        at(
            Method::GET,
            "/api/v1/approvals/{id}/ladder",
            approvals::ladder,
        ),
        at(
            Method::POST,
            "/api/v1/approvals/{id}/comments",
            approvals::comment,
        ),
        at(
            Method::POST,
            "/api/v1/approvals/{id}/claim",
            approvals::claim,
        ),
        at(Method::POST, "/api/v1/delegations", delegations::create),
        at(Method::GET, "/api/v1/delegations", delegations::list),
        at(
            Method::DELETE,
            "/api/v1/delegations/{id}",
            delegations::revoke,
        ),
        at(
            Method::POST,
            "/api/v1/approvals/{id}/unclaim",
            approvals::unclaim,
        ),
        at(
            Method::POST,
            "/api/v1/approvals/{id}/assign",
            approvals::assign,
        ),
        at(
            Method::GET,
            "/api/v1/records/{entity}/{entity_id}",
            records::get_record,
        ),
        at(Method::GET, "/api/v1/notifications", records::notifications),
    ]
}

/// One row of [`table`]: `method` on `path`, answered by `handler`.
fn at<F, Args>(
    method: Method,
    path: &'static str,
    handler: F,
) -> (Method, &'static str, actix_web::Route)
where
    F: actix_web::Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    (
        method.clone(),
        path,
        web::route().method(method).to(handler),
    )
}

/// The (method, path) pairs the server registers.
pub fn registered() -> Vec<(Method, &'static str)> {
    table().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// Registers [`table`]: one resource per path (in first-appearance order, so literal
/// segments such as `/executions/paused` win over `{id}`), answering other methods with
/// a 405 envelope and an `Allow` header. The API's resources are grouped in one scope
/// per collection (`/api/v1/approvals`, …): a request is matched against its
/// collection's few templates instead of every template of the API.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut paths: Vec<(&'static str, Vec<(Method, actix_web::Route)>)> = Vec::new();
    for (method, path, route) in table() {
        match paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, routes)) => routes.push((method, route)),
            None => paths.push((path, vec![(method, route)])),
        }
    }
    let mut scopes: Vec<(&'static str, Vec<actix_web::Resource>)> = Vec::new();
    for (path, routes) in paths {
        let Some((collection, rest)) = collection_of(path) else {
            cfg.service(resource(path, path, routes));
            continue;
        };
        let resource = resource(path, rest, routes);
        match scopes.iter_mut().find(|(c, _)| *c == collection) {
            Some((_, resources)) => resources.push(resource),
            None => scopes.push((collection, vec![resource])),
        }
    }
    for (collection, resources) in scopes {
        cfg.service(
            resources
                .into_iter()
                .fold(web::scope(collection), actix_web::Scope::service),
        );
    }
}

/// `/api/v1/approvals/{id}/approve` → (`/api/v1/approvals`, `/{id}/approve`); `None` for
/// paths outside the API's collections.
fn collection_of(path: &'static str) -> Option<(&'static str, &'static str)> {
    let tail = path.strip_prefix(BASE)?.strip_prefix('/')?;
    let end = BASE.len() + 1 + tail.find('/').unwrap_or(tail.len());
    Some((&path[..end], &path[end..]))
}

/// One resource at `pattern` (its template is `path`) with its routes and the 405 answer.
fn resource(
    path: &'static str,
    pattern: &'static str,
    routes: Vec<(Method, actix_web::Route)>,
) -> actix_web::Resource {
    let allow = routes
        .iter()
        .map(|(m, _)| m.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut resource = web::resource(pattern).app_data(RouteTemplate(path));
    for (_, route) in routes {
        resource = resource.route(route);
    }
    resource.default_service(web::to(move || {
        let allow = allow.clone();
        async move {
            let message = format!("this route allows {allow}");
            let mut res =
                actix_web::ResponseError::error_response(&ApiError::method_not_allowed(message));
            if let Ok(value) = header::HeaderValue::from_str(&allow) {
                res.headers_mut().insert(ALLOW, value);
            }
            res
        }
    }))
}

/// Answers routes that do not exist.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&ApiError::not_found(format!(
        "no route {} {}",
        req.method(),
        req.path()
    )))
}

/// `limit` and `cursor` of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1–500 (default 50).
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageParams {
    /// The store's page request; `bad_request` for a limit out of range.
    pub fn request(&self) -> ApiResult<PageRequest> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "`limit` must be between 1 and 500, not {limit}"
            )));
        }
        Ok(PageRequest {
            limit,
            cursor: self.cursor.clone().filter(|c| !c.is_empty()),
        })
    }
}

/// `?wait=true`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WaitParams {
    /// Answer once the execution reached its next gate or ended (bounded by the
    /// server's wait timeout), instead of once the change is recorded.
    #[serde(default)]
    pub wait: bool,
}

/// The execution of `progress`: settled when the caller asked to wait.
pub async fn settle(
    state: &AppState,
    progress: Progress,
    wait: bool,
) -> ApiResult<tollgate_model::records::Execution> {
    if wait {
        Ok(progress.settled(&state.engine, state.wait_timeout).await?)
    } else {
        Ok(progress.execution)
    }
}

/// A JSON request body; an empty body reads as `T::default()` when the route allows it
/// (see [`OptionalJson`]). Errors are precise: malformed JSON says where, a wrong
/// content type is 415, an oversized body 413.
#[derive(Debug)]
pub struct Json<T>(pub T);

/// A JSON body that may be omitted.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

type BodyFuture<T> = Pin<Box<dyn Future<Output = Result<T, ApiError>>>>;

fn read_json<T: DeserializeOwned + 'static>(
    req: &HttpRequest,
    payload: &mut actix_web::dev::Payload,
    empty: Option<fn() -> T>,
) -> BodyFuture<T> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map_or(0, |s| s.max_body_size);
    let bytes = web::Bytes::from_request(req, payload);
    Box::pin(async move {
        let bytes = bytes.await.map_err(|err| {
            let status = err.as_response_error().status_code();
            if status == actix_web::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(format!(
                    "the request body is larger than the {limit} bytes this server accepts (--max-body-size)"
                ))
            } else {
                ApiError::bad_request(format!("cannot read the request body: {err}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return match empty {
                Some(default) => Ok(default()),
                None => Err(ApiError::bad_request("a JSON request body is required")),
            };
        }
        if let Some(ct) = content_type {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if !(essence == "application/json" || essence.ends_with("+json")) {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body must be JSON (Content-Type: application/json), not `{ct}`"
                )));
            }
        }
        serde_json::from_slice(&bytes)
            .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))
    })
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = BodyFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let inner = read_json::<T>(req, payload, None);
        Box::pin(async move { inner.await.map(Json) })
    }
}

impl<T: DeserializeOwned + Default + 'static> FromRequest for OptionalJson<T> {
    type Error = ApiError;
    type Future = BodyFuture<Self>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let inner = read_json::<T>(req, payload, Some(T::default));
        Box::pin(async move { inner.await.map(OptionalJson) })
    }
}

/// A path's `{id}`: a UUID, else a precise 400.
///
/// A workflow in a path is one version, named by the server's id; a reader who passes
/// the author's `workflow_id` there is told where that name is accepted.
pub fn parse_id(text: &str, what: &str) -> ApiResult<uuid::Uuid> {
    uuid::Uuid::parse_str(text).map_err(|_| {
        let hint = if what == "workflow" {
            format!(
                "; a path names one version by the id the server gave it, and \
                 `GET /api/v1/workflows?workflow_id={text}` lists the versions of a \
                 workflow by its author's `workflow_id`"
            )
        } else {
            String::new()
        };
        ApiError::bad_request(format!("`{text}` is not a valid {what} id (a UUID){hint}"))
    })
}

/// A body field that must be a JSON object; absent (`null`) reads as `{}`.
pub fn object_or_empty(field: &str, value: serde_json::Value) -> ApiResult<serde_json::Value> {
    match value {
        serde_json::Value::Null => Ok(serde_json::Value::Object(serde_json::Map::new())),
        object @ serde_json::Value::Object(_) => Ok(object),
        _ => Err(ApiError::bad_request(format!(
            "`{field}` must be a JSON object"
        ))),
    }
}
