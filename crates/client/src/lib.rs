//! A typed async client for the REST API of a Tollgate server.
//!
//! One method per route, with the request and response types the server itself uses
//! ([`wire`], from `tollgate-model`), so client and server cannot disagree on a field.
//! Refusals are [`Error::Api`] with the envelope's code, message, detail paths and the
//! call's `X-Request-Id`. Lists come a page at a time ([`Page`]) or as a stream that
//! follows the cursors. Every call has a timeout; only calls that are safe to repeat
//! (reads, and events that carry an `event_id`) are retried, and only on a transient
//! failure (no connection, a timeout, `502`/`503`/`504`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), tollgate_client::Error> {
//! use tollgate_client::{Client, wire::{DecisionBody, NewEventDto}};
//!
//! let client = Client::builder("http://127.0.0.1:8080").key("tg_…").build()?;
//! let event = NewEventDto::new("order.created", serde_json::json!({"total": 25_000}))
//!     .with_id("order-1");
//! let accepted = client.send_event(&event, true).await?;
//! for id in &accepted.started {
//!     let execution = client.execution(*id).await?;
//!     if let Some(approval) = execution.approval_id {
//!         client.approve(approval, &DecisionBody::because("checked"), true).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod error;

use std::fmt::Write as _;
use std::time::Duration;

use futures_util::stream::{self, Stream, TryStreamExt};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

pub use error::Error;
pub use tollgate_model::wire;

use wire::{
    ApiKeyDto, ApprovalDto, ApprovalQuery, ApprovalRungDto, AssignDto, BulkDecidedDto,
    BulkDecisionDto, BulkMigrateDto, BulkRetryDto, CommentDto, CreatedApiKeyDto, DecidedDto,
    DecisionBody, DecisionLinksDto, DelegationDto, DirectEventDto, ErrorEnvelope, EventAcceptedDto,
    EventDto, ExecuteDto, ExecutionDto, ExecutionQuery, HealthDto, MigrateDto, MigrationItemDto,
    MigrationReportDto, NewApiKey, NewCommentDto, NewDelegationDto, NewEventDto, NewLinksDto,
    NextFiresDto, NotificationDto, NotificationQuery, QuarantinedDto, ReasonDto, RecordDto,
    ResumeDto, ResumeRequestDto, RetryDto, RetryReportDto, ScheduleBody, ScheduleDto,
    ScheduleQuery, TickDto, TraceDto, ValidationDto, WhoAmIDto, WorkflowDto, WorkflowQuery,
};

/// The result of a call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One page of a list; `next_cursor` asks for the next (null on the last page).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Pass to [`PageRequest::after`] for the next page.
    pub next_cursor: Option<String>,
}

/// Which page of a list: `limit` items (1–500; the server's default is 50) after `cursor`.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    /// Items per page.
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The first page with `limit` items.
    pub fn first(limit: u32) -> Self {
        Self {
            limit: Some(limit),
            cursor: None,
        }
    }

    /// The page after `cursor`, same size.
    pub fn after(&self, cursor: impl Into<String>) -> Self {
        Self {
            limit: self.limit,
            cursor: Some(cursor.into()),
        }
    }

    fn pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        if let Some(limit) = self.limit {
            pairs.push(("limit".to_owned(), limit.to_string()));
        }
        if let Some(cursor) = &self.cursor {
            pairs.push(("cursor".to_owned(), cursor.clone()));
        }
        pairs
    }
}

/// The `Authorization` header for `key`, marked sensitive so that it is never logged.
fn bearer(key: &str) -> Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", key.trim())).map_err(|_| {
        Error::Config("the API key holds characters a header cannot carry".to_owned())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base: String,
    key: Option<String>,
    timeout: Duration,
    wait_timeout: Duration,
    retries: u32,
    backoff: Duration,
    user_agent: String,
}

impl ClientBuilder {
    /// The API key sent as `Authorization: Bearer …` (routes under `/health`, `/metrics`
    /// and the OpenAPI document need none).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// How long a call may take before it fails with [`Error::Timeout`] (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long a `?wait=true` call may take (default 75 s: the server's request timeout
    /// plus its wait timeout, with room to spare).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// How many times a call that is safe to repeat is tried again after a transient
    /// failure (default 2), the first after `backoff` (default 200 ms), each next after
    /// twice the previous.
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// The `User-Agent` header (default `tollgate-client/<version>`).
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// The client; [`Error::Config`] for a base URL that is not `http(s)://host…` or a
    /// key that cannot travel in a header.
    pub fn build(self) -> Result<Client> {
        let base = self.base.trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| Error::Config(format!("`{}` is not a URL: {e}", self.base)))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(Error::Config(format!(
                "`{}` is not an http:// or https:// URL with a host",
                self.base
            )));
        }
        let auth = self.key.as_deref().map(bearer).transpose()?;
        let http = reqwest::Client::builder()
            .user_agent(self.user_agent)
            .connect_timeout(self.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            http,
            base,
            auth,
            timeout: self.timeout,
            wait_timeout: self.wait_timeout,
            retries: self.retries,
            backoff: self.backoff,
        })
    }
}

/// A connection to one Tollgate server (cheap to clone; clones share their pool).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// `Bearer <key>`, sent with every call.
    auth: Option<HeaderValue>,
    timeout: Duration,
    wait_timeout: Duration,
    retries: u32,
    backoff: Duration,
}

/// One call, kept whole so that a retry can send it again.
#[derive(Clone)]
struct Call {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Value>,
    /// Safe to send again after a transient failure.
    repeatable: bool,
    wait: bool,
}

impl Call {
    fn new(method: Method, path: impl Into<String>) -> Self {
        let repeatable = method == Method::GET;
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            repeatable,
            wait: false,
        }
    }

    fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }

    fn body(mut self, body: &impl Serialize) -> Result<Self> {
        self.body = Some(
            serde_json::to_value(body)
                .map_err(|e| Error::Config(format!("cannot encode the request body: {e}")))?,
        );
        Ok(self)
    }

    /// A body whose `field` is sent as `{}` when it was left null (the server wants an
    /// object there, and "nothing" means an empty one).
    fn body_with_object(mut self, body: &impl Serialize, field: &str) -> Result<Self> {
        let mut value = serde_json::to_value(body)
            .map_err(|e| Error::Config(format!("cannot encode the request body: {e}")))?;
        if let Some(map) = value.as_object_mut() {
            if map.get(field).is_some_and(Value::is_null) {
                map.insert(field.to_owned(), Value::Object(serde_json::Map::new()));
            }
        }
        self.body = Some(value);
        Ok(self)
    }

    fn query(mut self, filter: &impl Serialize) -> Self {
        self.query.extend(query_pairs(filter));
        self
    }

    fn page(mut self, page: &PageRequest) -> Self {
        self.query.extend(page.pairs());
        self
    }

    fn wait(mut self, wait: bool) -> Self {
        if wait {
            self.query.push(("wait".to_owned(), "true".to_owned()));
        }
        self.wait = wait;
        self
    }

    fn repeatable(mut self, repeatable: bool) -> Self {
        self.repeatable = repeatable;
        self
    }
}

/// A filter struct as query pairs: its set fields, in order.
fn query_pairs(filter: &impl Serialize) -> Vec<(String, String)> {
    let Ok(Value::Object(fields)) = serde_json::to_value(filter) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter_map(|(name, value)| match value {
            Value::Null => None,
            Value::String(s) => Some((name, s)),
            other => Some((name, other.to_string())),
        })
        .collect()
}

impl Client {
    /// A builder for the server at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn builder(base_url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            base: base_url.into(),
            key: None,
            timeout: Duration::from_secs(30),
            wait_timeout: Duration::from_secs(75),
            retries: 2,
            backoff: Duration::from_millis(200),
            user_agent: concat!("tollgate-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// A client for `base_url` with `key` and the defaults.
    pub fn new(base_url: impl Into<String>, key: impl Into<String>) -> Result<Self> {
        Self::builder(base_url).key(key).build()
    }

    /// This client with another timeout for the calls made through the copy (it shares
    /// the connection pool): `client.with_timeout(Duration::from_secs(2)).execution(id)`.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// This client acting with another API key (it shares the connection pool): a
    /// gateway that forwards each of its callers' own keys needs one pool, not one per
    /// caller. [`Error::Config`] for a key that cannot travel in a header.
    pub fn with_key(&self, key: &str) -> Result<Self> {
        Ok(Self {
            auth: Some(bearer(key)?),
            ..self.clone()
        })
    }

    /// The server's base URL, as given (without a trailing `/`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn send(&self, call: &Call) -> Result<(u16, Option<String>, Vec<u8>)> {
        let url = self.url(call);
        let timeout = if call.wait {
            self.wait_timeout
        } else {
            self.timeout
        };
        let mut attempt = 0;
        loop {
            let mut request = self
                .http
                .request(call.method.clone(), &url)
                .timeout(timeout)
                .query(&call.query);
            if let Some(auth) = &self.auth {
                request = request.header(AUTHORIZATION, auth.clone());
            }
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let request_id = response
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    match response.bytes().await {
                        Ok(body) => Ok((status, request_id, body.to_vec())),
                        Err(e) => Err(transport(&url, timeout, &e)),
                    }
                }
                Err(e) => Err(transport(&url, timeout, &e)),
            };
            let transient = match &outcome {
                Ok((status, ..)) => matches!(status, 502..=504),
                Err(e) => e.is_transient(),
            };
            if !(transient && call.repeatable && attempt < self.retries) {
                return outcome;
            }
            tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt)).await;
            attempt += 1;
        }
    }

    /// Sends `call` and reads a JSON answer of type `T` (or the error envelope).
    async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T> {
        let (status, request_id, body) = self.send(&call).await?;
        let url = self.url(&call);
        if !(200..300).contains(&status) {
            return Err(refusal(&url, status, request_id, &body));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Protocol {
            url,
            status,
            reason: format!("the answer is not the expected JSON: {e}"),
            request_id,
        })
    }

    /// Sends `call` and expects no body (`204`).
    async fn empty(&self, call: Call) -> Result<()> {
        let (status, request_id, body) = self.send(&call).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            let url = self.url(&call);
            Err(refusal(&url, status, request_id, &body))
        }
    }

    /// Follows the cursors of the list at `call`, an item at a time.
    fn stream<T: DeserializeOwned + 'static>(
        &self,
        call: Call,
        limit: u32,
    ) -> impl Stream<Item = Result<T>> + '_ {
        let first = PageRequest::first(limit);
        stream::try_unfold(
            (Some(first), call),
            move |(next, call): (Option<PageRequest>, Call)| async move {
                let Some(page) = next else {
                    return Ok(None);
                };
                // Each page is a GET of the same list: repeatable.
                let this = call.clone().page(&page);
                let got: Page<T> = self.json(this).await?;
                let next = got.next_cursor.as_ref().map(|c| page.after(c.clone()));
                Ok(Some((
                    stream::iter(got.items.into_iter().map(Ok)),
                    (next, call),
                )))
            },
        )
        .try_flatten()
    }

    // --- meta -------------------------------------------------------------------------

    /// `GET /health/live`: the process answers.
    pub async fn live(&self) -> Result<HealthDto> {
        self.json(Call::get("/health/live")).await
    }

    /// `GET /health/ready`: the database answers and accepts a write (a `503` while it
    /// does not, as [`Error::Api`] with code `unavailable`).
    pub async fn ready(&self) -> Result<HealthDto> {
        self.json(Call::get("/health/ready").repeatable(false))
            .await
    }

    /// `GET /metrics`: the Prometheus text exposition.
    pub async fn metrics(&self) -> Result<String> {
        let call = Call::get("/metrics");
        let (status, request_id, body) = self.send(&call).await?;
        if (200..300).contains(&status) {
            Ok(String::from_utf8_lossy(&body).into_owned())
        } else {
            Err(refusal(&self.url(&call), status, request_id, &body))
        }
    }

    /// `GET /api/v1/openapi.json`: the server's OpenAPI document.
    pub async fn openapi(&self) -> Result<Value> {
        self.json(Call::get("/api/v1/openapi.json")).await
    }

    fn url(&self, call: &Call) -> String {
        format!("{}{}", self.base, call.path)
    }

    // --- keys ------------------------------------------------------------------------

    /// `GET /api/v1/whoami`: the calling key's name and roles.
    pub async fn whoami(&self) -> Result<WhoAmIDto> {
        self.json(Call::get("/api/v1/whoami")).await
    }

    /// `GET /api/v1/api-keys` (admin): one page of keys, never their secrets.
    pub async fn api_keys(&self, page: &PageRequest) -> Result<Page<ApiKeyDto>> {
        self.json(Call::get("/api/v1/api-keys").page(page)).await
    }

    /// Every key, following the cursors.
    pub fn api_keys_stream(&self) -> impl Stream<Item = Result<ApiKeyDto>> + '_ {
        self.stream(Call::get("/api/v1/api-keys"), 200)
    }

    /// `POST /api/v1/api-keys` (admin): a new key; its secret is in this answer only.
    pub async fn create_api_key(&self, name: &str, roles: &[String]) -> Result<CreatedApiKeyDto> {
        let body = NewApiKey {
            name: name.to_owned(),
            roles: roles.to_vec(),
        };
        self.json(Call::post("/api/v1/api-keys").body(&body)?).await
    }

    /// `DELETE /api/v1/api-keys/{id}` (admin): revokes the key at once.
    pub async fn revoke_api_key(&self, id: Uuid) -> Result<()> {
        self.empty(Call::new(Method::DELETE, format!("/api/v1/api-keys/{id}")))
            .await
    }

    // --- workflows -------------------------------------------------------------------

    /// `GET /api/v1/workflows`: one page of workflows matching `filter`.
    pub async fn workflows(
        &self,
        filter: &WorkflowQuery,
        page: &PageRequest,
    ) -> Result<Page<WorkflowDto>> {
        self.json(Call::get("/api/v1/workflows").query(filter).page(page))
            .await
    }

    /// Every workflow matching `filter`, following the cursors.
    pub fn workflows_stream(
        &self,
        filter: &WorkflowQuery,
    ) -> impl Stream<Item = Result<WorkflowDto>> + '_ {
        self.stream(Call::get("/api/v1/workflows").query(filter), 200)
    }

    /// Every version of the author's `workflow_id`.
    pub async fn workflow_versions(&self, workflow_id: &str) -> Result<Vec<WorkflowDto>> {
        let filter = WorkflowQuery {
            workflow_id: Some(workflow_id.to_owned()),
            ..WorkflowQuery::default()
        };
        self.workflows_stream(&filter).try_collect().await
    }

    /// `POST /api/v1/workflows`: creates a workflow (a new version when its
    /// `workflow_id` exists with another `version`).
    pub async fn create_workflow(&self, definition: &Value) -> Result<WorkflowDto> {
        self.json(Call::post("/api/v1/workflows").body(definition)?)
            .await
    }

    /// `POST /api/v1/workflows/validate`: what the server thinks of a definition, without
    /// storing it.
    pub async fn validate_workflow(&self, definition: &Value) -> Result<ValidationDto> {
        self.json(
            Call::post("/api/v1/workflows/validate")
                .body(definition)?
                .repeatable(true),
        )
        .await
    }

    /// `GET /api/v1/workflows/{id}`.
    pub async fn workflow(&self, id: Uuid) -> Result<WorkflowDto> {
        self.json(Call::get(format!("/api/v1/workflows/{id}")))
            .await
    }

    /// `PUT /api/v1/workflows/{id}`: replaces the definition of that version (running
    /// executions keep the one they started with).
    pub async fn replace_workflow(&self, id: Uuid, definition: &Value) -> Result<WorkflowDto> {
        self.json(
            Call::new(Method::PUT, format!("/api/v1/workflows/{id}"))
                .body(definition)?
                .repeatable(true),
        )
        .await
    }

    /// `DELETE /api/v1/workflows/{id}` (its executions stay readable).
    pub async fn delete_workflow(&self, id: Uuid) -> Result<()> {
        self.empty(Call::new(Method::DELETE, format!("/api/v1/workflows/{id}")))
            .await
    }

    /// `POST /api/v1/workflows/{id}/enable`.
    pub async fn enable_workflow(&self, id: Uuid) -> Result<WorkflowDto> {
        self.json(Call::post(format!("/api/v1/workflows/{id}/enable")).repeatable(true))
            .await
    }

    /// `POST /api/v1/workflows/{id}/disable`.
    pub async fn disable_workflow(&self, id: Uuid) -> Result<WorkflowDto> {
        self.json(Call::post(format!("/api/v1/workflows/{id}/disable")).repeatable(true))
            .await
    }

    /// `POST /api/v1/workflows/{id}/execute`: starts an execution by hand with `payload`
    /// (an object); with `wait`, answers once it reached its first gate or ended.
    pub async fn execute_workflow(
        &self,
        id: Uuid,
        payload: Value,
        wait: bool,
    ) -> Result<ExecutionDto> {
        self.execute_workflow_from(id, payload, None, wait).await
    }

    /// `POST /api/v1/workflows/{id}/execute` recording `source`, the channel the
    /// request came through (e.g. `mcp`), as the trigger's source.
    pub async fn execute_workflow_from(
        &self,
        id: Uuid,
        payload: Value,
        source: Option<&str>,
        wait: bool,
    ) -> Result<ExecutionDto> {
        let body = ExecuteDto {
            payload,
            source: source.map(str::to_owned),
        };
        self.json(
            Call::post(format!("/api/v1/workflows/{id}/execute"))
                .body(&body)?
                .wait(wait),
        )
        .await
    }

    /// `GET /api/v1/workflows/{id}/schedules`.
    pub async fn workflow_schedules(&self, id: Uuid) -> Result<Page<ScheduleDto>> {
        self.json(Call::get(format!("/api/v1/workflows/{id}/schedules")))
            .await
    }

    /// `POST /api/v1/workflows/{id}/schedules`: attaches a schedule.
    pub async fn create_schedule(
        &self,
        workflow: Uuid,
        body: &ScheduleBody,
    ) -> Result<ScheduleDto> {
        self.json(Call::post(format!("/api/v1/workflows/{workflow}/schedules")).body(body)?)
            .await
    }

    // --- schedules -------------------------------------------------------------------

    /// `GET /api/v1/schedules`: one page.
    pub async fn schedules(
        &self,
        filter: &ScheduleQuery,
        page: &PageRequest,
    ) -> Result<Page<ScheduleDto>> {
        self.json(Call::get("/api/v1/schedules").query(filter).page(page))
            .await
    }

    /// Every schedule matching `filter`.
    pub fn schedules_stream(
        &self,
        filter: &ScheduleQuery,
    ) -> impl Stream<Item = Result<ScheduleDto>> + '_ {
        self.stream(Call::get("/api/v1/schedules").query(filter), 200)
    }

    /// `GET /api/v1/schedules/{id}`.
    pub async fn schedule(&self, id: Uuid) -> Result<ScheduleDto> {
        self.json(Call::get(format!("/api/v1/schedules/{id}")))
            .await
    }

    /// `PUT /api/v1/schedules/{id}`: changes its expression, zone, state or catch-up.
    pub async fn replace_schedule(&self, id: Uuid, body: &ScheduleBody) -> Result<ScheduleDto> {
        self.json(
            Call::new(Method::PUT, format!("/api/v1/schedules/{id}"))
                .body(body)?
                .repeatable(true),
        )
        .await
    }

    /// `DELETE /api/v1/schedules/{id}`.
    pub async fn delete_schedule(&self, id: Uuid) -> Result<()> {
        self.empty(Call::new(Method::DELETE, format!("/api/v1/schedules/{id}")))
            .await
    }

    /// `GET /api/v1/schedules/{id}/next`: the coming `count` fire times (1–100).
    pub async fn schedule_next(&self, id: Uuid, count: Option<u32>) -> Result<NextFiresDto> {
        let mut call = Call::get(format!("/api/v1/schedules/{id}/next"));
        if let Some(count) = count {
            call.query.push(("count".to_owned(), count.to_string()));
        }
        self.json(call).await
    }

    /// `GET /api/v1/schedules/{id}/ticks`: one page of ticks, newest first.
    pub async fn schedule_ticks(&self, id: Uuid, page: &PageRequest) -> Result<Page<TickDto>> {
        self.json(Call::get(format!("/api/v1/schedules/{id}/ticks")).page(page))
            .await
    }

    // --- events ----------------------------------------------------------------------

    /// `POST /api/v1/events`: starts what the event triggers and resumes what waits for
    /// it. Retried after a transient failure only when it carries an `event_id` (the
    /// server recognises the repeat).
    pub async fn send_event(&self, event: &NewEventDto, wait: bool) -> Result<EventAcceptedDto> {
        let repeatable = event.event_id.is_some();
        self.json(
            Call::post("/api/v1/events")
                .body_with_object(event, "payload")?
                .wait(wait)
                .repeatable(repeatable),
        )
        .await
    }

    /// `GET /api/v1/events/{id}` (the server's id, not the sender's `event_id`).
    pub async fn event(&self, id: Uuid) -> Result<EventDto> {
        self.json(Call::get(format!("/api/v1/events/{id}"))).await
    }

    // --- executions ------------------------------------------------------------------

    /// `GET /api/v1/executions`: one page, newest first.
    pub async fn executions(
        &self,
        filter: &ExecutionQuery,
        page: &PageRequest,
    ) -> Result<Page<ExecutionDto>> {
        self.json(Call::get("/api/v1/executions").query(filter).page(page))
            .await
    }

    /// Every execution matching `filter`, newest first.
    pub fn executions_stream(
        &self,
        filter: &ExecutionQuery,
    ) -> impl Stream<Item = Result<ExecutionDto>> + '_ {
        self.stream(Call::get("/api/v1/executions").query(filter), 200)
    }

    /// `GET /api/v1/executions/paused`: paused and waiting executions, oldest pause first.
    pub async fn paused_executions(&self, page: &PageRequest) -> Result<Page<ExecutionDto>> {
        self.json(Call::get("/api/v1/executions/paused").page(page))
            .await
    }

    /// `GET /api/v1/executions/quarantined` (operator): executions set aside as unreadable.
    pub async fn quarantined(&self, page: &PageRequest) -> Result<Page<QuarantinedDto>> {
        self.json(Call::get("/api/v1/executions/quarantined").page(page))
            .await
    }

    /// `GET /api/v1/executions/{id}`.
    pub async fn execution(&self, id: Uuid) -> Result<ExecutionDto> {
        self.json(Call::get(format!("/api/v1/executions/{id}")))
            .await
    }

    /// `GET /api/v1/executions/{id}/trace`: the execution, its step records in order and
    /// its pinned definition.
    pub async fn trace(&self, id: Uuid) -> Result<TraceDto> {
        self.json(Call::get(format!("/api/v1/executions/{id}/trace")))
            .await
    }

    /// `GET /api/v1/executions/{id}/resume-requests`: every attempt to wake it (the
    /// audit), in order.
    pub async fn resume_requests(&self, id: Uuid) -> Result<Vec<ResumeRequestDto>> {
        let page: Page<ResumeRequestDto> = self
            .json(Call::get(format!(
                "/api/v1/executions/{id}/resume-requests"
            )))
            .await?;
        Ok(page.items)
    }

    /// `GET /api/v1/executions/{id}/notifications`: one page of its notifications with
    /// their delivery state, oldest first.
    pub async fn execution_notifications(
        &self,
        id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<NotificationDto>> {
        self.json(Call::get(format!("/api/v1/executions/{id}/notifications")).page(page))
            .await
    }

    /// `POST /api/v1/executions/{id}/pause`.
    pub async fn pause(&self, id: Uuid, reason: Option<&str>) -> Result<ExecutionDto> {
        let body = ReasonDto {
            reason: reason.map(str::to_owned),
        };
        self.json(Call::post(format!("/api/v1/executions/{id}/pause")).body(&body)?)
            .await
    }

    /// `POST /api/v1/executions/{id}/resume`: resumes a manually paused execution,
    /// merging `data` into its context.
    pub async fn resume(&self, id: Uuid, body: &ResumeDto, wait: bool) -> Result<ExecutionDto> {
        self.json(
            Call::post(format!("/api/v1/executions/{id}/resume"))
                .body_with_object(body, "data")?
                .wait(wait),
        )
        .await
    }

    /// `POST /api/v1/executions/{id}/retry`: starts a failed or timed-out execution
    /// again (from `body.from_step`, or the step that stopped it).
    pub async fn retry(&self, id: Uuid, body: &RetryDto, wait: bool) -> Result<ExecutionDto> {
        self.json(
            Call::post(format!("/api/v1/executions/{id}/retry"))
                .body(body)?
                .wait(wait),
        )
        .await
    }

    /// `POST /api/v1/executions/retry`: retries (or, `dry_run`, previews) the executions
    /// a filter selects, at most `limit` per call.
    pub async fn retry_many(&self, body: &BulkRetryDto) -> Result<RetryReportDto> {
        self.json(Call::post("/api/v1/executions/retry").body(body)?)
            .await
    }

    /// `POST /api/v1/executions/{id}/migrate`: moves a paused or waiting execution to
    /// another version (or, `dry_run`, says whether it could).
    pub async fn migrate(&self, id: Uuid, body: &MigrateDto) -> Result<MigrationItemDto> {
        self.json(Call::post(format!("/api/v1/executions/{id}/migrate")).body(body)?)
            .await
    }

    /// `POST /api/v1/executions/migrate`: the same for a workflow's executions at a gate.
    pub async fn migrate_many(&self, body: &BulkMigrateDto) -> Result<MigrationReportDto> {
        self.json(Call::post("/api/v1/executions/migrate").body(body)?)
            .await
    }

    /// `POST /api/v1/executions/{id}/cancel`.
    pub async fn cancel(&self, id: Uuid, reason: Option<&str>) -> Result<ExecutionDto> {
        let body = ReasonDto {
            reason: reason.map(str::to_owned),
        };
        self.json(Call::post(format!("/api/v1/executions/{id}/cancel")).body(&body)?)
            .await
    }

    /// `POST /api/v1/executions/{id}/events`: delivers an event to one waiting
    /// execution. Retried after a transient failure only with an `event_id`.
    pub async fn deliver_event(
        &self,
        id: Uuid,
        event: &DirectEventDto,
        wait: bool,
    ) -> Result<ExecutionDto> {
        let repeatable = event.event_id.is_some();
        self.json(
            Call::post(format!("/api/v1/executions/{id}/events"))
                .body_with_object(event, "payload")?
                .wait(wait)
                .repeatable(repeatable),
        )
        .await
    }

    /// Polls the execution until it is no longer `running` (it stopped at a gate or
    /// ended) or `timeout` passes; returns it as last seen.
    pub async fn wait_until_stopped(&self, id: Uuid, timeout: Duration) -> Result<ExecutionDto> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let execution = self.execution(id).await?;
            if execution.status != "running" || tokio::time::Instant::now() >= deadline {
                return Ok(execution);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    // --- approvals -------------------------------------------------------------------

    /// `GET /api/v1/approvals`: one page, newest first.
    pub async fn approvals(
        &self,
        filter: &ApprovalQuery,
        page: &PageRequest,
    ) -> Result<Page<ApprovalDto>> {
        self.json(Call::get("/api/v1/approvals").query(filter).page(page))
            .await
    }

    /// Every approval matching `filter`, newest first.
    pub fn approvals_stream(
        &self,
        filter: &ApprovalQuery,
    ) -> impl Stream<Item = Result<ApprovalDto>> + '_ {
        self.stream(Call::get("/api/v1/approvals").query(filter), 200)
    }

    /// What the calling key may decide now (`?mine=true`).
    pub fn inbox(&self) -> impl Stream<Item = Result<ApprovalDto>> + '_ {
        let filter = ApprovalQuery {
            mine: true,
            ..ApprovalQuery::default()
        };
        self.stream(Call::get("/api/v1/approvals").query(&filter), 200)
    }

    /// `GET /api/v1/approvals/{id}`.
    pub async fn approval(&self, id: Uuid) -> Result<ApprovalDto> {
        self.json(Call::get(format!("/api/v1/approvals/{id}")))
            .await
    }

    /// `POST /api/v1/approvals/{id}/approve`: one vote towards the quorum.
    pub async fn approve(&self, id: Uuid, body: &DecisionBody, wait: bool) -> Result<DecidedDto> {
        self.json(
            Call::post(format!("/api/v1/approvals/{id}/approve"))
                .body_with_object(body, "data")?
                .wait(wait),
        )
        .await
    }

    /// `POST /api/v1/approvals/{id}/reject` (a `reason` is required).
    pub async fn reject(&self, id: Uuid, body: &DecisionBody, wait: bool) -> Result<DecidedDto> {
        self.json(
            Call::post(format!("/api/v1/approvals/{id}/reject"))
                .body_with_object(body, "data")?
                .wait(wait),
        )
        .await
    }

    /// `GET /api/v1/approvals/{id}/comments`: one page of the thread, oldest first.
    pub async fn comments(&self, id: Uuid, page: &PageRequest) -> Result<Page<CommentDto>> {
        self.json(Call::get(format!("/api/v1/approvals/{id}/comments")).page(page))
            .await
    }

    /// `GET /api/v1/approvals/{id}/ladder`: its reminders and escalations, and which
    /// fired.
    pub async fn ladder(&self, id: Uuid) -> Result<Vec<ApprovalRungDto>> {
        let page: Page<ApprovalRungDto> = self
            .json(Call::get(format!("/api/v1/approvals/{id}/ladder")))
            .await?;
        Ok(page.items)
    }

    /// `POST /api/v1/approvals/{id}/comments`: comments without deciding.
    pub async fn comment(&self, id: Uuid, body: impl Into<String>) -> Result<CommentDto> {
        self.json(
            Call::post(format!("/api/v1/approvals/{id}/comments"))
                .body(&NewCommentDto { body: body.into() })?,
        )
        .await
    }

    /// `POST /api/v1/approvals/{id}/claim`: the caller takes the request ("I'm on it").
    pub async fn claim(&self, id: Uuid) -> Result<ApprovalDto> {
        self.json(Call::post(format!("/api/v1/approvals/{id}/claim")))
            .await
    }

    /// `POST /api/v1/approvals/{id}/unclaim`: the caller lets go of it (an operator, of
    /// anyone's).
    pub async fn unclaim(&self, id: Uuid) -> Result<ApprovalDto> {
        self.json(Call::post(format!("/api/v1/approvals/{id}/unclaim")))
            .await
    }

    /// `POST /api/v1/approvals/{id}/assign`: an operator gives the request to `to`.
    pub async fn assign(&self, id: Uuid, to: impl Into<String>) -> Result<ApprovalDto> {
        self.json(
            Call::post(format!("/api/v1/approvals/{id}/assign"))
                .body(&AssignDto { to: to.into() })?,
        )
        .await
    }

    /// `POST /api/v1/delegations`: lets another subject decide the caller's (or, for an
    /// operator, `from`'s) approval requests for a period.
    pub async fn delegate(&self, body: &NewDelegationDto) -> Result<DelegationDto> {
        self.json(Call::post("/api/v1/delegations").body(body)?)
            .await
    }

    /// `GET /api/v1/delegations`: those from or to the caller (everyone's with `all`).
    pub async fn delegations(&self, all: bool, page: &PageRequest) -> Result<Page<DelegationDto>> {
        let path = if all {
            "/api/v1/delegations?all=true"
        } else {
            "/api/v1/delegations"
        };
        self.json(Call::get(path).page(page)).await
    }

    /// `DELETE /api/v1/delegations/{id}`: revokes it at once.
    pub async fn revoke_delegation(&self, id: Uuid) -> Result<DelegationDto> {
        self.json(Call::new(
            Method::DELETE,
            format!("/api/v1/delegations/{id}"),
        ))
        .await
    }

    /// `POST /api/v1/approvals/decide`: one decision on many requests (by id or filter),
    /// each under its own rules; `dry_run` decides nothing.
    pub async fn decide_bulk(&self, body: &BulkDecisionDto) -> Result<BulkDecidedDto> {
        self.json(Call::post("/api/v1/approvals/decide").body(body)?)
            .await
    }

    /// `POST /api/v1/approvals/{id}/links`: signed decision links for the recipients
    /// in `body` (operator or admin).
    pub async fn decision_links(&self, id: Uuid, body: &NewLinksDto) -> Result<DecisionLinksDto> {
        self.json(Call::post(format!("/api/v1/approvals/{id}/links")).body(body)?)
            .await
    }

    // --- records ---------------------------------------------------------------------

    /// `GET /api/v1/notifications`: one page, newest first.
    pub async fn notifications(
        &self,
        filter: &NotificationQuery,
        page: &PageRequest,
    ) -> Result<Page<NotificationDto>> {
        self.json(Call::get("/api/v1/notifications").query(filter).page(page))
            .await
    }

    /// `GET /api/v1/records/{entity}/{entity_id}`.
    pub async fn record(&self, entity: &str, entity_id: &str) -> Result<RecordDto> {
        self.json(Call::get(format!(
            "/api/v1/records/{}/{}",
            segment(entity),
            segment(entity_id)
        )))
        .await
    }
}

/// `text` as one path segment (percent-encoded).
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A transport failure as an [`Error`].
fn transport(url: &str, timeout: Duration, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        Error::Timeout {
            url: url.to_owned(),
            timeout,
        }
    } else {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            reason = format!("{reason}: {cause}");
            source = cause.source();
        }
        Error::Connect {
            url: url.to_owned(),
            reason,
        }
    }
}

/// A non-2xx answer as an [`Error`]: the envelope when the body is one.
fn refusal(url: &str, status: u16, request_id: Option<String>, body: &[u8]) -> Error {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(envelope) => Error::Api {
            status,
            code: envelope.error.code,
            message: envelope.error.message,
            details: envelope.error.details,
            request_id,
        },
        Err(_) => Error::Protocol {
            url: url.to_owned(),
            status,
            reason: format!(
                "not the API's error envelope: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
            request_id,
        },
    }
}
