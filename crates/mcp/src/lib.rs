//! Tollgate as a Model Context Protocol server: an AI agent asks for a decision and gets
//! one it can trust — durable (the request outlives the agent's process), checked by the
//! engine's policy (roles, quorum, no self-approval, deadlines) and audited.
//!
//! Every tool is carried out as the REST call its caller's own API key could make
//! (through [`tollgate_client`]), so an agent can do exactly what its key allows and
//! nothing travels around the API's checks. Two transports share the tools:
//!
//! - **stdio** — [`serve_stdio`], which `tollgate mcp` runs with the CLI's connection
//!   settings: one caller, fixed at start.
//! - **Streamable HTTP** — [`http_service`], mounted by `tollgate-api` at `/mcp`: each
//!   request is authenticated by the API first and carries its [`Caller`] in the HTTP
//!   request's extensions. It is stateless (no MCP session is kept in memory), so any
//!   replica can serve any request.
//!
//! The tools and the decisions behind them are described in `docs/agents.md`.
//!
//! ```
//! // The tools an agent sees (a key's roles may hide some of them).
//! let tools = tollgate_mcp::tool_names();
//! assert!(tools.iter().any(|t| t == "request_approval"));
//!
//! // What a host mounts at `/mcp`; each request must carry its authenticated `Caller`.
//! let _endpoint = tollgate_mcp::http_service(tollgate_mcp::Server::per_request());
//! ```

mod tools;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{tool, tool_router, ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tollgate_client::wire::{ApprovalDto, NewEventDto, WhoAmIDto, WorkflowDto, WorkflowQuery};
use tollgate_client::{Client, PageRequest};
use tollgate_model::records::{Permission, Principal};
use uuid::Uuid;

/// The Streamable HTTP endpoint [`http_service`] makes: a tower service, and
/// [`StreamableHttpService::handle`] for hosts that are not tower-based.
pub type HttpService = StreamableHttpService<Server, NeverSessionManager>;
pub use tools::*;

/// The source recorded on every execution and event an MCP tool starts or sends
/// (`context.trigger.source`), so the audit tells agent requests apart.
pub const CHANNEL: &str = "mcp";

/// Longest `wait_for_approval` may wait when the transport sets no tighter bound.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(300);

/// `wait_for_approval`'s wait when the model names none.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// Longest accepted title.
const MAX_TITLE: usize = 200;

/// Why the MCP server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused or could not be reached while identifying the caller.
    #[error(transparent)]
    Api(#[from] tollgate_client::Error),
    /// The MCP session failed (the peer sent something the protocol does not allow, or
    /// the transport broke).
    #[error("MCP session: {0}")]
    Session(String),
}

/// Who calls, and how to reach the API as them.
#[derive(Debug, Clone)]
pub struct Caller {
    client: Client,
    principal: Principal,
    console: String,
}

impl Caller {
    /// A caller whose requests `client` (carrying the caller's key) makes; `console` is
    /// the base URL of the web console, for the links tools return.
    pub fn new(client: Client, principal: Principal, console: impl Into<String>) -> Self {
        Self {
            client,
            principal,
            console: console.into().trim_end_matches('/').to_owned(),
        }
    }

    /// Asks the API who `client`'s key is (refused when the key is missing or revoked);
    /// the console is at the client's base URL.
    pub async fn identify(client: Client) -> Result<Self, Error> {
        let WhoAmIDto { name, roles } = client.whoami().await?;
        let console = client.base_url().to_owned();
        Ok(Self::new(
            client,
            Principal {
                subject: name,
                roles,
            },
            console,
        ))
    }

    /// The caller's key name and roles.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

/// The MCP server: Tollgate's tools for agents.
#[derive(Clone)]
pub struct Server {
    /// The stdio transport's one caller; `None` over HTTP, where each request brings its
    /// own.
    fixed: Option<Arc<Caller>>,
    max_wait: Duration,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("fixed", &self.fixed.as_ref().map(|c| &c.principal))
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server for one caller (stdio).
    pub fn for_caller(caller: Caller) -> Self {
        Self::serving(Some(Arc::new(caller)))
    }

    /// A server whose caller comes with each HTTP request (see [`http_service`]).
    pub fn per_request() -> Self {
        Self::serving(None)
    }

    fn serving(fixed: Option<Arc<Caller>>) -> Self {
        Self {
            fixed,
            max_wait: DEFAULT_MAX_WAIT,
            tool_router: Self::tool_router(),
        }
    }

    /// Caps `wait_for_approval` (an HTTP server sets it below its request timeout).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait.max(Duration::from_secs(1));
        self
    }

    fn caller(&self, ctx: &RequestContext<RoleServer>) -> Result<Arc<Caller>, ErrorData> {
        if let Some(caller) = &self.fixed {
            return Ok(caller.clone());
        }
        ctx.extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Arc<Caller>>())
            .cloned()
            .ok_or_else(|| {
                ErrorData::invalid_request("the request carries no authenticated caller", None)
            })
    }
}

/// The permission a tool needs beyond reading, if any.
fn needs(tool: &str) -> Option<Permission> {
    match tool {
        "request_approval" | "start_workflow" => Some(Permission::Execute),
        "send_event" => Some(Permission::SendEvents),
        _ => None,
    }
}

/// A tool's failure, as the model reads it: a tool result flagged as an error (never a
/// protocol error), with the field at fault when there is one.
#[derive(Debug, Clone)]
pub struct ToolError {
    code: String,
    message: String,
    field: Option<String>,
    details: Vec<Value>,
}

impl ToolError {
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            code: "invalid_input".to_owned(),
            message: format!("{field}: {}", message.into()),
            field: Some(field.to_owned()),
            details: Vec::new(),
        }
    }

    fn refused(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            field: None,
            details: Vec::new(),
        }
    }

    fn result(self) -> CallToolResult {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = Value::String(field);
        }
        if !self.details.is_empty() {
            error["details"] = Value::Array(self.details);
        }
        CallToolResult::structured_error(json!({ "error": error }))
    }
}

impl From<tollgate_client::Error> for ToolError {
    fn from(e: tollgate_client::Error) -> Self {
        match e {
            tollgate_client::Error::Api {
                status,
                code,
                message,
                details,
                ..
            } => Self {
                code: if status == 404 {
                    "not_found".to_owned()
                } else {
                    code
                },
                message,
                field: None,
                details: details
                    .into_iter()
                    .map(|d| json!({"path": d.path, "message": d.message}))
                    .collect(),
            },
            other if other.is_transient() => {
                Self::refused("unavailable", format!("{other}; try again shortly"))
            }
            other => Self::refused("unavailable", other.to_string()),
        }
    }
}

impl rmcp::handler::server::tool::IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, ErrorData> {
        Ok(self.result().into())
    }
}

fn parse_uuid(field: &str, value: &str, what: &str) -> Result<Uuid, ToolError> {
    Uuid::parse_str(value.trim())
        .map_err(|_| ToolError::invalid(field, format!("`{value}` is not {what} (a UUID)")))
}

#[tool_router]
impl Server {
    /// Asks people for a decision before a risky action and returns at once with the
    /// pending approval.
    #[tool(
        name = "request_approval",
        description = "Ask a human to approve an action BEFORE you perform it (refunds, payments, deletions, emails to customers, production changes). Returns at once with a pending approval; then call wait_for_approval until it is decided, and act only if may_proceed is true, using decided_data where the approver changed your arguments. The request is durable: it survives restarts and can be decided hours later. You can never approve your own request.",
        annotations(
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn request_approval(
        &self,
        Parameters(input): Parameters<RequestApprovalInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ApprovalOutput>, ToolError> {
        let caller = self.caller(&ctx).map_err(protocol)?;
        let title = input.title.trim();
        if title.is_empty() || title.chars().count() > MAX_TITLE {
            return Err(ToolError::invalid(
                "title",
                format!("say in 1–{MAX_TITLE} characters what will happen if approved"),
            ));
        }
        let payload = json!({
            "title": title,
            "summary": input.summary.as_deref().map(str::trim).unwrap_or_default(),
            "data": Value::Object(input.data.clone().unwrap_or_default()),
        });
        let workflow = match &input.workflow {
            Some(named) => {
                for (field, given) in [
                    ("approvers", input.approvers.is_some()),
                    ("required", input.required.is_some()),
                    ("timeout", input.timeout.is_some()),
                    ("on_timeout", input.on_timeout.is_some()),
                ] {
                    if given {
                        return Err(ToolError::invalid(
                            field,
                            format!("workflow `{named}` sets its own approval policy; leave `{field}` out"),
                        ));
                    }
                }
                resolve_workflow(&caller.client, "workflow", named).await?
            }
            None => built_in_workflow(&caller, &input).await?,
        };
        let mut execution = caller
            .client
            .execute_workflow_from(workflow.id, payload, Some(CHANNEL), true)
            .await?;
        if execution.status == "running" {
            // Steps before the gate outlasted the server's `?wait=true` bound (a slow
            // webhook): keep waiting, within this tool's own bound.
            execution = caller
                .client
                .wait_until_stopped(execution.id, self.max_wait)
                .await?;
        }
        let Some(approval_id) = execution.approval_id else {
            if execution.status == "running" {
                return Err(ToolError::refused(
                    "still_running",
                    format!(
                        "execution {} of workflow `{}` has not reached its approval yet; call get_execution with this execution_id later (its approval_id appears there)",
                        execution.id, workflow.workflow_id
                    ),
                ));
            }
            return Err(ToolError::refused(
                "no_approval",
                format!(
                    "workflow `{}` did not stop at an approval: execution {} is `{}`{}",
                    workflow.workflow_id,
                    execution.id,
                    execution.status,
                    execution
                        .error
                        .as_ref()
                        .map(|e| format!(" ({})", e.message))
                        .unwrap_or_default()
                ),
            ));
        };
        tracing::info!(execution_id = %execution.id, approval_id = %approval_id, requested_by = %caller.principal.subject, "approval requested over MCP");
        let approval = caller.client.approval(approval_id).await?;
        Ok(Json(view(&caller, &approval).await?))
    }

    /// Where an approval stands.
    #[tool(
        name = "get_approval",
        description = "Get an approval's current status, decisions and the values approvers returned (decided_data). Does not wait; use wait_for_approval to wait for the decision.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_approval(
        &self,
        Parameters(input): Parameters<ApprovalIdInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ApprovalOutput>, ToolError> {
        let caller = self.caller(&ctx).map_err(protocol)?;
        let id = parse_uuid("approval_id", &input.approval_id, "an approval id")?;
        let approval = caller.client.approval(id).await?;
        Ok(Json(view(&caller, &approval).await?))
    }

    /// Waits (bounded) for an approval to be decided.
    #[tool(
        name = "wait_for_approval",
        description = "Wait up to timeout_seconds for a person to decide an approval, then return its status. If still_pending is true, nobody has decided yet: call it again (the request stays open, for days if its policy allows). Act only when may_proceed is true.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn wait_for_approval(
        &self,
        Parameters(input): Parameters<WaitForApprovalInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<WaitOutput>, ToolError> {
        let caller = self.caller(&ctx).map_err(protocol)?;
        let id = parse_uuid("approval_id", &input.approval_id, "an approval id")?;
        let limit = match input.timeout_seconds {
            Some(0) => {
                return Err(ToolError::invalid(
                    "timeout_seconds",
                    "must be at least 1 (use get_approval to look without waiting)",
                ))
            }
            Some(s) => Duration::from_secs(s),
            None => DEFAULT_WAIT,
        }
        .min(self.max_wait);
        let progress = ctx.meta.get_progress_token();
        let began = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        let mut reported = Duration::ZERO;
        let approval = loop {
            let approval = caller.client.approval(id).await?;
            let waited = began.elapsed();
            if approval.status != "pending" || waited >= limit || ctx.ct.is_cancelled() {
                break approval;
            }
            if let Some(token) = &progress {
                if waited >= reported + Duration::from_secs(5) {
                    reported = waited;
                    // A client that went away only loses the progress note.
                    let _ = ctx
                        .peer
                        .notify_progress(
                            ProgressNotificationParam::new(token.clone(), waited.as_secs_f64())
                                .with_total(limit.as_secs_f64())
                                .with_message(format!(
                                    "still waiting for a decision ({} of {} s)",
                                    waited.as_secs(),
                                    limit.as_secs()
                                )),
                        )
                        .await;
                }
            }
            let left = limit.saturating_sub(waited);
            tokio::select! {
                () = tokio::time::sleep(pause.min(left)) => {}
                () = ctx.ct.cancelled() => {}
            }
            pause = (pause * 2).min(Duration::from_secs(1));
        };
        let still_pending = approval.status == "pending";
        Ok(Json(WaitOutput {
            approval: view(&caller, &approval).await?,
            still_pending,
            waited_seconds: (began.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        }))
    }

    /// The workflows an agent can start or name in `request_approval`.
    #[tool(
        name = "list_workflows",
        description = "List the workflows on this server (newest version of each): what they do, what starts them, whether they have an approval gate, and the input they expect.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn list_workflows(
        &self,
        Parameters(input): Parameters<ListWorkflowsInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<WorkflowsOutput>, ToolError> {
        let caller = self.caller(&ctx).map_err(protocol)?;
        let query = WorkflowQuery {
            enabled: (!input.include_disabled).then_some(true),
            ..WorkflowQuery::default()
        };
        let mut newest: Vec<WorkflowDto> = Vec::new();
        let mut page = PageRequest::first(200);
        loop {
            let got = caller.client.workflows(&query, &page).await?;
            for w in got.items {
                match newest.iter_mut().find(|n| n.workflow_id == w.workflow_id) {
                    Some(n) if n.created_at < w.created_at => *n = w,
                    Some(_) => {}
                    None => newest.push(w),
                }
            }
            match got.next_cursor {
                Some(cursor) if newest.len() < 1_000 => page = page.after(cursor),
                _ => break,
            }
        }
        newest.sort_by(|a, b| a.workflow_id.cmp(&b.workflow_id));
        Ok(Json(WorkflowsOutput {
            workflows: newest.iter().map(workflow_view).collect(),
        }))
    }

    /// Starts a workflow and reports where it stopped.
    #[tool(
        name = "start_workflow",
        description = "Start a workflow with an input and return where it stopped: completed, paused at an approval (approval_id: use wait_for_approval), waiting for an event, or failed.",
        annotations(
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn start_workflow(
        &self,
        Parameters(input): Parameters<StartWorkflowInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ExecutionOutput>, ToolError> {
        let caller = self.caller(&ctx).map_err(protocol)?;
        let workflow = resolve_workflow(&caller.client, "workflow", &input.workflow).await?;
        let execution = caller
            .client
            .execute_workflow_from(
                workflow.id,
                Value::Object(input.input.unwrap_or_default()),
                Some(CHANNEL),
                true,
            )
            .await?;
        tracing::info!(execution_id = %execution.id, workflow = %workflow.workflow_id, "workflow started over MCP");
        Ok(Json(ExecutionOutput::new(&execution, &caller.console)))
    }

    /// Sends an event (which may start workflows and resume waiting executions).
    #[tool(
        name = "send_event",
        description = "Send a business event (e.g. payment.settled). It starts the workflows it triggers and resumes executions waiting for it. Give an event_id so that a retry cannot count twice.",
        annotations(
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn send_event(
        &self,
        Parameters(input): Parameters<SendEventInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<EventOutput>, ToolError> {
        let caller = self.caller(&ctx).map_err(protocol)?;
        let correlation_id = input
            .execution_id
            .as_deref()
            .map(|id| parse_uuid("execution_id", id, "an execution id"))
            .transpose()?;
        let event = NewEventDto {
            event_type: input.event_type,
            payload: Value::Object(input.data.unwrap_or_default()),
            source: Some(CHANNEL.to_owned()),
            event_id: input.event_id,
            correlation_id,
        };
        let sent = caller.client.send_event(&event, false).await?;
        Ok(Json(EventOutput {
            id: sent.id.to_string(),
            event_id: sent.event_id,
            started: sent.started.iter().map(Uuid::to_string).collect(),
            resumed: sent.resumed.iter().map(Uuid::to_string).collect(),
            matched_workflows: sent.matched_workflows,
            idempotent: sent.idempotent,
        }))
    }

    /// Where an execution stands.
    #[tool(
        name = "get_execution",
        description = "Get an execution's status, the step it is at, the approval or event it waits for, and its context.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn get_execution(
        &self,
        Parameters(input): Parameters<ExecutionIdInput>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ExecutionOutput>, ToolError> {
        let caller = self.caller(&ctx).map_err(protocol)?;
        let id = parse_uuid("execution_id", &input.execution_id, "an execution id")?;
        let execution = caller.client.execution(id).await?;
        Ok(Json(ExecutionOutput::new(&execution, &caller.console)))
    }
}

/// A missing caller is the transport's fault, not the model's: it still ends the call as
/// a tool error, never the session.
fn protocol(e: ErrorData) -> ToolError {
    ToolError::refused("unauthorized", e.message.to_string())
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("tollgate", env!("CARGO_PKG_VERSION")).with_title("Tollgate"),
            )
            .with_instructions(
                "Tollgate keeps durable, policy-checked human approvals. Before an action that \
                 moves money, contacts customers, deletes data or changes production, call \
                 request_approval, then wait_for_approval until decided, and act only when \
                 may_proceed is true. Requests survive restarts; decisions may take hours.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.caller(&ctx)?;
        let tools = self
            .tool_router
            .list_all()
            .into_iter()
            .filter(|t| needs(&t.name).is_none_or(|p| caller.principal.may(p)))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = self.caller(&ctx)?;
        if let Some(permission) = needs(&request.name) {
            if !caller.principal.may(permission) {
                return Ok(ToolError::refused(
                    "forbidden",
                    format!(
                        "key `{}` may not {}",
                        caller.principal.subject,
                        permission.describe()
                    ),
                )
                .result()
                .into());
            }
        }
        if self.tool_router.get(&request.name).is_none() {
            return Ok(ToolError::refused(
                "unknown_tool",
                format!("there is no tool `{}`", request.name),
            )
            .result()
            .into());
        }
        if let Err(error) = check_input(&request.name, request.arguments.as_ref()) {
            return Ok(error.result().into());
        }
        self.tool_router
            .call(ToolCallContext::new(self, request, ctx))
            .await
    }

    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        self.tool_router.get(name).cloned()
    }
}

/// Reads `arguments` as tool `name`'s input before the tool runs, so that a malformed
/// argument is refused with its path (`approvers.roles[1]`), which the bare
/// deserialisation error would not name.
fn check_input(name: &str, arguments: Option<&Map<String, Value>>) -> Result<(), ToolError> {
    fn read<T: serde::de::DeserializeOwned>(arguments: &Value) -> Result<(), ToolError> {
        match serde_path_to_error::deserialize::<_, T>(arguments) {
            Ok(_) => Ok(()),
            Err(e) => {
                let path = e.path().to_string();
                let why = e.into_inner().to_string();
                // A missing or unknown field is named by serde itself; its path is the
                // object that holds it.
                Err(if path == "." {
                    ToolError::refused("invalid_input", why)
                } else {
                    ToolError::invalid(&path, why)
                })
            }
        }
    }
    let arguments = Value::Object(arguments.cloned().unwrap_or_default());
    match name {
        "request_approval" => read::<RequestApprovalInput>(&arguments),
        "get_approval" => read::<ApprovalIdInput>(&arguments),
        "wait_for_approval" => read::<WaitForApprovalInput>(&arguments),
        "list_workflows" => read::<ListWorkflowsInput>(&arguments),
        "start_workflow" => read::<StartWorkflowInput>(&arguments),
        "send_event" => read::<SendEventInput>(&arguments),
        "get_execution" => read::<ExecutionIdInput>(&arguments),
        _ => Ok(()),
    }
}

/// The approval as the agent sees it; an expired approval's policy is looked up to say
/// whether expiry counts as approval.
async fn view(caller: &Caller, approval: &ApprovalDto) -> Result<ApprovalOutput, ToolError> {
    let expired_ok = if approval.status == "expired" {
        let execution = caller.client.execution(approval.execution_id).await?;
        let workflow = caller.client.workflow(execution.workflow_id).await?;
        step_on_timeout(&workflow.steps, &approval.step_id).as_deref() == Some("approve")
    } else {
        false
    };
    Ok(ApprovalOutput::new(approval, &caller.console, expired_ok))
}

/// The `on_timeout` of approval step `step_id` in a workflow's canonical steps.
fn step_on_timeout(steps: &Value, step_id: &str) -> Option<String> {
    steps
        .as_array()?
        .iter()
        .find(|s| s.get("id").and_then(Value::as_str) == Some(step_id))?
        .get("approval")?
        .get("on_timeout")?
        .as_str()
        .map(str::to_owned)
}

fn workflow_view(w: &WorkflowDto) -> WorkflowOutput {
    let has_approval = w.steps.as_array().is_some_and(|steps| {
        steps
            .iter()
            .any(|s| s.get("type").and_then(Value::as_str) == Some("approval"))
    });
    WorkflowOutput {
        id: w.id.to_string(),
        workflow_id: w.workflow_id.clone(),
        version: w.version.clone(),
        name: w.name.clone(),
        description: w.description.clone(),
        enabled: w.enabled,
        trigger: w
            .trigger
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("event")
            .to_owned(),
        has_approval,
        input_schema: w.input_schema.clone(),
    }
}

/// The enabled workflow `named` (a UUID or a workflow id; for an id, its newest enabled
/// version).
async fn resolve_workflow(
    client: &Client,
    field: &str,
    named: &str,
) -> Result<WorkflowDto, ToolError> {
    let named = named.trim();
    if let Ok(id) = Uuid::parse_str(named) {
        return match client.workflow(id).await {
            Ok(w) => Ok(w),
            Err(e) if e.is_not_found() => Err(ToolError::invalid(
                field,
                format!("no workflow has the UUID `{named}`; list_workflows shows them"),
            )),
            Err(e) => Err(e.into()),
        };
    }
    let versions = client.workflow_versions(named).await?;
    let newest = versions
        .into_iter()
        .filter(|w| w.enabled)
        .max_by_key(|w| w.created_at);
    newest.ok_or_else(|| {
        ToolError::invalid(
            field,
            format!("no enabled workflow `{named}`; list_workflows shows the ones there are"),
        )
    })
}

/// The one-gate workflow for `input`'s policy, created on first use. Its id is derived
/// from the policy, so every request with the same policy shares one workflow (and an
/// operator can disable that workflow to stop such requests).
async fn built_in_workflow(
    caller: &Caller,
    input: &RequestApprovalInput,
) -> Result<WorkflowDto, ToolError> {
    let (key, definition) = approval_definition(input)?;
    let existing = caller.client.workflow_versions(&key).await;
    let versions = match existing {
        Ok(v) => v,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    if let Some(w) = versions.into_iter().max_by_key(|w| w.created_at) {
        if !w.enabled {
            return Err(ToolError::refused(
                "disabled",
                format!("approvals with this policy are switched off: an operator disabled workflow `{key}`"),
            ));
        }
        return Ok(w);
    }
    if !caller.principal.may(Permission::WriteWorkflows) {
        return Err(ToolError::refused(
            "forbidden",
            format!(
                "no workflow for this approval policy exists yet and key `{}` may not {}; ask an operator to create it, or name a workflow",
                caller.principal.subject,
                Permission::WriteWorkflows.describe()
            ),
        ));
    }
    match caller.client.create_workflow(&definition).await {
        Ok(w) => Ok(w),
        // Another request with the same policy created it first.
        Err(e) if e.is_conflict() => {
            let versions = caller.client.workflow_versions(&key).await?;
            versions
                .into_iter()
                .max_by_key(|w| w.created_at)
                .ok_or_else(|| ToolError::from(e))
        }
        Err(tollgate_client::Error::Api {
            status: 400,
            message,
            details,
            ..
        }) => Err(invalid_policy(&message, &details)),
        Err(e) => Err(e.into()),
    }
}

/// A policy the engine refused: the field at fault in the tool's own terms.
fn invalid_policy(message: &str, details: &[tollgate_client::wire::Detail]) -> ToolError {
    let field = ["approvers", "required", "timeout", "on_timeout"]
        .into_iter()
        .find(|f| details.iter().any(|d| d.path.contains(f)))
        .unwrap_or("approvers");
    let why = details
        .iter()
        .map(|d| d.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    ToolError::invalid(
        field,
        if why.is_empty() {
            message.to_owned()
        } else {
            why
        },
    )
}

/// The built-in one-gate workflow for `input`'s approval policy: its `workflow_id`
/// (derived from the policy) and its definition.
fn approval_definition(input: &RequestApprovalInput) -> Result<(String, Value), ToolError> {
    let approvers = input.approvers.clone().unwrap_or_default();
    let clean = |list: &[String], field: &str| -> Result<Vec<String>, ToolError> {
        let mut out: Vec<String> = Vec::new();
        for name in list {
            let name = name.trim();
            if name.is_empty() {
                return Err(ToolError::invalid(field, "names must not be empty"));
            }
            if !out.iter().any(|n| n == name) {
                out.push(name.to_owned());
            }
        }
        out.sort();
        Ok(out)
    };
    let roles = clean(&approvers.roles, "approvers.roles")?;
    let users = clean(&approvers.users, "approvers.users")?;
    if roles.is_empty() && users.is_empty() {
        return Err(ToolError::invalid(
            "approvers",
            "name at least one role or user who may decide (or name a `workflow` that sets its own approvers)",
        ));
    }
    let required = match &input.required {
        None => json!(1),
        Some(RequiredInput::Count(0)) => {
            return Err(ToolError::invalid("required", "must be at least 1"))
        }
        Some(RequiredInput::Count(n)) => json!(n),
        Some(RequiredInput::All(s)) if s == "all" => {
            if users.is_empty() {
                return Err(ToolError::invalid(
                    "required",
                    "`all` means every listed user: name them in approvers.users",
                ));
            }
            json!("all")
        }
        Some(RequiredInput::All(other)) => {
            return Err(ToolError::invalid(
                "required",
                format!("`{other}` is neither a number nor `all`"),
            ))
        }
    };
    let timeout = match input.timeout.as_deref().map(str::trim) {
        None => None,
        Some(t) => Some(
            t.parse::<tollgate_model::duration::Duration>()
                .map(|_| t.to_owned())
                .map_err(|e| ToolError::invalid("timeout", e.to_string()))?,
        ),
    };
    let on_timeout = match input.on_timeout.unwrap_or(OnTimeoutInput::Reject) {
        OnTimeoutInput::Reject => "reject",
        OnTimeoutInput::Approve => "approve",
        OnTimeoutInput::Fail => "fail",
    };
    let mut policy = Map::new();
    policy.insert("approvers".into(), json!({"roles": roles, "users": users}));
    policy.insert("required".into(), required.clone());
    if let Some(t) = &timeout {
        policy.insert("timeout".into(), json!(t));
    }
    policy.insert("on_timeout".into(), json!(on_timeout));
    let digest = Sha256::digest(Value::Object(policy.clone()).to_string().as_bytes());
    let hash = digest.iter().take(6).fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    });
    let who = roles
        .iter()
        .map(|r| format!("role {r}"))
        .chain(users.iter().cloned())
        .collect::<Vec<_>>()
        .join(", ");
    let mut approval = policy;
    approval.insert("reason".into(), json!("{{title}}"));
    approval.insert(
        "data".into(),
        json!({"title": "{{title}}", "summary": "{{summary}}", "arguments": "{{data}}", "channel": CHANNEL}),
    );
    let key = format!("mcp-approval-{hash}");
    let definition = json!({
        "workflow_id": key,
        "version": "1",
        "name": format!("Agent approval: {who}; {required} needed{}", timeout.as_ref().map(|t| format!("; {t} to decide")).unwrap_or_default()),
        "description": "Created by the MCP server for agents' request_approval calls with this policy. Disable it to refuse such requests.",
        "tags": ["mcp"],
        "trigger": {"type": "manual"},
        "steps": [
            {"id": "approval", "type": "approval", "approval": Value::Object(approval),
             "on_approve": "approved", "on_reject": "rejected"},
            {"id": "approved", "type": "action", "action": "allow"},
            {"id": "rejected", "type": "action", "action": "block"}
        ]
    });
    Ok((key, definition))
}

/// Serves `server` on standard input and output until the client closes them.
pub async fn serve_stdio(server: Server) -> Result<(), Error> {
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::Session(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| Error::Session(e.to_string()))?;
    Ok(())
}

/// The Streamable HTTP endpoint for `server` (made with [`Server::per_request`]):
/// stateless, JSON answers where no progress is streamed. The host serving it must
/// authenticate each request and put its [`Caller`] (as `Arc<Caller>`) into the HTTP
/// request's extensions; a request without one is refused.
///
/// `Host` checks are off: they protect unauthenticated servers on localhost from DNS
/// rebinding, and every request here carries a bearer key a rebinding page cannot know.
pub fn http_service(server: Server) -> HttpService {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

/// The name under which tools appear (for docs and tests).
pub fn tool_names() -> Vec<Cow<'static, str>> {
    Server::tool_router()
        .list_all()
        .into_iter()
        .map(|t| t.name)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn input(v: Value) -> RequestApprovalInput {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn one_policy_one_workflow_whatever_the_order_or_repeats() {
        let (key, a) = approval_definition(&input(json!({"title": "a",
            "approvers": {"roles": ["finance", "ops", "finance"]}, "timeout": "4h"})))
        .unwrap();
        assert_eq!(a["workflow_id"], key);
        let (_, b) = approval_definition(&input(json!({"title": "another title",
            "approvers": {"roles": ["ops", "finance"]}, "timeout": "4h", "on_timeout": "reject"})))
        .unwrap();
        assert_eq!(a["workflow_id"], b["workflow_id"]);
        assert!(a["workflow_id"]
            .as_str()
            .unwrap()
            .starts_with("mcp-approval-"));
        let gate = &a["steps"][0]["approval"];
        assert_eq!(gate["approvers"]["roles"], json!(["finance", "ops"]));
        assert_eq!(gate["required"], 1);
        assert_eq!(gate["timeout"], "4h");
        assert_eq!(gate["data"]["arguments"], "{{data}}");
        // The definition is one the engine accepts.
        tollgate_model::load(&a).unwrap();

        let (_, other) = approval_definition(&input(json!({"title": "a",
            "approvers": {"roles": ["finance", "ops"]}, "timeout": "4h", "required": 2})))
        .unwrap();
        assert_ne!(a["workflow_id"], other["workflow_id"]);
    }

    #[test]
    fn a_bad_policy_names_its_field() {
        for (v, field) in [
            (json!({"title": "x"}), "approvers"),
            (
                json!({"title": "x", "approvers": {"roles": [" "]}}),
                "approvers.roles",
            ),
            (
                json!({"title": "x", "approvers": {"users": ["a"]}, "required": 0}),
                "required",
            ),
            (
                json!({"title": "x", "approvers": {"roles": ["a"]}, "required": "all"}),
                "required",
            ),
            (
                json!({"title": "x", "approvers": {"users": ["a"]}, "required": "most"}),
                "required",
            ),
            (
                json!({"title": "x", "approvers": {"users": ["a"]}, "timeout": "later"}),
                "timeout",
            ),
        ] {
            let e = approval_definition(&input(v.clone())).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(field), "{v}: {}", e.message);
        }
    }

    #[test]
    fn malformed_arguments_are_refused_with_their_path() {
        let check = |tool: &str, v: Value| {
            check_input(tool, v.as_object()).map_err(|e| (e.field, e.message))
        };
        let (field, message) = check(
            "request_approval",
            json!({"title": "x", "approvers": {"roles": ["a", 5]}}),
        )
        .unwrap_err();
        assert_eq!(field.as_deref(), Some("approvers.roles[1]"), "{message}");
        let (field, message) =
            check("request_approval", json!({"summary": "no title"})).unwrap_err();
        assert_eq!(field, None);
        assert!(message.contains("missing field `title`"), "{message}");
        let (_, message) =
            check("get_approval", json!({"approval_id": "x", "aproval": 1})).unwrap_err();
        assert!(message.contains("unknown field `aproval`"), "{message}");
        let (field, _) = check(
            "wait_for_approval",
            json!({"approval_id": "x", "timeout_seconds": -1}),
        )
        .unwrap_err();
        assert_eq!(field.as_deref(), Some("timeout_seconds"));
        assert!(check("list_workflows", json!({})).is_ok());
        assert!(check("send_event", json!({"type": "a.b", "data": {"x": 1}})).is_ok());
    }

    #[test]
    fn only_an_approval_or_an_approving_deadline_lets_the_agent_proceed() {
        let approval = |status: &str| -> ApprovalDto {
            serde_json::from_value(json!({
                "id": Uuid::nil(), "execution_id": Uuid::nil(), "step_id": "approval",
                "approver_roles": ["finance"], "approver_users": [], "required": 1,
                "status": status, "data": {"title": "Refund"}, "allow_self_approval": false,
                "decisions": [
                    {"decided_by": "a", "decision": "approve", "data": {"amount": 500, "note": "x"},
                     "decided_at": "2026-12-03T10:00:00Z"},
                    {"decided_by": "b", "decision": "approve", "data": {"amount": 400},
                     "decided_at": "2026-12-03T10:01:00Z"}],
                "requested_at": "2026-12-03T09:00:00Z"
            }))
            .unwrap()
        };
        for (status, expired_ok, may) in [
            ("approved", false, true),
            ("pending", false, false),
            ("rejected", false, false),
            ("cancelled", false, false),
            ("expired", false, false),
            ("expired", true, true),
        ] {
            let out = ApprovalOutput::new(&approval(status), "http://h", expired_ok);
            assert_eq!(out.may_proceed, may, "{status} {expired_ok}");
            assert_eq!(out.decided, status != "pending");
        }
        let out = ApprovalOutput::new(&approval("approved"), "http://h", false);
        // Later decisions win where they overlap.
        assert_eq!(out.decided_data["amount"], 400);
        assert_eq!(out.decided_data["note"], "x");
        assert_eq!(out.title.as_deref(), Some("Refund"));
        assert_eq!(
            out.console_url,
            format!("http://h/approvals/{}", Uuid::nil())
        );
    }

    #[test]
    fn only_keys_that_may_act_see_the_acting_tools() {
        let names = tool_names();
        assert_eq!(names.len(), 7);
        let visible = |role: &str| -> Vec<&str> {
            let p = Principal {
                subject: "k".into(),
                roles: vec![role.into()],
            };
            names
                .iter()
                .map(AsRef::as_ref)
                .filter(|t| needs(t).is_none_or(|perm| p.may(perm)))
                .collect()
        };
        assert_eq!(visible("admin").len(), 7);
        assert_eq!(visible("operator").len(), 7);
        assert_eq!(
            visible("service"),
            [
                "get_approval",
                "get_execution",
                "list_workflows",
                "send_event",
                "wait_for_approval"
            ]
        );
        assert_eq!(
            visible("viewer"),
            [
                "get_approval",
                "get_execution",
                "list_workflows",
                "wait_for_approval"
            ]
        );
        assert_eq!(visible("finance"), visible("viewer"));
    }
}
