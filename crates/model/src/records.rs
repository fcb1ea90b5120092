//! The records Tollgate persists: workflows, executions, step records, approvals, events,
//! resume requests, notifications, records and API keys.
//!
//! Rules that every backend must apply identically (the approval quorum, who may decide)
//! live here as pure functions, so no backend can drift from another.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::definition::{ErrorClass, WorkflowDefinition};
use crate::status::{ErrorKind, ExecutionResult, ExecutionStatus, PauseReason};

/// All timestamps are UTC.
pub type Timestamp = DateTime<Utc>;

/// A stored workflow: one (`workflow_id`, `version`) with its current definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workflow {
    /// Row id (UUID v7).
    pub id: Uuid,
    /// The definition as last written. `definition.enabled` mirrors [`Self::enabled`].
    pub definition: Arc<WorkflowDefinition>,
    /// Content hash of the definition's snapshot, which new executions pin.
    pub snapshot_id: String,
    /// Whether events start it.
    pub enabled: bool,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl Workflow {
    /// The string id shared by all versions.
    pub fn workflow_id(&self) -> &str {
        &self.definition.workflow_id
    }

    /// The version label.
    pub fn version(&self) -> &str {
        &self.definition.version
    }
}

/// Hash of a definition as pinned by executions. `enabled` is left out: switching a
/// workflow on or off does not change what its executions run.
pub fn snapshot_id(definition: &WorkflowDefinition) -> String {
    if definition.enabled {
        definition.content_hash()
    } else {
        let mut copy = definition.clone();
        copy.enabled = true;
        copy.content_hash()
    }
}

/// Where an execution will continue: the step to run next and which visit of it that is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Top-level step id.
    pub step_id: String,
    /// 1-based visit number of that step in this execution (loops revisit steps).
    pub visit: u32,
    /// 1-based attempt of that visit; a retry after a backoff continues at attempt + 1,
    /// so retries survive a crash.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
}

fn first_attempt() -> u32 {
    1
}

impl Cursor {
    /// The first attempt of a visit of `step_id`.
    pub fn new(step_id: impl Into<String>, visit: u32) -> Self {
        Self {
            step_id: step_id.into(),
            visit,
            attempt: 1,
        }
    }
}

/// A worker's claim on a running execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Worker id; `None` when released (the execution is free once `expires_at` passes).
    pub owner: Option<String>,
    /// When the claim lapses and any worker may take the execution.
    pub expires_at: Timestamp,
}

/// The gate an execution is stopped at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// Approval, event (wait) or manual.
    pub reason: PauseReason,
    /// The step the execution stopped at.
    pub step_id: String,
    /// Visit of that step.
    pub visit: u32,
    /// When it stopped.
    pub paused_at: Timestamp,
    /// When the gate times out, if it does.
    pub deadline: Option<Timestamp>,
    /// For waits: the awaited event type.
    pub event: Option<String>,
    /// For waits: the match condition with templates already resolved (JSON form).
    pub event_match: Option<Value>,
    /// For approvals: the request.
    pub approval_id: Option<Uuid>,
    /// For manual pauses: the operator's reason.
    pub note: Option<String>,
    /// For waits: the correlation key of its `match`, when the match has equality parts
    /// on event fields (an incoming event finds the wait by this key instead of being
    /// checked against every wait of its type). Absent on gates stored by releases
    /// before keys existed: such a wait is checked against every event of its type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Box<Correlation>>,
    /// For `first_of` steps (present, possibly empty, on those only): the event gates,
    /// each with its own type, match and key. The step's approval is `approval_id` and
    /// its `after` gate is `deadline`; whichever fires first wins, and a pending approval
    /// is closed `superseded` in the same transaction when another gate wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branches: Option<Vec<GateBranch>>,
}

impl Gate {
    /// Whether this is a `first_of` step's gate.
    pub fn is_first_of(&self) -> bool {
        self.branches.is_some()
    }

    /// Whether the gate waits for an event of `event_type`: a wait's event, or one of a
    /// `first_of` step's event gates.
    pub fn awaits(&self, event_type: &str) -> bool {
        self.event.as_deref() == Some(event_type)
            || self
                .branches
                .as_ref()
                .is_some_and(|b| b.iter().any(|b| b.event == event_type))
    }

    /// The approval another gate's win closes as `superseded`: a `first_of` step's.
    pub fn superseded_approval(&self) -> Option<Uuid> {
        self.approval_id.filter(|_| self.is_first_of())
    }
}

/// One event gate of a `first_of` step, as entered: the type, the resolved `match` and
/// its correlation key (as [`Gate`]'s for a wait).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateBranch {
    /// The gate's position in the step's `first_of` list.
    pub index: u32,
    /// The awaited event type.
    pub event: String,
    /// The match condition with templates already resolved (JSON form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_match: Option<Value>,
    /// The correlation key of its `match`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<Box<Correlation>>,
}

/// A wait's correlation key: the equality parts of its resolved `match` that compare an
/// event field with a value, as sorted (field, value) pairs (docs/execution-semantics.md,
/// "Correlation keys"). The store indexes `(event type, shape, hash)`; the values are
/// kept so that what a key stands for can be read back, and every candidate found by
/// the key is checked against its whole `match`, so a hash collision never resumes a
/// wait the event does not satisfy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correlation {
    /// Identifies the sorted field paths (16 hex digits of their SHA-256): waits whose
    /// keys read the same event fields share a shape.
    pub shape: String,
    /// The event field paths compared, sorted (`event.order_id`).
    pub fields: Vec<String>,
    /// The canonical value each field must equal, in `fields`' order (`n:` and the
    /// number for values the numeric rule reads as numbers, else `j:` and the JSON).
    pub values: Vec<String>,
    /// 16 hex digits of the SHA-256 of the shape and the values: what is indexed.
    pub hash: String,
}

/// The signal that woke a gated execution, stored with the claim so a worker that picks
/// the execution up after a crash knows how to continue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Wake {
    /// An approval was decided or expired.
    Approval {
        /// The request.
        approval_id: Uuid,
        /// `approved`, `rejected` or `expired`.
        outcome: ApprovalStatus,
        /// Who decided last (absent on expiry).
        decided_by: Option<String>,
        /// The deciding reason.
        reason: Option<String>,
        /// The deciding data.
        data: Value,
        /// When.
        decided_at: Timestamp,
        /// Every decision on the request, in order — each voter of a quorum, not only
        /// the last. Empty for an expiry (the request keeps what was decided before).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        decisions: Vec<Decision>,
    },
    /// An awaited event arrived.
    Event {
        /// Stored event id.
        event_id: Uuid,
        /// Its type.
        event_type: String,
        /// Its payload.
        payload: Value,
    },
    /// A wait's deadline passed.
    WaitTimeout {
        /// When it was noticed.
        at: Timestamp,
    },
    /// An operator resumed a manual pause.
    Manual {
        /// Data to merge into the context.
        data: Value,
        /// Who.
        actor: Option<String>,
    },
}

/// Why an execution ended without completing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionError {
    /// Category.
    pub kind: ErrorKind,
    /// Human explanation.
    pub message: String,
}

/// One run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    /// UUID v7.
    pub id: Uuid,
    /// Row id of the workflow.
    pub workflow_id: Uuid,
    /// The workflow's string id.
    pub workflow_key: String,
    /// The workflow version.
    pub workflow_version: String,
    /// The pinned definition snapshot.
    pub snapshot_id: String,
    /// Status.
    pub status: ExecutionStatus,
    /// Business result (set as allow/block actions run; final when completed).
    pub result: Option<ExecutionResult>,
    /// Event type that started it, or `manual`.
    pub trigger_event: String,
    /// The triggering payload.
    pub trigger_payload: Value,
    /// The context (docs/execution-semantics.md, "Starting"), persisted with every step commit.
    pub context: Value,
    /// Where it continues: the next step to run, or the gate it waits at. An ended
    /// execution keeps the step it was at when it ended (the failed step, the gate it
    /// timed out at, the last step run), which a retry starts from by default.
    pub cursor: Option<Cursor>,
    /// How many times each top-level step has been entered.
    pub visits: BTreeMap<String, u32>,
    /// Steps run so far (for `max_steps`).
    pub steps_run: u32,
    /// Optimistic-lock version; every change increments it.
    pub version: i64,
    /// The claim of the worker advancing it (running only).
    pub lease: Option<Lease>,
    /// The gate it is stopped at (paused/waiting only).
    pub gate: Option<Gate>,
    /// The signal that woke it, until the engine has acted on it.
    pub wake: Option<Wake>,
    /// An operator asked for a pause at the next step boundary.
    pub pause_requested: bool,
    /// Workflow-level deadline.
    pub deadline: Option<Timestamp>,
    /// Times it was resumed from a gate.
    pub resume_count: u32,
    /// Last resume.
    pub last_resumed_at: Option<Timestamp>,
    /// Start time.
    pub started_at: Timestamp,
    /// End time (terminal statuses).
    pub completed_at: Option<Timestamp>,
    /// Last change.
    pub updated_at: Timestamp,
    /// Why it failed / timed out / was cancelled.
    pub error: Option<ExecutionError>,
    /// Subject of the key that sent the triggering event or manual execute.
    pub requested_by: Option<String>,
    /// Events already consumed by its waits (an early event serves one wait only).
    pub consumed_events: Vec<Uuid>,
}

impl Execution {
    /// Milliseconds from start to end, for ended executions.
    pub fn duration_ms(&self) -> Option<i64> {
        self.completed_at
            .map(|end| (end - self.started_at).num_milliseconds())
    }

    /// `running` and leased to a worker: whoever holds the lease advances it (a claim
    /// that just stored it, a run ahead that stopped before a step needing the row).
    pub fn is_held(&self) -> bool {
        self.status == ExecutionStatus::Running
            && self.lease.as_ref().is_some_and(|l| l.owner.is_some())
    }
}

/// Status of one step attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Recorded before acting; found so after a crash, it is attempted again.
    Running,
    /// Done.
    Completed,
    /// Failed (possibly retried or routed by `on_error`).
    Failed,
    /// Stopped at an approval or manual gate.
    Paused,
    /// Stopped at a wait gate.
    Waiting,
    /// Not run (e.g. the rest of a foreach iteration after a false condition).
    Skipped,
}

impl StepStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Paused => "paused",
            Self::Waiting => "waiting",
            Self::Skipped => "skipped",
        }
    }
}

/// A failed step attempt's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// Class, for `retry_on`.
    pub class: ErrorClass,
    /// Explanation.
    pub message: String,
}

/// One attempt of one visit of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// UUID v7 (orders records by creation).
    pub id: Uuid,
    /// The execution.
    pub execution_id: Uuid,
    /// The step.
    pub step_id: String,
    /// `condition`, `action`, …
    pub step_type: String,
    /// For children of parallel/foreach: the parent step id.
    pub parent_step_id: Option<String>,
    /// For children of foreach: the item index.
    pub iteration: Option<u32>,
    /// Visit number of the (top-level) step.
    pub visit: u32,
    /// 1-based attempt number.
    pub attempt: u32,
    /// Status.
    pub status: StepStatus,
    /// Resolved inputs (secrets redacted).
    pub input: Value,
    /// Outputs.
    pub output: Value,
    /// Warnings (missing fields, unconfigured resources, …).
    pub warnings: Vec<String>,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub completed_at: Option<Timestamp>,
    /// Error, when failed.
    pub error: Option<StepError>,
}

impl StepRecord {
    /// Milliseconds the attempt took.
    pub fn duration_ms(&self) -> Option<i64> {
        self.completed_at
            .map(|end| (end - self.started_at).num_milliseconds())
    }
}

/// Status of an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Awaiting decisions.
    Pending,
    /// Quorum reached.
    Approved,
    /// Rejected by a decider.
    Rejected,
    /// Deadline passed.
    Expired,
    /// The execution was cancelled.
    Cancelled,
    /// Another gate of its `first_of` step fired first.
    Superseded,
}

impl ApprovalStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
        }
    }
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    /// Counts towards the quorum.
    Approve,
    /// Decides at once.
    Reject,
}

/// One person's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Subject of the deciding key.
    pub decided_by: String,
    /// Approve or reject.
    pub decision: DecisionKind,
    /// Why.
    pub reason: Option<String>,
    /// Extra data, merged into the context.
    pub data: Value,
    /// When.
    pub decided_at: Timestamp,
    /// How it reached Tollgate when not through the API or console with the decider's
    /// own key: `link` for a signed decision link (docs/notifications.md). Absent in
    /// decisions stored before channels were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The delegate who decided in `decided_by`'s place, under a delegation from
    /// `decided_by` ("by tom on behalf of maria"): the decision counts as
    /// `decided_by`'s. Absent for a decision made by `decided_by` themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate: Option<String>,
}

impl Decision {
    /// The people behind the decision: who it counts for, and the delegate who made it.
    pub fn people(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.decided_by.as_str()).chain(self.delegate.as_deref())
    }
}

/// Subject X lets subject Y decide X's approval requests for a period, all of them or
/// those of one workflow or one role (docs/approvals.md, "Delegation"). Y's decisions
/// count as X's; a delegation does not pass on (Y cannot delegate X's requests on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// Id.
    pub id: Uuid,
    /// Whose requests: X.
    pub delegator: String,
    /// X's roles when the delegation was made: Y decides with these, as X.
    pub delegator_roles: Vec<String>,
    /// Who may decide them: Y.
    pub delegate: String,
    /// Only requests of executions of this workflow (its `workflow_id`).
    pub workflow_key: Option<String>,
    /// Only requests addressed to this role.
    pub role: Option<String>,
    /// From when.
    pub starts_at: Timestamp,
    /// Until when (exclusive).
    pub ends_at: Timestamp,
    /// Why (shown with the delegate's decisions' context).
    pub reason: Option<String>,
    /// Who made it: X, or an operator.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

impl Delegation {
    /// Whether it lets its delegate decide at `now` a request addressed to roles
    /// `roles` of an execution of workflow `workflow_key`.
    pub fn covers(&self, workflow_key: &str, request: &ApprovalRequest, now: Timestamp) -> bool {
        self.revoked_at.is_none()
            && self.starts_at <= now
            && now < self.ends_at
            && self
                .workflow_key
                .as_deref()
                .is_none_or(|w| w == workflow_key)
            && self
                .role
                .as_ref()
                .is_none_or(|r| request.approver_roles.contains(r))
    }

    /// The delegator as a decider: their subject with the roles they had.
    pub fn delegator_principal(&self) -> Principal {
        Principal {
            subject: self.delegator.clone(),
            roles: self.delegator_roles.clone(),
        }
    }
}

/// An approval request's service level: how urgent it is and when it should be decided
/// by (docs/approvals.md, "Service levels"). Kept beside the request, written with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalSla {
    /// The request.
    pub approval_id: Uuid,
    /// `low`, `normal`, `high` or `urgent`.
    pub priority: String,
    /// When it should be decided by; a pending request past it is overdue.
    pub due_at: Option<Timestamp>,
}

impl ApprovalSla {
    /// The priority's rank, `urgent` highest; an unknown name ranks as `normal`.
    pub fn rank(&self) -> usize {
        crate::definition::PRIORITIES
            .iter()
            .position(|p| *p == self.priority)
            .unwrap_or(1)
    }

    /// Whether a request with this service level and `status` is overdue at `now`.
    pub fn is_overdue(&self, status: ApprovalStatus, now: Timestamp) -> bool {
        status == ApprovalStatus::Pending && self.due_at.is_some_and(|due| due <= now)
    }
}

/// Who is on an approval request: an approver who claimed it ("I'm on it"), or whom an
/// operator assigned it to. A signal to the other approvers, not a lock: anyone the
/// request addresses may still decide it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalAssignment {
    /// The request.
    pub approval_id: Uuid,
    /// Who is on it.
    pub assignee: String,
    /// Who made it so: the assignee for a claim, the operator for an assignment.
    pub assigned_by: String,
    /// When.
    pub assigned_at: Timestamp,
}

impl ApprovalAssignment {
    /// Whether the assignee took it themselves rather than being given it.
    pub fn is_claim(&self) -> bool {
        self.assignee == self.assigned_by
    }
}

/// A comment on an approval request: a question or a note, deciding nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalComment {
    /// UUID v7: comments list in the order they were made.
    pub id: Uuid,
    /// The request.
    pub approval_id: Uuid,
    /// Subject of the commenting key.
    pub author: String,
    /// What was said.
    pub body: String,
    /// When.
    pub created_at: Timestamp,
}

/// A request for approval created by an approval gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// UUID v7.
    pub id: Uuid,
    /// The gated execution.
    pub execution_id: Uuid,
    /// The gate step.
    pub step_id: String,
    /// The gate step's visit.
    pub visit: u32,
    /// Entity type (`order`).
    pub entity_type: Option<String>,
    /// Entity id.
    pub entity_id: Option<String>,
    /// Roles whose holders may decide.
    pub approver_roles: Vec<String>,
    /// Subjects who may decide.
    pub approver_users: Vec<String>,
    /// Distinct approvals needed.
    pub required: u32,
    /// Status.
    pub status: ApprovalStatus,
    /// Why approval is needed (rendered).
    pub reason: Option<String>,
    /// Information for the approvers (rendered).
    pub data: Value,
    /// Decisions so far, in order.
    pub decisions: Vec<Decision>,
    /// Subject that triggered the execution.
    pub requested_by: Option<String>,
    /// Whether the requester may decide.
    pub allow_self_approval: bool,
    /// Creation.
    pub requested_at: Timestamp,
    /// Deadline.
    pub expires_at: Option<Timestamp>,
    /// When it left `pending`.
    pub decided_at: Option<Timestamp>,
}

/// What a caller may do beyond reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Create, change, delete, enable and disable workflows.
    WriteWorkflows,
    /// Start a workflow by hand.
    Execute,
    /// Send events (and deliver them to one execution).
    SendEvents,
    /// Pause, resume and cancel executions.
    ControlExecutions,
    /// Manage API keys.
    ManageKeys,
    /// Make signed decision links for approval requests (whoever holds one decides as
    /// its subject, so this is an operator's power, not an approver's).
    MakeLinks,
    /// Assign approval requests to an approver, and release anyone's claim.
    AssignApprovals,
    /// Make, list and revoke delegations for other subjects.
    ManageDelegations,
}

impl Permission {
    /// Whether `role` grants it.
    pub fn granted_to(self, role: &str) -> bool {
        match role {
            "admin" => true,
            "operator" => self != Self::ManageKeys,
            "service" => self == Self::SendEvents,
            _ => false,
        }
    }

    /// What it allows and which roles grant it, for refusals.
    pub fn describe(self) -> &'static str {
        match self {
            Self::WriteWorkflows => "change workflows (roles: operator, admin)",
            Self::Execute => "execute workflows (roles: operator, admin)",
            Self::SendEvents => "send events (roles: service, operator, admin)",
            Self::ControlExecutions => {
                "pause, resume or cancel executions (roles: operator, admin)"
            }
            Self::ManageKeys => "manage API keys (role: admin)",
            Self::MakeLinks => "make decision links (roles: operator, admin)",
            Self::AssignApprovals => {
                "assign approval requests or release another's claim (roles: operator, admin)"
            }
            Self::ManageDelegations => {
                "manage other subjects' delegations (roles: operator, admin)"
            }
        }
    }
}

/// Who is calling: the subject and roles of an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The key's name.
    pub subject: String,
    /// Its roles.
    pub roles: Vec<String>,
}

impl Principal {
    /// The built-in administrator role.
    pub const ADMIN: &'static str = "admin";

    /// Whether one of its roles grants `permission`.
    pub fn may(&self, permission: Permission) -> bool {
        self.roles.iter().any(|r| permission.granted_to(r))
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the principal is an administrator.
    pub fn is_admin(&self) -> bool {
        self.has_role(Self::ADMIN)
    }
}

/// Why a decision is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionRefusal {
    /// The caller is not an approver of this request (→ 403).
    #[error("{subject} may not decide this approval: it is addressed to {addressed}")]
    NotAnApprover {
        /// Caller.
        subject: String,
        /// Who may decide.
        addressed: String,
    },
    /// The caller requested it and self-approval is off (→ 403).
    #[error("{0} requested this approval and may not decide it")]
    SelfApproval(String),
    /// Already approved, rejected, expired or cancelled (→ 409), and by whom when a
    /// decision settled it.
    #[error("the approval is already {}{}", .status.as_str(), .by.as_deref().map(|by| format!(" by {by}")).unwrap_or_default())]
    NotPending {
        /// Its status.
        status: ApprovalStatus,
        /// Who decided it last (none when its deadline or a cancellation settled it).
        by: Option<String>,
    },
    /// This caller already approved (→ 409).
    #[error("{0} has already approved this request")]
    AlreadyDecided(String),
    /// The request's deadline passed: the deadline decides it, not a late decision
    /// (→ 409), even before the worker has expired it.
    #[error("approval {approval_id} expired at {}: its deadline decides it, not this decision", .deadline.to_rfc3339())]
    Expired {
        /// The request.
        approval_id: Uuid,
        /// Its deadline.
        deadline: Timestamp,
    },
    /// The decision would settle the request, but its execution no longer waits at this
    /// gate (cancelled, timed out, resumed by an operator) (→ 409).
    #[error("execution {execution_id} is {status} and no longer waits for approval {approval_id}")]
    NotAtGate {
        /// The execution.
        execution_id: Uuid,
        /// Its status now.
        status: ExecutionStatus,
        /// The request.
        approval_id: Uuid,
    },
}

impl DecisionRefusal {
    /// Whether the refusal is about the caller's rights (403) rather than the request's
    /// state (409).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::NotAnApprover { .. } | Self::SelfApproval(_))
    }
}

impl ApprovalRequest {
    /// Who may decide (docs/execution-semantics.md, "Gates"): an administrator, a listed user or a holder of an
    /// approver role — and, unless self-approval is allowed, not the requester.
    pub fn authorize(&self, principal: &Principal) -> Result<(), DecisionRefusal> {
        let addressed = principal.is_admin()
            || self.approver_users.contains(&principal.subject)
            || self.approver_roles.iter().any(|r| principal.has_role(r));
        if !addressed {
            return Err(self.not_an_approver(principal));
        }
        if !self.allow_self_approval
            && self.requested_by.as_deref() == Some(principal.subject.as_str())
        {
            return Err(DecisionRefusal::SelfApproval(principal.subject.clone()));
        }
        Ok(())
    }

    /// Whether every named user must approve: a request addressed to users only whose
    /// quorum is all of them (`required: "all"`, or a count equal to the number of
    /// users). Then only those users' approvals count — an administrator who is not
    /// named may reject it but cannot approve in their stead.
    pub fn needs_every_user(&self) -> bool {
        self.approver_roles.is_empty()
            && !self.approver_users.is_empty()
            && self.required as usize
                >= self
                    .approver_users
                    .iter()
                    .collect::<std::collections::HashSet<_>>()
                    .len()
    }

    fn not_an_approver(&self, principal: &Principal) -> DecisionRefusal {
        let mut who: Vec<String> = self
            .approver_roles
            .iter()
            .map(|r| format!("role {r}"))
            .collect();
        who.extend(self.approver_users.iter().map(|u| format!("user {u}")));
        DecisionRefusal::NotAnApprover {
            subject: principal.subject.clone(),
            addressed: who.join(", "),
        }
    }

    /// [`Self::authorize`] for an approval: also refuses an administrator who is not
    /// named on a request that needs every named user ([`Self::needs_every_user`]).
    pub fn authorize_approval(&self, principal: &Principal) -> Result<(), DecisionRefusal> {
        self.authorize(principal)?;
        if self.needs_every_user() && !self.approver_users.contains(&principal.subject) {
            return Err(DecisionRefusal::NotAnApprover {
                subject: principal.subject.clone(),
                addressed: format!(
                    "each of the named users ({}), whose approvals an administrator cannot stand in for",
                    self.approver_users.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// Applies a decision to a pending request and returns the new status: `rejected` on
    /// any rejection, `approved` once `required` distinct subjects approved, else
    /// `pending`. Refuses decisions on a request that is no longer pending and a second
    /// approval by the same subject.
    pub fn apply(&mut self, decision: Decision) -> Result<ApprovalStatus, DecisionRefusal> {
        if self.status != ApprovalStatus::Pending {
            let by = match self.status {
                ApprovalStatus::Approved | ApprovalStatus::Rejected => {
                    self.decisions.last().map(|d| d.decided_by.clone())
                }
                _ => None,
            };
            return Err(DecisionRefusal::NotPending {
                status: self.status,
                by,
            });
        }
        // One vote per person: whoever a decision counts for and whoever made it (a
        // delegate) may not appear in another, so a delegate cannot vote twice (as
        // themselves and for someone else) and a delegator cannot re-vote.
        if let Some(person) = decision
            .people()
            .find(|p| self.decisions.iter().any(|d| d.people().any(|q| q == *p)))
        {
            return Err(DecisionRefusal::AlreadyDecided(person.to_owned()));
        }
        let at = decision.decided_at;
        let kind = decision.decision;
        self.decisions.push(decision);
        let approvals = self
            .decisions
            .iter()
            .filter(|d| d.decision == DecisionKind::Approve)
            .count();
        self.status = match kind {
            DecisionKind::Reject => ApprovalStatus::Rejected,
            DecisionKind::Approve if approvals >= self.quorum() => ApprovalStatus::Approved,
            DecisionKind::Approve => ApprovalStatus::Pending,
        };
        if self.status != ApprovalStatus::Pending {
            self.decided_at = Some(at);
        }
        Ok(self.status)
    }

    /// Distinct approvals that settle the request: `required`, but never more than the
    /// distinct users it names when it is addressed to users only (a quorum no one can
    /// reach would hold the execution forever).
    pub fn quorum(&self) -> usize {
        if self.approver_roles.is_empty() && !self.approver_users.is_empty() {
            let distinct = self
                .approver_users
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len();
            (self.required as usize).min(distinct)
        } else {
            self.required as usize
        }
    }

    /// Approvals counted so far.
    pub fn approvals(&self) -> usize {
        self.decisions
            .iter()
            .filter(|d| d.decision == DecisionKind::Approve)
            .count()
    }
}

/// An incoming event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Stored id (UUID v7).
    pub id: Uuid,
    /// Sender's idempotency id, unique when given.
    pub event_id: Option<String>,
    /// Type, e.g. `order.created`.
    pub event_type: String,
    /// Payload.
    pub payload: Value,
    /// Sending system.
    pub source: Option<String>,
    /// Execution the event is addressed to.
    pub correlation_id: Option<Uuid>,
    /// Subject of the key that sent it.
    pub submitted_by: Option<String>,
    /// Arrival.
    pub received_at: Timestamp,
    /// Executions it started.
    pub started: Vec<Uuid>,
    /// Executions it resumed.
    pub resumed: Vec<Uuid>,
}

/// What tried to resume an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeTrigger {
    /// An approval decision.
    Approval,
    /// An event.
    Event,
    /// An operator.
    Manual,
    /// A deadline.
    Timer,
}

/// How a resume attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeOutcome {
    /// The execution was claimed and continues.
    Resumed,
    /// Refused (not authorised, wrong state, lost race).
    Refused,
    /// Accepted but the continuation failed.
    Failed,
}

/// Audit row of one resume attempt (docs/execution-semantics.md, "Statuses and the audit").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// UUID v7.
    pub id: Uuid,
    /// The execution.
    pub execution_id: Uuid,
    /// What tried.
    pub trigger: ResumeTrigger,
    /// Who (subject), if a person or service.
    pub actor: Option<String>,
    /// Decision/event/command data.
    pub data: Value,
    /// When it was asked.
    pub requested_at: Timestamp,
    /// When it took effect.
    pub executed_at: Option<Timestamp>,
    /// Outcome.
    pub outcome: ResumeOutcome,
    /// Why it was refused or failed.
    pub error: Option<String>,
}

/// An operator's retry of a `failed` or `timed_out` execution, as the store applies it
/// (docs/operations.md, "Retrying a failed execution"): everything the engine decided
/// beforehand — where it starts again, with which context and deadline — so that the
/// store's change is one atomic step that can be refused as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    /// The execution's version the retry was planned against; another change since
    /// (a second retry, say) makes the store refuse it.
    pub expected_version: i64,
    /// Where it continues: the chosen step's next visit, first attempt, so side effects
    /// get new idempotency keys.
    pub cursor: Cursor,
    /// Its context from then on.
    pub context: Value,
    /// What the retry replaced in the context (rewinding it, adding its marker), stored
    /// on the execution's undo trail so that a later retry can rewind across this one.
    #[serde(default)]
    pub undo: Vec<crate::undo::ContextUndo>,
    /// Its new workflow deadline, if the workflow has one.
    pub deadline: Option<Timestamp>,
    /// What the audit row (`manual` trigger) records: command, step, reason, origin.
    pub audit: Value,
}

/// An operator's move of a paused or waiting execution to another version of its
/// workflow (docs/operations.md, "Migrating paused executions"), as the store applies it:
/// planned and checked beforehand, applied as one compare-and-set. The gate (its pending
/// approval or wait, with its id, decisions and deadline) carries over unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// The execution's version the plan was made against.
    pub expected_version: i64,
    /// The target workflow row.
    pub workflow_id: Uuid,
    /// The target version label.
    pub workflow_version: String,
    /// The target definition snapshot, which the execution runs from now on.
    pub snapshot_id: String,
    /// The gate's step id in the target definition (the same id unless mapped).
    pub gate_step: String,
    /// What the audit row (`manual` trigger) records.
    pub audit: Value,
}

/// A notification sent by a `notify` sub-action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// UUID v7, so that notifications list in creation order. A notification is stored
    /// with its step's commit, once however often the step runs; what identifies it
    /// across re-runs is the delivery's idempotency key
    /// (`<execution>:<step>:<visit>:notify[:<position>]`), derived from the step visit.
    pub id: Uuid,
    /// The execution.
    pub execution_id: Uuid,
    /// The step.
    pub step_id: String,
    /// Rendered recipients.
    pub recipients: Vec<String>,
    /// Rendered message.
    pub message: String,
    /// Channel (`email`, `slack`, `teams`, `webhook`, or `recorded` for one that is
    /// only recorded).
    pub channel: String,
    /// `queued` (in the outbox), `sent`, `failed` (gave up after its attempts),
    /// `dropped` (its approval was decided before it went out) or `recorded` (no
    /// channel: logged, not sent).
    pub status: String,
    /// When.
    pub created_at: Timestamp,
    /// What it is about: `notify` (a `notify` sub-action), `approval` (a request
    /// waits), `reminder` or `escalation` (a rung of the request's ladder).
    #[serde(default = "notify_kind")]
    pub kind: String,
    /// The approval request it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<Uuid>,
    /// The subject line (rendered); the channel's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The named approver its decision link decides as (rendered), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_user: Option<String>,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the next attempt is due (`queued` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    /// When a receiver accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Timestamp>,
}

fn notify_kind() -> String {
    "notify".to_owned()
}

impl Notification {
    /// A notification about to be queued: `queued`, due at `created_at`, no attempts.
    pub fn queued(
        execution_id: Uuid,
        step_id: impl Into<String>,
        kind: &str,
        channel: impl Into<String>,
        created_at: Timestamp,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            execution_id,
            step_id: step_id.into(),
            recipients: Vec::new(),
            message: String::new(),
            channel: channel.into(),
            status: "queued".into(),
            created_at,
            kind: kind.to_owned(),
            approval_id: None,
            subject: None,
            link_user: None,
            attempts: 0,
            last_error: None,
            next_attempt_at: Some(created_at),
            sent_at: None,
        }
    }
}

/// One rung of an approval request's ladder (docs/notifications.md, "Reminders and
/// escalation"): fired once, by whichever worker claims it first once it is due, and
/// kept as the audit of what happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRung {
    /// The request.
    pub approval_id: Uuid,
    /// Its execution.
    pub execution_id: Uuid,
    /// Place in the ladder (reminders first, then escalations, each in order).
    pub position: u32,
    /// `reminder` or `escalation`.
    pub kind: String,
    /// When it fires.
    pub due_at: Timestamp,
    /// Roles an escalation adds to the request's approvers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_roles: Vec<String>,
    /// Users an escalation adds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_users: Vec<String>,
    /// The messages it queues when it fires (rendered when the request was made; each
    /// gets its id when queued).
    pub notify: Vec<Notification>,
    /// When it fired (or was skipped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<Timestamp>,
    /// `fired`, or `skipped` when the request was no longer pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// A record written by `create_record`/`update_record`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Entity type.
    pub entity: String,
    /// Entity id.
    pub entity_id: String,
    /// Data.
    pub data: Value,
    /// Starts at 1, +1 per write.
    pub version: i64,
    /// Last write.
    pub updated_at: Timestamp,
}

/// A web-console session, stored server-side: the cookie holds only an opaque id, whose
/// hash is the key here; the session remembers which API key signed in (its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSession {
    /// SHA-256 of the session id in the cookie.
    pub id_hash: String,
    /// Hash of the API key that signed in.
    pub key_hash: String,
    /// The token every form of the session carries.
    pub csrf: String,
    /// Sign-in time.
    pub created_at: Timestamp,
    /// After this the session is gone.
    pub expires_at: Timestamp,
}

/// A worker loop's last heartbeat: which loops run against the database, and when each
/// last claimed work — what an operator needs to tell "nothing is due" from "nobody is
/// looking".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerBeat {
    /// The loop's worker id (`host:pid` unless configured).
    pub worker_id: String,
    /// When the loop started.
    pub started_at: Timestamp,
    /// Its latest heartbeat.
    pub beat_at: Timestamp,
    /// The latest heartbeat after which it had claimed something (a due gate, a lease,
    /// a schedule tick or an event delivery), if any.
    pub last_claim_at: Option<Timestamp>,
    /// Executions and ticks it claimed since it started.
    pub claimed: u64,
}

/// A stored API key (only its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// UUID v7.
    pub id: Uuid,
    /// Unique name: the subject of requests made with it.
    pub name: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Hex SHA-256 of the secret.
    pub key_hash: String,
    /// Creation.
    pub created_at: Timestamp,
}

impl ApiKey {
    /// The principal requests made with this key act as.
    pub fn principal(&self) -> Principal {
        Principal {
            subject: self.name.clone(),
            roles: self.roles.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(required: u32) -> ApprovalRequest {
        ApprovalRequest {
            id: Uuid::nil(),
            execution_id: Uuid::nil(),
            step_id: "approve".into(),
            visit: 1,
            entity_type: None,
            entity_id: None,
            approver_roles: vec!["sales_manager".into()],
            approver_users: vec!["carol".into()],
            required,
            status: ApprovalStatus::Pending,
            reason: None,
            data: Value::Null,
            decisions: Vec::new(),
            requested_by: Some("shop".into()),
            allow_self_approval: false,
            requested_at: Timestamp::default(),
            expires_at: None,
            decided_at: None,
        }
    }

    fn every_user(users: &[&str]) -> ApprovalRequest {
        ApprovalRequest {
            approver_roles: Vec::new(),
            approver_users: users.iter().map(|u| (*u).to_owned()).collect(),
            required: 2,
            ..request(2)
        }
    }

    /// `required: "all"`: only the named users' approvals count. An administrator may
    /// reject, but cannot approve in a named user's place.
    #[test]
    fn an_admin_cannot_stand_in_for_a_named_user_when_all_must_approve() {
        let r = every_user(&["ana", "bo"]);
        assert!(r.needs_every_user());
        let root = principal("root", &["admin"]);
        assert!(matches!(
            r.authorize_approval(&root),
            Err(DecisionRefusal::NotAnApprover { .. })
        ));
        assert!(r.authorize(&root).is_ok(), "may still reject");
        assert!(r.authorize_approval(&principal("ana", &[])).is_ok());
        // A count below the number of users lets an administrator's approval count.
        let two_of_three = ApprovalRequest {
            approver_users: vec!["ana".into(), "bo".into(), "cy".into()],
            ..every_user(&[])
        };
        assert!(!two_of_three.needs_every_user());
        assert!(two_of_three.authorize_approval(&root).is_ok());
        // A role-addressed request is not affected.
        assert!(!request(2).needs_every_user());
    }

    /// A request stored with duplicate users (before validation refused them) settles
    /// once every distinct user approved, instead of waiting for a quorum no one can
    /// reach.
    #[test]
    fn quorum_never_exceeds_the_distinct_users() {
        let mut r = ApprovalRequest {
            required: 3,
            ..every_user(&["ana", "bo", "ana"])
        };
        assert_eq!(r.quorum(), 2);
        assert_eq!(
            r.apply(decision("ana", DecisionKind::Approve)),
            Ok(ApprovalStatus::Pending)
        );
        assert_eq!(
            r.apply(decision("bo", DecisionKind::Approve)),
            Ok(ApprovalStatus::Approved)
        );
    }

    fn decision(who: &str, kind: DecisionKind) -> Decision {
        Decision {
            decided_by: who.into(),
            decision: kind,
            reason: None,
            data: Value::Null,
            decided_at: Timestamp::default(),
            channel: None,
            delegate: None,
        }
    }

    fn principal(subject: &str, roles: &[&str]) -> Principal {
        Principal {
            subject: subject.into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn quorum_needs_distinct_approvers() {
        let mut r = request(2);
        assert_eq!(
            r.apply(decision("a", DecisionKind::Approve)),
            Ok(ApprovalStatus::Pending)
        );
        assert_eq!(
            r.apply(decision("a", DecisionKind::Approve)),
            Err(DecisionRefusal::AlreadyDecided("a".into()))
        );
        assert_eq!(
            r.apply(decision("b", DecisionKind::Approve)),
            Ok(ApprovalStatus::Approved)
        );
        assert!(r.decided_at.is_some());
        assert_eq!(
            r.apply(decision("c", DecisionKind::Approve)),
            Err(DecisionRefusal::NotPending {
                status: ApprovalStatus::Approved,
                by: Some("b".into())
            })
        );
    }

    #[test]
    fn one_rejection_decides() {
        let mut r = request(3);
        r.apply(decision("a", DecisionKind::Approve)).unwrap();
        assert_eq!(
            r.apply(decision("b", DecisionKind::Reject)),
            Ok(ApprovalStatus::Rejected)
        );
        assert_eq!(
            r.apply(decision("c", DecisionKind::Reject)),
            Err(DecisionRefusal::NotPending {
                status: ApprovalStatus::Rejected,
                by: Some("b".into())
            })
        );
    }

    #[test]
    fn authorisation_follows_roles_users_admin_and_self_rule() {
        let mut r = request(1);
        assert!(r.authorize(&principal("m", &["sales_manager"])).is_ok());
        assert!(r.authorize(&principal("carol", &["viewer"])).is_ok());
        assert!(r.authorize(&principal("root", &["admin"])).is_ok());
        let refused = r
            .authorize(&principal("x", &["fraud_analyst"]))
            .unwrap_err();
        assert!(refused.is_forbidden());
        assert_eq!(
            r.authorize(&principal("shop", &["admin"])),
            Err(DecisionRefusal::SelfApproval("shop".into()))
        );
        r.allow_self_approval = true;
        assert!(r.authorize(&principal("shop", &["admin"])).is_ok());
    }

    #[test]
    fn one_vote_per_person_whether_for_themselves_or_as_a_delegate() {
        let by = |who: &str, delegate: Option<&str>| Decision {
            delegate: delegate.map(str::to_owned),
            ..decision(who, DecisionKind::Approve)
        };
        // tom votes for maria; then neither tom nor maria may vote again.
        let mut r = request(3);
        assert_eq!(
            r.apply(by("maria", Some("tom"))),
            Ok(ApprovalStatus::Pending)
        );
        assert_eq!(
            r.apply(by("tom", None)),
            Err(DecisionRefusal::AlreadyDecided("tom".into()))
        );
        assert_eq!(
            r.apply(by("maria", None)),
            Err(DecisionRefusal::AlreadyDecided("maria".into()))
        );
        // Nor may tom vote for someone else too.
        assert_eq!(
            r.apply(by("ann", Some("tom"))),
            Err(DecisionRefusal::AlreadyDecided("tom".into()))
        );
        assert_eq!(r.apply(by("ann", None)), Ok(ApprovalStatus::Pending));
        assert_eq!(r.decisions.len(), 2);
    }
}
