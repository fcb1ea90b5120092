//! The tools' inputs and outputs: what a model reads in `tools/list` (their JSON Schemas
//! are generated from these types, descriptions from the doc comments) and what it gets
//! back as structured content.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tollgate_client::wire::{ApprovalDto, ExecutionDto};

/// Who may decide an approval the built-in workflow asks for.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproversInput {
    /// Holders of any of these roles may decide, e.g. `["finance_manager"]`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// These people (API key names) may decide, e.g. `["alice"]`.
    #[serde(default)]
    pub users: Vec<String>,
}

/// How many approvals are needed: a number of distinct approvers, or `"all"` (every
/// listed user).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RequiredInput {
    /// This many distinct approvers (at least 1).
    Count(u32),
    /// `"all"`: every user in `approvers.users`.
    All(String),
}

/// What the deadline decides when nobody decided in time.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeoutInput {
    /// Treated as a rejection (the default): the action must not happen.
    Reject,
    /// Treated as an approval.
    Approve,
    /// The request fails as timed out.
    Fail,
}

/// `request_approval`'s input.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestApprovalInput {
    /// One line that says what will happen if approved, e.g. "Refund $740 to order 1042".
    pub title: String,
    /// Why the action is needed and what you checked, for the person deciding.
    #[serde(default)]
    pub summary: Option<String>,
    /// The action's arguments exactly as you would run it (e.g. `{"order_id": "1042",
    /// "amount": 740}`). Approvers see them and may return edited values.
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
    /// Who may decide (roles and/or users). Required unless `workflow` is given; a named
    /// workflow sets its own approvers.
    #[serde(default)]
    pub approvers: Option<ApproversInput>,
    /// How many approvals are needed (default 1).
    #[serde(default)]
    pub required: Option<RequiredInput>,
    /// How long approvers have, e.g. `"30m"`, `"4h"`, `"2d"` (default: no deadline).
    #[serde(default)]
    pub timeout: Option<String>,
    /// What the deadline decides (default `reject`).
    #[serde(default)]
    pub on_timeout: Option<OnTimeoutInput>,
    /// A workflow (its id or UUID) that has an approval gate and sets the policy itself;
    /// it receives `{title, summary, data}` as its input. Default: a one-gate workflow
    /// built from `approvers`, `required`, `timeout` and `on_timeout`.
    #[serde(default)]
    pub workflow: Option<String>,
}

/// `get_approval`'s input.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalIdInput {
    /// The `approval_id` that `request_approval` returned.
    pub approval_id: String,
}

/// `wait_for_approval`'s input.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitForApprovalInput {
    /// The `approval_id` that `request_approval` returned.
    pub approval_id: String,
    /// How long to wait for the decision, in seconds (default 60; the server caps it).
    /// When it is still pending afterwards, call again: the request stays open.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// `list_workflows`' input.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListWorkflowsInput {
    /// Include disabled workflows (default false).
    #[serde(default)]
    pub include_disabled: bool,
}

/// `start_workflow`'s input.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartWorkflowInput {
    /// The workflow's id (e.g. `refunds`) or UUID, from `list_workflows`.
    pub workflow: String,
    /// Its input (the trigger payload), an object.
    #[serde(default)]
    pub input: Option<Map<String, Value>>,
}

/// `send_event`'s input.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SendEventInput {
    /// The event type, e.g. `payment.settled`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's payload, an object.
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
    /// Your id for this event: sending the same id again changes nothing, so a retry is
    /// safe. Strongly recommended.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Deliver only to this execution (its `execution_id`).
    #[serde(default)]
    pub execution_id: Option<String>,
}

/// `get_execution`'s input.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecutionIdInput {
    /// The execution's id.
    pub execution_id: String,
}

/// One decision on an approval.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DecisionOutput {
    /// Who decided.
    pub decided_by: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Their reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Values they returned (e.g. an edited amount).
    pub data: Value,
    /// When (RFC 3339).
    pub decided_at: String,
}

/// An approval request as an agent needs it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ApprovalOutput {
    /// Its id, for `get_approval` and `wait_for_approval`.
    pub approval_id: String,
    /// The execution it gates.
    pub execution_id: String,
    /// `pending`, `approved`, `rejected`, `expired` (the deadline passed) or `cancelled`.
    pub status: String,
    /// Whether the decision is final (anything but `pending`).
    pub decided: bool,
    /// Whether the action may go ahead: true only when `approved`, or when the deadline
    /// passed and the policy says an expired request counts as approved.
    pub may_proceed: bool,
    /// What to do next, in one sentence.
    pub next: String,
    /// What was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Roles that may decide.
    pub approver_roles: Vec<String>,
    /// People that may decide.
    pub approver_users: Vec<String>,
    /// Approvals needed.
    pub required: u32,
    /// The decisions so far.
    pub decisions: Vec<DecisionOutput>,
    /// The values the approvers returned, merged in decision order: use these instead of
    /// your own arguments where they differ (an approver may lower an amount).
    pub decided_data: Map<String, Value>,
    /// Who asked (the API key's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// When asked (RFC 3339).
    pub requested_at: String,
    /// The deadline (RFC 3339), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When it was settled (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
    /// Where a person decides it in the web console.
    pub console_url: String,
}

impl ApprovalOutput {
    /// The agent's view of `approval`; `console` is the console's base URL; `expired_ok`
    /// says whether an expired request counts as approved (its execution went on through
    /// the approve branch).
    pub fn new(approval: &ApprovalDto, console: &str, expired_ok: bool) -> Self {
        let mut decided_data = Map::new();
        for decision in &approval.decisions {
            if let Value::Object(values) = &decision.data {
                decided_data.extend(values.clone());
            }
        }
        let status = approval.status.clone();
        let may_proceed = status == "approved" || (status == "expired" && expired_ok);
        let next = match status.as_str() {
            "pending" => "Not decided yet: call wait_for_approval with this approval_id (again, if it returns still pending). Do not perform the action before it is approved.".to_owned(),
            "approved" => "Approved: perform the action, using decided_data where it differs from your arguments.".to_owned(),
            "expired" if expired_ok => "Nobody decided in time and the policy treats that as approval: you may perform the action.".to_owned(),
            "expired" => "Nobody decided in time: do not perform the action.".to_owned(),
            "rejected" => "Rejected: do not perform the action; tell the user why (see the decisions' reasons).".to_owned(),
            other => format!("The request is `{other}`: do not perform the action."),
        };
        Self {
            approval_id: approval.id.to_string(),
            execution_id: approval.execution_id.to_string(),
            decided: status != "pending",
            may_proceed,
            next,
            status,
            title: approval
                .data
                .get("title")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| approval.reason.clone()),
            approver_roles: approval.approver_roles.clone(),
            approver_users: approval.approver_users.clone(),
            required: approval.required,
            decisions: approval
                .decisions
                .iter()
                .map(|d| DecisionOutput {
                    decided_by: d.decided_by.clone(),
                    decision: d.decision.clone(),
                    reason: d.reason.clone(),
                    data: d.data.clone(),
                    decided_at: d.decided_at.to_rfc3339(),
                })
                .collect(),
            decided_data,
            requested_by: approval.requested_by.clone(),
            requested_at: approval.requested_at.to_rfc3339(),
            expires_at: approval.expires_at.map(|t| t.to_rfc3339()),
            decided_at: approval.decided_at.map(|t| t.to_rfc3339()),
            console_url: format!("{console}/approvals/{}", approval.id),
        }
    }
}

/// `wait_for_approval`'s answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WaitOutput {
    /// The approval as it stood when the wait ended.
    #[serde(flatten)]
    pub approval: ApprovalOutput,
    /// True when the wait ended without a decision (call again to keep waiting).
    pub still_pending: bool,
    /// How long this call waited, in seconds.
    pub waited_seconds: f64,
}

/// A workflow an agent may start.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WorkflowOutput {
    /// Its UUID (of this version).
    pub id: String,
    /// Its stable id, e.g. `refunds`.
    pub workflow_id: String,
    /// Its version label.
    pub version: String,
    /// Its name.
    pub name: String,
    /// What it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether it can be started.
    pub enabled: bool,
    /// What starts it: `manual`, `event` or `schedule`.
    pub trigger: String,
    /// Whether it has an approval gate (so `request_approval` can name it).
    pub has_approval: bool,
    /// The input it expects (a JSON Schema), when it declares one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
}

/// `list_workflows`' answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WorkflowsOutput {
    /// The workflows, newest version of each.
    pub workflows: Vec<WorkflowOutput>,
}

/// An execution as an agent needs it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ExecutionOutput {
    /// Its id.
    pub execution_id: String,
    /// The workflow's id.
    pub workflow: String,
    /// `running`, `paused` (at an approval or by an operator), `waiting` (for an event),
    /// `completed`, `failed`, `cancelled` or `timed_out`.
    pub status: String,
    /// `allowed`, `blocked` or `executed` once completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The step it is at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    /// The open approval it stopped at (use `wait_for_approval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// The event type it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_event: Option<String>,
    /// Why it did not complete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its context: the input and what its steps recorded.
    pub context: Value,
    /// Where an operator sees it in the web console.
    pub console_url: String,
}

impl ExecutionOutput {
    /// The agent's view of `execution`.
    pub fn new(execution: &ExecutionDto, console: &str) -> Self {
        Self {
            execution_id: execution.id.to_string(),
            workflow: execution.workflow_key.clone(),
            status: execution.status.clone(),
            result: execution.result.clone(),
            current_step: execution.current_step_id.clone(),
            approval_id: execution.approval_id.map(|id| id.to_string()),
            waiting_for_event: execution.wait.as_ref().and_then(|w| w.event.clone()),
            error: execution
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.kind, e.message)),
            context: execution.context.clone(),
            console_url: format!("{console}/executions/{}", execution.id),
        }
    }
}

/// `send_event`'s answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EventOutput {
    /// The server's id of the event.
    pub id: String,
    /// Your `event_id`, when you gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// Executions it started.
    pub started: Vec<String>,
    /// Waiting executions it resumed.
    pub resumed: Vec<String>,
    /// How many workflows it started; 0 with nothing resumed means nobody listened.
    pub matched_workflows: usize,
    /// Whether sending it again is safe (it had an `event_id`).
    pub idempotent: bool,
}
