//! The REST API's wire shapes: what `tollgate-api` sends and accepts, as the typed client
//! reads and writes them.
//!
//! These are the resources as clients see them, separate from the stored records in
//! [`crate::records`] (which carry leases, cursors and other internals clients never
//! see). The server and the client share these definitions, so the two cannot drift
//! apart; with the `openapi` feature each also describes itself for the server's
//! OpenAPI document. Responses ignore fields they do not know (a newer server may add
//! some); request bodies refuse them, as the server does.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::records::{
    ApiKey, ApprovalAssignment, ApprovalComment, ApprovalRequest, ApprovalSla, Decision,
    Delegation, Event, Execution, Notification, Record, ResumeRequest, StepRecord, Workflow,
};
use crate::schedule::{CatchUp, Schedule};
use crate::{ExecutionStatus, PauseReason};

/// The `error` object of every failed response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Machine-readable code: `bad_request`, `validation_failed`, `unauthorized`,
    /// `forbidden`, `not_found`, `method_not_allowed`, `conflict`, `payload_too_large`,
    /// `unsupported_media_type`, `internal`, `unavailable` (the database cannot be reached), `timeout`
    /// (the request outlived `--request-timeout`).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Per-field problems (`validation_failed`): `[{path, message}]`.
    pub details: Vec<Detail>,
}

/// One problem with a JSON path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Detail {
    /// Where, e.g. `steps[2].on_true`.
    pub path: String,
    /// Why.
    pub message: String,
}

/// The envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// A workflow: its current definition plus identity and state.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkflowDto {
    /// Server-assigned id (UUID v7).
    pub id: Uuid,
    /// The author's stable id, shared by all versions.
    pub workflow_id: String,
    /// Version label.
    pub version: String,
    /// Human name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Whether events start it.
    pub enabled: bool,
    /// Labels.
    pub tags: Vec<String>,
    /// What starts it.
    pub trigger: Value,
    /// Context loading.
    pub context: Value,
    /// Whole-execution deadline, e.g. `7d`.
    pub timeout: Option<String>,
    /// Step budget per execution.
    pub max_steps: Option<u32>,
    /// How long ended executions are kept, e.g. `90d` (absent: the server's
    /// `--retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// The author's opaque data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The declared shape of the trigger payload (a JSON Schema) that paths are checked
    /// against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// Whether a missing path fails the step (and an undeclared one fails validation).
    pub strict_paths: bool,
    /// The steps (canonical form).
    pub steps: Value,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// In the answer to a create or replace: what validation found suspicious but not
    /// wrong (an unreachable step, a path `input_schema` does not declare), with paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Detail>,
}

impl From<&Workflow> for WorkflowDto {
    fn from(w: &Workflow) -> Self {
        let d = &w.definition;
        let json = serde_json::to_value(d.as_ref()).unwrap_or(Value::Null);
        let field = |name: &str| json.get(name).cloned().unwrap_or(Value::Null);
        Self {
            id: w.id,
            workflow_id: d.workflow_id.clone(),
            version: d.version.clone(),
            name: d.name.clone(),
            description: d.description.clone(),
            enabled: w.enabled,
            tags: d.tags.clone(),
            trigger: field("trigger"),
            context: field("context"),
            timeout: d.timeout.map(|t| t.to_string()),
            max_steps: d.max_steps,
            retention: d.retention.map(|t| t.to_string()),
            metadata: d.metadata.clone(),
            input_schema: d.input_schema.clone(),
            strict_paths: d.strict_paths,
            steps: field("steps"),
            created_at: w.created_at,
            updated_at: w.updated_at,
            warnings: Vec::new(),
        }
    }
}

/// A wait gate's event and deadline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitDto {
    /// The awaited event type.
    pub event: Option<String>,
    /// When the wait times out.
    pub deadline: Option<DateTime<Utc>>,
}

/// Why an execution did not complete.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionErrorDto {
    /// `step_failed`, `timed_out`, `max_steps_exceeded`, `cancelled` or `interrupted`.
    pub kind: String,
    /// What happened.
    pub message: String,
}

/// One run of a workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionDto {
    /// Id (UUID v7).
    pub id: Uuid,
    /// The workflow's uuid.
    pub workflow_id: Uuid,
    /// The workflow's string id.
    pub workflow_key: String,
    /// The definition version it runs (pinned at start).
    pub workflow_version: String,
    /// `running`, `paused`, `waiting`, `completed`, `failed`, `cancelled`, `timed_out`.
    pub status: String,
    /// `allowed`, `blocked`, `executed` or null.
    pub result: Option<String>,
    /// The event type that started it, or `manual`.
    pub trigger_event: String,
    /// The triggering payload.
    pub trigger_payload: Value,
    /// The execution's context.
    pub context: Value,
    /// The step it is at (null once ended).
    pub current_step_id: Option<String>,
    /// When it stopped at its current gate.
    pub paused_at: Option<DateTime<Utc>>,
    /// `approval`, `manual` or `event`.
    pub paused_reason: Option<String>,
    /// The gate step.
    pub paused_step_id: Option<String>,
    /// The open approval request of an approval gate.
    pub approval_id: Option<Uuid>,
    /// The wait of a waiting execution.
    pub wait: Option<WaitDto>,
    /// Whole-execution deadline.
    pub deadline: Option<DateTime<Utc>>,
    /// A pause was asked for while a step was in flight; it takes effect at the next
    /// step boundary.
    pub pause_requested: bool,
    /// Times it was resumed.
    pub resume_count: u32,
    /// Last resume.
    pub last_resumed_at: Option<DateTime<Utc>>,
    /// Subject of the key that started it (the requester of its approvals).
    pub requested_by: Option<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub completed_at: Option<DateTime<Utc>>,
    /// End minus start.
    pub duration_ms: Option<i64>,
    /// Why it did not complete.
    pub error: Option<ExecutionErrorDto>,
}

impl From<&Execution> for ExecutionDto {
    fn from(e: &Execution) -> Self {
        Self::build(
            e,
            Documents {
                workflow_key: e.workflow_key.clone(),
                workflow_version: e.workflow_version.clone(),
                trigger_event: e.trigger_event.clone(),
                trigger_payload: e.trigger_payload.clone(),
                context: e.context.clone(),
                requested_by: e.requested_by.clone(),
            },
        )
    }
}

/// Moves the execution's documents into the view instead of copying them: an answer
/// that ends with the execution (a decision's, a start's) then copies no context.
impl From<Execution> for ExecutionDto {
    fn from(mut e: Execution) -> Self {
        let documents = Documents {
            workflow_key: std::mem::take(&mut e.workflow_key),
            workflow_version: std::mem::take(&mut e.workflow_version),
            trigger_event: std::mem::take(&mut e.trigger_event),
            trigger_payload: e.trigger_payload.take(),
            context: e.context.take(),
            requested_by: e.requested_by.take(),
        };
        Self::build(&e, documents)
    }
}

/// The parts of an [`ExecutionDto`] that are copied or moved out of the execution.
struct Documents {
    workflow_key: String,
    workflow_version: String,
    trigger_event: String,
    trigger_payload: Value,
    context: Value,
    requested_by: Option<String>,
}

impl ExecutionDto {
    /// The view of `e`, with its documents given apart (copied or moved by the caller).
    fn build(e: &Execution, d: Documents) -> Self {
        let gate = e.gate.as_ref().filter(|_| e.status.is_gated());
        let terminal = e.status.is_terminal();
        Self {
            id: e.id,
            workflow_id: e.workflow_id,
            workflow_key: d.workflow_key,
            workflow_version: d.workflow_version,
            status: e.status.as_str().to_owned(),
            result: e.result.map(|r| r.as_str().to_owned()),
            trigger_event: d.trigger_event,
            trigger_payload: d.trigger_payload,
            context: d.context,
            current_step_id: if terminal {
                None
            } else {
                gate.map(|g| g.step_id.clone())
                    .or_else(|| e.cursor.as_ref().map(|c| c.step_id.clone()))
            },
            paused_at: gate.map(|g| g.paused_at),
            paused_reason: gate.map(|g| g.reason.as_str().to_owned()),
            paused_step_id: gate.map(|g| g.step_id.clone()),
            approval_id: gate.and_then(|g| g.approval_id),
            wait: gate
                .filter(|g| g.reason == PauseReason::Event)
                .map(|g| WaitDto {
                    event: g.event.clone(),
                    deadline: g.deadline,
                }),
            deadline: e.deadline,
            pause_requested: e.pause_requested && e.status == ExecutionStatus::Running,
            resume_count: e.resume_count,
            last_resumed_at: e.last_resumed_at,
            requested_by: d.requested_by,
            started_at: e.started_at,
            completed_at: e.completed_at,
            duration_ms: e.duration_ms(),
            error: e.error.as_ref().map(|err| ExecutionErrorDto {
                kind: serde_json::to_value(err.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                message: err.message.clone(),
            }),
        }
    }
}

/// A step failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepErrorDto {
    /// `retryable` or `permanent` (see docs/execution-semantics.md).
    pub class: Value,
    /// What happened.
    pub message: String,
}

/// One attempt of one step.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepRecordDto {
    /// Id.
    pub id: Uuid,
    /// The step.
    pub step_id: String,
    /// Its type.
    pub step_type: String,
    /// The enclosing parallel/foreach step, for children.
    pub parent_step_id: Option<String>,
    /// Foreach iteration.
    pub iteration: Option<u32>,
    /// Which visit of the step (loops revisit).
    pub visit: u32,
    /// Which attempt (retries).
    pub attempt: u32,
    /// `running`, `completed`, `failed`, `paused`, `waiting`, `skipped`.
    pub status: String,
    /// What it worked on.
    pub input: Value,
    /// What it produced.
    pub output: Value,
    /// Non-fatal problems.
    pub warnings: Vec<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub completed_at: Option<DateTime<Utc>>,
    /// Duration.
    pub duration_ms: Option<i64>,
    /// Failure.
    pub error: Option<StepErrorDto>,
}

impl From<&StepRecord> for StepRecordDto {
    fn from(r: &StepRecord) -> Self {
        Self {
            id: r.id,
            step_id: r.step_id.clone(),
            step_type: r.step_type.clone(),
            parent_step_id: r.parent_step_id.clone(),
            iteration: r.iteration,
            visit: r.visit,
            attempt: r.attempt,
            status: r.status.as_str().to_owned(),
            input: r.input.clone(),
            output: r.output.clone(),
            warnings: r.warnings.clone(),
            started_at: r.started_at,
            completed_at: r.completed_at,
            duration_ms: r.duration_ms(),
            error: r.error.as_ref().map(|e| StepErrorDto {
                class: serde_json::to_value(e.class).unwrap_or(Value::Null),
                message: e.message.clone(),
            }),
        }
    }
}

/// `GET /executions/{id}/trace`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TraceDto {
    /// The execution.
    pub execution: ExecutionDto,
    /// Its step records in order.
    pub steps: Vec<StepRecordDto>,
    /// The definition it runs (its pinned snapshot).
    pub definition: Value,
}

/// One decision on an approval.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionDto {
    /// Subject of the deciding key.
    pub decided_by: String,
    /// `approve` or `reject`.
    pub decision: String,
    /// Why.
    pub reason: Option<String>,
    /// Data merged into the context.
    pub data: Value,
    /// When.
    pub decided_at: DateTime<Utc>,
    /// `link` when decided through a signed decision link; absent for decisions made
    /// with the decider's own key (API, console, CLI, MCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The delegate who decided in `decided_by`'s place ("by tom on behalf of maria").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<String>,
}

impl From<&Decision> for DecisionDto {
    fn from(d: &Decision) -> Self {
        Self {
            decided_by: d.decided_by.clone(),
            decision: serde_json::to_value(d.decision)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            reason: d.reason.clone(),
            data: d.data.clone(),
            decided_at: d.decided_at,
            channel: d.channel.clone(),
            delegate: d.delegate.clone(),
        }
    }
}

/// An approval request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalDto {
    /// Id.
    pub id: Uuid,
    /// The gated execution.
    pub execution_id: Uuid,
    /// The approval step.
    pub step_id: String,
    /// What is being approved.
    pub entity_type: Option<String>,
    /// Which one.
    pub entity_id: Option<String>,
    /// Roles that may decide.
    pub approver_roles: Vec<String>,
    /// Subjects that may decide.
    pub approver_users: Vec<String>,
    /// Approvals needed.
    pub required: u32,
    /// `pending`, `approved`, `rejected`, `expired`, `cancelled`, `superseded` (another gate of its `first_of` step won).
    pub status: String,
    /// Why approval is needed.
    pub reason: Option<String>,
    /// Information for the approvers: the approval step's `data`, rendered when the
    /// execution reached the gate (`{}` when the step has none).
    pub data: Value,
    /// Decisions so far.
    pub decisions: Vec<DecisionDto>,
    /// Subject that triggered the execution.
    pub requested_by: Option<String>,
    /// Whether the requester may decide.
    pub allow_self_approval: bool,
    /// When requested.
    pub requested_at: DateTime<Utc>,
    /// Deadline.
    pub expires_at: Option<DateTime<Utc>>,
    /// When settled.
    pub decided_at: Option<DateTime<Utc>>,
    /// Who is on it: an approver who claimed it, or whom an operator assigned it to.
    /// `null` when nobody holds it. Kept after the decision.
    #[serde(default)]
    pub assignee: Option<AssignmentDto>,
    /// `low`, `normal`, `high` or `urgent` (the step's `priority`).
    #[serde(default = "normal_priority")]
    pub priority: String,
    /// When it should be decided by (the step's `due`), if it says.
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    /// Pending and past `due_at`.
    #[serde(default)]
    pub overdue: bool,
}

fn normal_priority() -> String {
    "normal".to_owned()
}

impl ApprovalDto {
    /// The request with who holds it, from `held` (any order, any requests).
    pub fn held(mut self, held: &[ApprovalAssignment]) -> Self {
        self.assignee = held
            .iter()
            .find(|h| h.approval_id == self.id)
            .map(AssignmentDto::from);
        self
    }

    /// The request with its service level from `slas` (any order, any requests), as
    /// it stands at `now`.
    pub fn with_sla(mut self, slas: &[ApprovalSla], now: DateTime<Utc>) -> Self {
        if let Some(sla) = slas.iter().find(|s| s.approval_id == self.id) {
            self.priority = sla.priority.clone();
            self.due_at = sla.due_at;
            self.overdue = self.status == "pending" && sla.due_at.is_some_and(|d| d <= now);
        }
        self
    }
}

/// Who holds an approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AssignmentDto {
    /// Who is on it.
    pub subject: String,
    /// Who made it so: the subject for a claim, the operator for an assignment.
    pub assigned_by: String,
    /// Whether the subject claimed it (`false`: an operator assigned it).
    pub claimed: bool,
    /// When.
    pub since: DateTime<Utc>,
}

impl From<&ApprovalAssignment> for AssignmentDto {
    fn from(a: &ApprovalAssignment) -> Self {
        Self {
            subject: a.assignee.clone(),
            assigned_by: a.assigned_by.clone(),
            claimed: a.is_claim(),
            since: a.assigned_at,
        }
    }
}

/// `POST /delegations`: let another subject decide your approval requests for a
/// period.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewDelegationDto {
    /// The delegate: who may decide (a subject, an API key's name).
    pub to: String,
    /// Whose requests: the caller when absent. Naming someone else takes an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Only requests of executions of this workflow (its `workflow_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Only requests addressed to this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// From when (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    /// Until when (exclusive); at most 366 days after the start.
    pub ends_at: DateTime<Utc>,
    /// Why (e.g. "on leave").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A delegation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelegationDto {
    /// Id.
    pub id: Uuid,
    /// Whose requests.
    pub from: String,
    /// Their roles when it was made: the delegate decides with these, as them.
    pub from_roles: Vec<String>,
    /// Who may decide them.
    pub to: String,
    /// Only this workflow's requests.
    pub workflow: Option<String>,
    /// Only requests addressed to this role.
    pub role: Option<String>,
    /// From when.
    pub starts_at: DateTime<Utc>,
    /// Until when (exclusive).
    pub ends_at: DateTime<Utc>,
    /// Why.
    pub reason: Option<String>,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<&Delegation> for DelegationDto {
    fn from(d: &Delegation) -> Self {
        Self {
            id: d.id,
            from: d.delegator.clone(),
            from_roles: d.delegator_roles.clone(),
            to: d.delegate.clone(),
            workflow: d.workflow_key.clone(),
            role: d.role.clone(),
            starts_at: d.starts_at,
            ends_at: d.ends_at,
            reason: d.reason.clone(),
            created_by: d.created_by.clone(),
            created_at: d.created_at,
            revoked_at: d.revoked_at,
        }
    }
}

/// A page of delegations, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelegationList {
    /// The delegations.
    pub items: Vec<DelegationDto>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /delegations`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct DelegationQuery {
    /// Everyone's (operators and administrators); otherwise those from or to the caller.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// `POST /approvals/{id}/assign`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AssignDto {
    /// The subject (API key name) to give the request to. It must be someone the
    /// request addresses: a listed user, or a key holding one of its approver roles.
    pub to: String,
}

impl From<&ApprovalRequest> for ApprovalDto {
    fn from(a: &ApprovalRequest) -> Self {
        Self {
            id: a.id,
            execution_id: a.execution_id,
            step_id: a.step_id.clone(),
            entity_type: a.entity_type.clone(),
            entity_id: a.entity_id.clone(),
            approver_roles: a.approver_roles.clone(),
            approver_users: a.approver_users.clone(),
            required: a.required,
            status: a.status.as_str().to_owned(),
            reason: a.reason.clone(),
            data: a.data.clone(),
            decisions: a.decisions.iter().map(DecisionDto::from).collect(),
            requested_by: a.requested_by.clone(),
            allow_self_approval: a.allow_self_approval,
            requested_at: a.requested_at,
            expires_at: a.expires_at,
            decided_at: a.decided_at,
            assignee: None,
            priority: normal_priority(),
            due_at: None,
            overdue: false,
        }
    }
}

/// The result of a decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecidedDto {
    /// The approval after the decision.
    pub approval: ApprovalDto,
    /// The execution (after it settled, with `?wait=true`).
    pub execution: ExecutionDto,
}

/// A stored event and what it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventDto {
    /// Server id.
    pub id: Uuid,
    /// The sender's idempotency id.
    pub event_id: Option<String>,
    /// Type.
    pub event_type: String,
    /// Payload.
    pub payload: Value,
    /// Sending system.
    pub source: Option<String>,
    /// Addressed execution.
    pub correlation_id: Option<Uuid>,
    /// Subject of the sending key.
    pub submitted_by: Option<String>,
    /// Arrival.
    pub received_at: DateTime<Utc>,
    /// Executions it started.
    pub started: Vec<Uuid>,
    /// Executions it resumed.
    pub resumed: Vec<Uuid>,
}

impl From<&Event> for EventDto {
    fn from(e: &Event) -> Self {
        Self {
            id: e.id,
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            payload: e.payload.clone(),
            source: e.source.clone(),
            correlation_id: e.correlation_id,
            submitted_by: e.submitted_by.clone(),
            received_at: e.received_at,
            started: e.started.clone(),
            resumed: e.resumed.clone(),
        }
    }
}

/// One attempt to wake an execution (the audit).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResumeRequestDto {
    /// Id.
    pub id: Uuid,
    /// `approval`, `event`, `manual` or `timer`.
    pub trigger: String,
    /// Who.
    pub actor: Option<String>,
    /// What came with it.
    pub data: Value,
    /// When asked.
    pub requested_at: DateTime<Utc>,
    /// When carried out.
    pub executed_at: Option<DateTime<Utc>>,
    /// `resumed`, `refused` or `failed`.
    pub outcome: String,
    /// Why refused or failed.
    pub error: Option<String>,
}

fn wire_name<T: Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl From<&ResumeRequest> for ResumeRequestDto {
    fn from(r: &ResumeRequest) -> Self {
        Self {
            id: r.id,
            trigger: wire_name(r.trigger),
            actor: r.actor.clone(),
            data: r.data.clone(),
            requested_at: r.requested_at,
            executed_at: r.executed_at,
            outcome: wire_name(r.outcome),
            error: r.error.clone(),
        }
    }
}

/// A business record written by `create_record`/`update_record`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RecordDto {
    /// Entity type.
    pub entity: String,
    /// Entity id.
    pub entity_id: String,
    /// Data.
    pub data: Value,
    /// Starts at 1, grows by one per update.
    pub version: i64,
    /// Last write.
    pub updated_at: DateTime<Utc>,
}

impl From<&Record> for RecordDto {
    fn from(r: &Record) -> Self {
        Self {
            entity: r.entity.clone(),
            entity_id: r.entity_id.clone(),
            data: r.data.clone(),
            version: r.version,
            updated_at: r.updated_at,
        }
    }
}

/// A notification sent by a `notify` action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NotificationDto {
    /// Id.
    pub id: Uuid,
    /// Sending execution.
    pub execution_id: Uuid,
    /// Sending step.
    pub step_id: String,
    /// Recipients.
    pub recipients: Vec<String>,
    /// Text.
    pub message: String,
    /// Channel.
    pub channel: String,
    /// `queued`, `sent`, `failed`, `dropped` or `recorded`.
    pub status: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// `notify`, `approval`, `reminder` or `escalation`.
    #[serde(default)]
    pub kind: String,
    /// The approval request it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<Uuid>,
    /// The subject line, when the step set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due (`queued` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When a receiver accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
}

/// A rung of an approval request's ladder: a reminder or an escalation, and whether it
/// fired.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApprovalRungDto {
    /// `reminder` or `escalation`.
    pub kind: String,
    /// When it fires.
    pub due_at: DateTime<Utc>,
    /// Roles an escalation adds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_roles: Vec<String>,
    /// Users an escalation adds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_users: Vec<String>,
    /// When it fired (or was skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
    /// `fired`, or `skipped` (the request was no longer pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

impl From<&crate::records::ApprovalRung> for ApprovalRungDto {
    fn from(r: &crate::records::ApprovalRung) -> Self {
        Self {
            kind: r.kind.clone(),
            due_at: r.due_at,
            add_roles: r.add_roles.clone(),
            add_users: r.add_users.clone(),
            fired_at: r.fired_at,
            outcome: r.outcome.clone(),
        }
    }
}

impl From<&Notification> for NotificationDto {
    fn from(n: &Notification) -> Self {
        Self {
            id: n.id,
            execution_id: n.execution_id,
            step_id: n.step_id.clone(),
            recipients: n.recipients.clone(),
            message: n.message.clone(),
            channel: n.channel.clone(),
            status: n.status.clone(),
            created_at: n.created_at,
            kind: n.kind.clone(),
            approval_id: n.approval_id,
            subject: n.subject.clone(),
            attempts: n.attempts,
            last_error: n.last_error.clone(),
            next_attempt_at: n.next_attempt_at,
            sent_at: n.sent_at,
        }
    }
}

/// An API key as listed (never its secret).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyDto {
    /// Id.
    pub id: Uuid,
    /// Subject name.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Creation.
    pub created_at: DateTime<Utc>,
}

impl From<&ApiKey> for ApiKeyDto {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name.clone(),
            roles: k.roles.clone(),
            created_at: k.created_at,
        }
    }
}

/// A key just created: the only response that shows the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedApiKeyDto {
    /// Id.
    pub id: Uuid,
    /// Subject name.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// The key; store it now, it is never shown again.
    pub key: String,
    /// Creation.
    pub created_at: DateTime<Utc>,
}

/// `GET /whoami`: the key a client calls with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WhoAmIDto {
    /// The key's name (the subject its decisions and events are recorded under).
    pub name: String,
    /// Its roles.
    pub roles: Vec<String>,
}

/// `POST /api-keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// Unique subject name.
    pub name: String,
    /// Roles: `admin`, `operator`, `service`, `viewer`, or approver roles.
    pub roles: Vec<String>,
}

/// `POST /events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewEventDto {
    /// Type, e.g. `order.created`.
    pub event_type: String,
    /// Payload (an object).
    #[serde(default)]
    pub payload: Value,
    /// Sending system.
    pub source: Option<String>,
    /// Idempotency id: a repeat returns the first response and changes nothing.
    pub event_id: Option<String>,
    /// Deliver only to this execution.
    pub correlation_id: Option<Uuid>,
}

impl NewEventDto {
    /// An event of `event_type` with `payload` (an object), sent to whoever listens.
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        Self {
            event_type: event_type.into(),
            payload,
            source: None,
            event_id: None,
            correlation_id: None,
        }
    }

    /// With the sender's idempotency id: a repeat changes nothing, so a client may retry.
    pub fn with_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }

    /// With the sending system's name.
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
}

/// `POST /events` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventAcceptedDto {
    /// Server id.
    pub id: Uuid,
    /// The sender's idempotency id.
    pub event_id: Option<String>,
    /// Type.
    pub event_type: String,
    /// Arrival.
    pub received_at: DateTime<Utc>,
    /// Executions started.
    pub started: Vec<Uuid>,
    /// Executions resumed.
    pub resumed: Vec<Uuid>,
    /// Whether a resend is recognised: `false` when the event came without an
    /// `event_id`, so sending it again would start its workflows again.
    pub idempotent: bool,
    /// How many workflows it started (the highest enabled version of each workflow whose
    /// trigger matches its type); `0` with nothing resumed means nobody listened.
    pub matched_workflows: usize,
    /// With `?wait=true`: each started or resumed execution as it stood when the answer
    /// was sent (its next gate or its end, unless the wait timed out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executions: Option<Vec<ExecutionStateDto>>,
}

/// Where an execution stands, in an event's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExecutionStateDto {
    /// Id.
    pub id: Uuid,
    /// Status (`paused`, `completed`, …).
    pub status: String,
    /// `allowed` or `blocked` once decided.
    pub result: Option<String>,
}

impl From<&Execution> for ExecutionStateDto {
    fn from(e: &Execution) -> Self {
        Self {
            id: e.id,
            status: e.status.as_str().to_owned(),
            result: e.result.map(|r| r.as_str().to_owned()),
        }
    }
}

impl From<&Event> for EventAcceptedDto {
    fn from(e: &Event) -> Self {
        Self {
            id: e.id,
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            received_at: e.received_at,
            started: e.started.clone(),
            resumed: e.resumed.clone(),
            idempotent: e.event_id.is_some(),
            matched_workflows: e.started.len(),
            executions: None,
        }
    }
}

/// `POST /executions/{id}/events`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DirectEventDto {
    /// Must be the type the execution waits for.
    pub event_type: String,
    /// Payload.
    #[serde(default)]
    pub payload: Value,
    /// The sender's idempotency id: a resend with the same id changes nothing and is
    /// answered with the execution as it is now (header `Idempotent-Replay: true`).
    #[serde(default)]
    pub event_id: Option<String>,
}

/// `POST /workflows/{id}/execute`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExecuteDto {
    /// The trigger payload (an object).
    #[serde(default)]
    pub payload: Value,
    /// The channel the request came through, e.g. `mcp` for an agent's tool call; kept
    /// as the trigger's source (`context.trigger.source`) for the audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// `POST /executions/{id}/pause` and `/cancel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReasonDto {
    /// Why.
    pub reason: Option<String>,
}

/// `POST /executions/{id}/resume`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ResumeDto {
    /// Merged into the context.
    #[serde(default)]
    pub data: Value,
    /// Why.
    pub reason: Option<String>,
}

/// `POST /executions/{id}/retry`: start a `failed` or `timed_out` execution again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RetryDto {
    /// The top-level step of its pinned definition to continue from; absent: the step
    /// that stopped it (the failed step, or the gate it timed out at).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_step: Option<String>,
    /// Why (required: it is kept in the audit and in the context's `retry.reason`).
    #[serde(default)]
    pub reason: String,
}

/// `POST /executions/retry`: retry the executions a filter selects, at most `limit` per
/// call, or (`dry_run`) say what a retry of each would do.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkRetryDto {
    /// `failed` (default) or `timed_out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Only executions of this workflow (its string id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Only executions that stopped at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_step: Option<String>,
    /// As in the single retry; applied to each execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_step: Option<String>,
    /// Why (required).
    #[serde(default)]
    pub reason: String,
    /// How many executions to look at (1–100, default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Change nothing; report what each retry would do.
    #[serde(default)]
    pub dry_run: bool,
    /// A dry run's `next_cursor`, to preview the next executions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// What a bulk retry did (or, in a dry run, would do) to one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryItemDto {
    /// The execution.
    pub execution_id: Uuid,
    /// `retried`, `would_retry` (dry run) or `refused`.
    pub outcome: String,
    /// The step it continues (or would continue) from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_step: Option<String>,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer of `POST /executions/retry`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryReportDto {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// One entry per execution looked at, newest first.
    pub items: Vec<RetryItemDto>,
    /// More matching executions exist (a dry run's next page; after a real run, call
    /// again: the retried ones no longer match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /executions/{id}/migrate`: move a paused or waiting execution to another
/// version of its workflow.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MigrateDto {
    /// The target version of the same workflow.
    #[serde(default)]
    pub to_version: String,
    /// Old step id → new step id, for a gate whose step the new version renamed.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub step_map: std::collections::BTreeMap<String, String>,
    /// Change nothing; say whether the move would be accepted.
    #[serde(default)]
    pub dry_run: bool,
    /// Why (kept in the audit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /executions/migrate`: the same for the executions of a workflow at a gate, at
/// most `limit` per call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkMigrateDto {
    /// The workflow (its string id).
    #[serde(default)]
    pub workflow_id: String,
    /// Only executions on this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    /// The target version.
    #[serde(default)]
    pub to_version: String,
    /// `paused` (default) or `waiting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// As in the single migration.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub step_map: std::collections::BTreeMap<String, String>,
    /// How many executions to look at (1–100, default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Change nothing; report what each move would do.
    #[serde(default)]
    pub dry_run: bool,
    /// The previous answer's `next_cursor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Why (kept in each execution's audit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a migration did (or, in a dry run, would do) to one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrationItemDto {
    /// The execution.
    pub execution_id: Uuid,
    /// `migrated`, `would_migrate` (dry run) or `refused`.
    pub outcome: String,
    /// The version it ran.
    pub from_version: String,
    /// Its gate's step in the target version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_step: Option<String>,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer of `POST /executions/migrate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MigrationReportDto {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// One entry per execution looked at, newest first.
    pub items: Vec<MigrationItemDto>,
    /// More executions of that status exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /approvals/{id}/approve` and `/reject`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why (required to reject).
    pub reason: Option<String>,
    /// Data merged into the context.
    #[serde(default)]
    pub data: Value,
    /// Decide as this subject's delegate: the caller must hold a delegation from them
    /// that covers the request (`POST /delegations`). The decision counts as theirs and
    /// is recorded with the caller as `delegate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
}

/// A comment on an approval request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommentDto {
    /// UUID v7.
    pub id: Uuid,
    /// The request.
    pub approval_id: Uuid,
    /// Subject of the key that wrote it.
    pub author: String,
    /// What was said.
    pub body: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<&ApprovalComment> for CommentDto {
    fn from(c: &ApprovalComment) -> Self {
        Self {
            id: c.id,
            approval_id: c.approval_id,
            author: c.author.clone(),
            body: c.body.clone(),
            created_at: c.created_at,
        }
    }
}

/// A page of comments, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommentList {
    /// The comments.
    pub items: Vec<CommentDto>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// The body of `POST /approvals/{id}/comments`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewCommentDto {
    /// What to say (1 to 4,000 characters).
    pub body: String,
}

/// The body of `POST /approvals/decide`: one decision applied to many pending requests,
/// each under its own rules.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkDecisionDto {
    /// The requests, by id (at most 1,000). Give `ids` or `filter`, not both.
    #[serde(default)]
    pub ids: Vec<Uuid>,
    /// The pending requests that match, newest first, at most `limit` per call.
    pub filter: Option<BulkFilterDto>,
    /// With `filter`: the most requests one call takes (1 to 1,000; default 1,000).
    pub limit: Option<usize>,
    /// `approve` or `reject`.
    pub decision: String,
    /// Why (required to reject); recorded on each decision.
    pub reason: Option<String>,
    /// Report what each request would do, deciding nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Which pending requests a bulk decision takes: all of the given conditions hold (at
/// least one is needed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BulkFilterDto {
    /// Executions of this workflow (its `workflow_id`).
    pub workflow: Option<String>,
    /// Requests made by this step.
    pub step: Option<String>,
    /// Requests addressed to this approver role.
    pub role: Option<String>,
    /// Requests older than this (`"2h"`).
    pub older_than: Option<String>,
}

/// What a bulk decision did, request by request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkDecidedDto {
    /// Nothing was decided: `outcome` says what would have happened.
    pub dry_run: bool,
    /// Requests decided (or, in a dry run, that would be).
    pub decided: usize,
    /// Requests refused.
    pub refused: usize,
    /// The filter matched more pending requests than the call's `limit`: call again for
    /// the rest.
    pub more: bool,
    /// One per request, in the order taken.
    pub items: Vec<BulkItemDto>,
}

/// One request's outcome in a bulk decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BulkItemDto {
    /// The request.
    pub approval_id: Uuid,
    /// `decided` (or `would_decide` in a dry run) or `refused`.
    pub outcome: String,
    /// The request's status after the decision (before it, in a dry run or a refusal).
    pub status: Option<String>,
    /// Why it was refused: the code and message the single decision would get.
    pub error: Option<ErrorBody>,
}

/// The body of `POST /approvals/{id}/links`: whom to make signed decision links for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewLinksDto {
    /// One link each. Empty or absent: one for each user the request names and one for
    /// each of its approver roles.
    #[serde(default)]
    pub recipients: Vec<LinkRecipientDto>,
    /// How long the links work (`"24h"`), never past the request's deadline. Default:
    /// until the deadline, or the server's `--link-lifetime` for a request without one.
    pub expires_in: Option<String>,
}

/// One recipient of a decision link: a user the request names, or one of its approver
/// roles (optionally with the address the link goes to).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LinkRecipientDto {
    /// A user the request names; the link decides as this user.
    pub user: Option<String>,
    /// An approver role of the request; the link decides as `address` holding the role.
    pub role: Option<String>,
    /// For a role: where the link is sent (a mailing list, a chat channel), recorded as
    /// the decider. Default `role:<role>`.
    pub address: Option<String>,
}

/// A signed decision link.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionLinkDto {
    /// Who decides through it (recorded as the decision's `decided_by`).
    pub subject: String,
    /// The approver role it grants, for a role's link.
    pub role: Option<String>,
    /// The link: `GET` shows the decision page, which decides nothing until submitted.
    pub url: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
}

/// The links made by `POST /approvals/{id}/links`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DecisionLinksDto {
    /// One per recipient, in the order asked.
    pub links: Vec<DecisionLinkDto>,
}

impl DecisionBody {
    /// A decision with a reason (required to reject) and no data.
    pub fn because(reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            data: Value::Null,
            on_behalf_of: None,
        }
    }
}

/// `POST /workflows/validate` response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidationDto {
    /// No errors.
    pub valid: bool,
    /// Errors with paths.
    pub errors: Vec<Detail>,
    /// Warnings with paths.
    pub warnings: Vec<Detail>,
}

/// `/health/live` and `/health/ready`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthDto {
    /// `ok` or `ready`.
    pub status: String,
    /// `ok` (readiness only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Gated executions past their deadline that no worker has claimed (readiness only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overdue_gates: Option<u64>,
    /// Set when the oldest of them is older than `--ready-overdue-warning`: no worker
    /// loop seems to run against this database. The server still answers ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Worker loops that recorded a heartbeat in the last hour, latest first
    /// (readiness only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<Vec<WorkerDto>>,
}

/// A worker loop as its heartbeats describe it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerDto {
    /// Its worker id (`--worker-id`, or host, pid and a random suffix).
    pub worker_id: String,
    /// When the loop started.
    pub started_at: DateTime<Utc>,
    /// Its latest heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// The latest heartbeat after which it had claimed work (a due deadline, an
    /// abandoned execution, a schedule tick, an event delivery); null if never.
    pub last_claim_at: Option<DateTime<Utc>>,
    /// What it claimed since it started.
    pub claimed: u64,
}

impl From<&crate::records::WorkerBeat> for WorkerDto {
    fn from(w: &crate::records::WorkerBeat) -> Self {
        Self {
            worker_id: w.worker_id.clone(),
            started_at: w.started_at,
            last_heartbeat: w.beat_at,
            last_claim_at: w.last_claim_at,
            claimed: w.claimed,
        }
    }
}

/// An execution set aside because what was stored for it could not be read (a damaged
/// row, or a definition this release cannot compile). The execution itself is `failed`
/// with an `interrupted` error; this keeps what was stored, as it was, for repair.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuarantinedDto {
    /// The execution (`GET /api/v1/executions/{id}` shows it, `failed`).
    pub execution_id: Uuid,
    /// Why it could not be read: the column or definition and the decode error.
    pub detail: String,
    /// The stored row before quarantine, column by column.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub original: Value,
    /// When it was set aside.
    pub quarantined_at: DateTime<Utc>,
}

macro_rules! list_type {
    ($name:ident, $item:ty) => {
        /// A page of a list: `next_cursor` fetches the next one (null on the last).
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub struct $name {
            /// The items.
            pub items: Vec<$item>,
            /// Opaque cursor of the next page.
            pub next_cursor: Option<String>,
        }
    };
}

list_type!(WorkflowList, WorkflowDto);
list_type!(ExecutionList, ExecutionDto);
list_type!(QuarantinedList, QuarantinedDto);
list_type!(ApprovalList, ApprovalDto);
list_type!(ResumeRequestList, ResumeRequestDto);
list_type!(NotificationList, NotificationDto);
list_type!(ApprovalRungList, ApprovalRungDto);
list_type!(ApiKeyList, ApiKeyDto);
/// A schedule: each tick of `cron` in `timezone` starts one execution of the workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleDto {
    /// Id.
    pub id: Uuid,
    /// The workflow's uuid.
    pub workflow_id: Uuid,
    /// Cron expression: 5 fields, 6 fields (leading seconds) or a descriptor (`@hourly`).
    pub cron: String,
    /// IANA time zone the expression is read in.
    pub timezone: String,
    /// Paused schedules fire nothing (nor do schedules of disabled workflows).
    pub enabled: bool,
    /// `skip` (missed ticks collapse into one) or `all` (each fires, at most 100).
    pub catch_up: String,
    /// True for the schedule of the workflow's own `schedule` trigger: its cron and zone
    /// follow the definition.
    pub from_trigger: bool,
    /// Next tick (null when the expression never fires again).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// Last tick fired.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// Creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl From<&Schedule> for ScheduleDto {
    fn from(s: &Schedule) -> Self {
        Self {
            id: s.id,
            workflow_id: s.workflow_id,
            cron: s.cron.clone(),
            timezone: s.timezone.clone(),
            enabled: s.enabled,
            catch_up: s.catch_up.as_str().to_owned(),
            from_trigger: s.from_trigger,
            next_fire_at: s.next_fire_at,
            last_fired_at: s.last_fired_at,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// A page of schedules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleList {
    /// The schedules.
    pub items: Vec<ScheduleDto>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// `POST /workflows/{id}/schedules` and `PUT /schedules/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// Cron expression.
    pub cron: String,
    /// IANA zone (default `UTC`).
    pub timezone: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// `skip` (default) or `all`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub catch_up: Option<CatchUp>,
}

/// One tick in a schedule's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TickDto {
    /// The scheduled time.
    pub tick_time: DateTime<Utc>,
    /// `pending` (claimed, not started yet), `started` or `failed`.
    pub status: String,
    /// The execution it started.
    pub execution_id: Option<Uuid>,
    /// That execution's status now.
    pub outcome: Option<String>,
    /// When a worker claimed it.
    pub claimed_at: DateTime<Utc>,
    /// When its execution started.
    pub started_at: Option<DateTime<Utc>>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A page of ticks, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TickList {
    /// The ticks.
    pub items: Vec<TickDto>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// `GET /schedules/{id}/next`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NextFiresDto {
    /// The schedule.
    pub schedule_id: Uuid,
    /// The coming fire times, first = `next_fire_at`.
    pub next: Vec<DateTime<Utc>>,
}

// Filters of the lists (query strings). Unset fields are left out of a query.

/// Filters of `GET /workflows`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct WorkflowQuery {
    /// Only enabled (or disabled) workflows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Only versions of this string id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// Only workflows with this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Filters of `GET /approvals`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ApprovalQuery {
    /// `pending`, `approved`, `rejected`, `expired`, `cancelled` or `superseded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Addressed to this approver role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Of this execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<Uuid>,
    /// Only those the caller may decide now (pending, addressed to one of its roles or
    /// to it by name, not requested by it unless self-approval is allowed, not already
    /// approved by it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mine: bool,
    /// Of executions of this workflow (its `workflow_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_key: Option<String>,
    /// Made by this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    /// `newest` (the default: newest first) or `due` (by due time, the most overdue
    /// first, requests without a due time last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
}

/// Filters of `GET /executions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ExecutionQuery {
    /// `running`, `paused`, `waiting`, `completed`, `failed`, `cancelled` or `timed_out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The workflow: the server's uuid of one version, or the author's `workflow_id`
    /// (every version), as the definition names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<String>,
    /// The author's `workflow_id` (every version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_key: Option<String>,
    /// `approval`, `manual` or `event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    /// Executions at an approval gate addressed to this role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver_role: Option<String>,
}

/// Filters of `GET /notifications`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct NotificationQuery {
    /// Only those sent by this execution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<Uuid>,
}

/// Filters of `GET /schedules`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ScheduleQuery {
    /// Only this workflow's schedules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_id: Option<Uuid>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The moving conversion shows exactly what the copying one shows, documents
    /// included.
    #[test]
    fn an_execution_moved_into_its_view_shows_what_a_copy_shows() {
        let at = "2026-12-07T10:00:00Z";
        let e: Execution = serde_json::from_value(json!({
            "id": Uuid::nil(), "workflow_id": Uuid::nil(), "workflow_key": "orders",
            "workflow_version": "3", "snapshot_id": "s", "status": "completed", "result": "executed",
            "trigger_event": "order.created", "trigger_payload": {"amount": 12000},
            "context": {"order": {"amount": 12000}, "paid": true}, "visits": {"approve": 1},
            "steps_run": 4, "version": 7, "pause_requested": false, "resume_count": 1,
            "requested_by": "shop", "started_at": at, "updated_at": at, "completed_at": at,
            "consumed_events": [],
        }))
        .unwrap();
        let copied = serde_json::to_value(ExecutionDto::from(&e)).unwrap();
        let moved = serde_json::to_value(ExecutionDto::from(e)).unwrap();
        assert_eq!(moved, copied);
        assert_eq!(moved["context"]["paid"], true);
        assert_eq!(moved["trigger_payload"]["amount"], 12000);
        assert_eq!(moved["workflow_key"], "orders");
        assert_eq!(moved["requested_by"], "shop");
    }
}
