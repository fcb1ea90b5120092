//! The workflow definition in its canonical form (docs/workflow-format.md).
//!
//! Values of these types only come out of [`crate::parse`], which accepts the canonical
//! document and the compatibility forms and reports every problem with its path. They
//! serialise to the canonical form, so `parse(serialise(d)) == d`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::condition::Condition;
use crate::duration::Duration;

/// The step budget of an execution when the definition sets none (docs/workflow-format.md).
pub const DEFAULT_MAX_STEPS: u32 = 1000;

/// A whole workflow: what starts it and the graph of steps it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowDefinition {
    /// Stable string id shared by every version (`high_value_order`).
    pub workflow_id: String,
    /// Version label; (`workflow_id`, `version`) is unique.
    pub version: String,
    /// Human name.
    pub name: String,
    /// Free text for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Disabled workflows are not started by events.
    pub enabled: bool,
    /// Labels for filtering.
    pub tags: Vec<String>,
    /// What starts an execution.
    pub trigger: Trigger,
    /// Resources loaded into the context before the first step.
    pub context: ContextSpec,
    /// Whole-execution deadline, counted from the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Step budget per execution (revision loops are bounded by it); default 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// How long its ended executions are kept before the worker loop deletes them
    /// (overrides the server's `--retention`; docs/operations.md, "History retention").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
    /// Opaque data kept for the author's tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The trigger payload's shape, as a JSON Schema: validation checks every path the
    /// steps read against it (docs/workflow-format.md, "Declared input").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    /// A missing path fails the step (before it acts) instead of rendering empty, and an
    /// undeclared path is a validation error instead of a warning.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strict_paths: bool,
    /// The steps; execution starts at the first.
    pub steps: Vec<Step>,
}

impl WorkflowDefinition {
    /// The effective step budget.
    pub fn max_steps(&self) -> u32 {
        self.max_steps.unwrap_or(DEFAULT_MAX_STEPS)
    }

    /// The top-level step with this id (children of parallel/foreach are not searched).
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// The canonical JSON document.
    pub fn to_json(&self) -> Value {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// A content hash of the canonical form: identical definitions share one snapshot.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&bytes);
        digest.iter().fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write;
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// What starts executions of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    /// An incoming event whose type matches `event` (exact, or a trailing `*` / `.*` glob).
    Event {
        /// The pattern, e.g. `order.checkout.*`.
        event: String,
    },
    /// Only `POST /workflows/{id}/execute`.
    Manual,
    /// A cron schedule.
    Schedule {
        /// 5- or 6-field cron expression, or a descriptor such as `@hourly`.
        cron: String,
        /// IANA time zone the expression is read in; UTC when absent.
        #[serde(skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
    },
}

impl Trigger {
    /// Whether an event of type `event_type` starts this workflow.
    pub fn matches_event(&self, event_type: &str) -> bool {
        match self {
            Self::Event { event } => event_pattern_matches(event, event_type),
            Self::Manual | Self::Schedule { .. } => false,
        }
    }
}

/// Matches an event type against a trigger pattern: exact, `*` (everything), or a prefix
/// ending in `*` (`order.checkout.*` matches `order.checkout.initiated` and deeper types).
pub fn event_pattern_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            prefix.is_empty() || (event_type.len() > prefix.len() && event_type.starts_with(prefix))
        }
        None => pattern == event_type,
    }
}

/// Resources to load into the context (docs/execution-semantics.md, "Starting").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ContextSpec {
    /// Dotted resource names (`customer.profile`), each placed at that path.
    pub load: Vec<String>,
}

/// One node of the workflow graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// Unique id (`[A-Za-z0-9_.-]+`).
    pub id: String,
    /// Human name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free text for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The step type with its type-specific fields and successors.
    #[serde(flatten)]
    pub kind: StepKind,
    /// How failed attempts are retried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Per-attempt time limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Step to continue at when this step has failed for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
    /// Opaque data kept for the author's tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// The step types and their successors.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepKind {
    /// Branch on a condition.
    Condition {
        /// The test.
        condition: Condition,
        /// Successor when true.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_true: Option<String>,
        /// Successor when false.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_false: Option<String>,
    },
    /// Decide (`allow`/`block`), run sub-actions, or (compatibility) gate on an approval.
    Action {
        /// The verb and its reason.
        action: ActionSpec,
        /// Sub-actions, run whatever the verb.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        execute: Vec<SubAction>,
        /// Successor.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
        /// Successor after approval (compatibility approval form only).
        #[serde(skip_serializing_if = "Option::is_none")]
        on_approve: Option<String>,
        /// Successor after rejection or expiry (compatibility approval form only).
        #[serde(skip_serializing_if = "Option::is_none")]
        on_reject: Option<String>,
    },
    /// Run sub-actions (an action with verb `execute`).
    Execute {
        /// Sub-actions.
        execute: Vec<SubAction>,
        /// Successor.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Pause until people decide.
    Approval {
        /// Who decides, how many, until when.
        approval: ApprovalSpec,
        /// Successor after approval; absent: the execution ends `allowed`.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_approve: Option<String>,
        /// Successor after rejection; absent: the execution ends `blocked`.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_reject: Option<String>,
    },
    /// Pause until an event arrives.
    Wait {
        /// Which event, and until when.
        wait: WaitSpec,
        /// Successor.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// Pause until the first of several gates fires (an event, an approval, a
    /// deadline); the winner's successor runs and the others are closed with it.
    FirstOf {
        /// The gates, in the order a tie between them is settled.
        first_of: Vec<Branch>,
    },
    /// Run children concurrently.
    Parallel {
        /// Strategy and children.
        parallel: ParallelSpec,
        /// Successor when the strategy passed.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
        /// Successor when the strategy failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_false: Option<String>,
    },
    /// Run children once per item of a collection, in order.
    Foreach {
        /// The collection and children.
        foreach: ForeachSpec,
        /// Successor.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
}

impl StepKind {
    /// The type name as written in definitions.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Condition { .. } => "condition",
            Self::Action { .. } => "action",
            Self::Execute { .. } => "execute",
            Self::Approval { .. } => "approval",
            Self::Wait { .. } => "wait",
            Self::FirstOf { .. } => "first_of",
            Self::Parallel { .. } => "parallel",
            Self::Foreach { .. } => "foreach",
        }
    }
}

/// Which kind of gate a step is, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateKind {
    /// Approval step, or an action in the compatibility approval form.
    Approval,
    /// Wait step.
    Wait,
    /// `first_of` step: whichever of its gates fires first.
    FirstOf,
}

/// One successor edge of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge<'a> {
    /// Field name (`next`, `on_true`, …).
    pub label: &'static str,
    /// Target step id.
    pub target: &'a str,
}

impl Step {
    /// The gate this step is, if any.
    pub fn gate_kind(&self) -> Option<GateKind> {
        match &self.kind {
            StepKind::Approval { .. } => Some(GateKind::Approval),
            StepKind::Wait { .. } => Some(GateKind::Wait),
            StepKind::FirstOf { .. } => Some(GateKind::FirstOf),
            StepKind::Action { .. } if self.compat_approval().is_some() => Some(GateKind::Approval),
            _ => None,
        }
    }

    /// For an action in the compatibility approval form (docs/workflow-format.md, "Approval"), the approval it
    /// requests: from its `create_approval_request` sub-action.
    pub fn compat_approval(&self) -> Option<&ApprovalSpec> {
        let StepKind::Action { execute, .. } = &self.kind else {
            return None;
        };
        execute.iter().find_map(|sub| match &sub.kind {
            SubActionKind::CreateApprovalRequest(req) => Some(&req.approval),
            _ => None,
        })
    }

    /// Every successor edge, including `on_error` and an approval's or wait's
    /// `on_timeout` step.
    pub fn edges(&self) -> Vec<Edge<'_>> {
        let mut edges: Vec<(&'static str, Option<&str>)> = Vec::with_capacity(4);
        match &self.kind {
            StepKind::Condition {
                on_true, on_false, ..
            } => {
                edges.push(("on_true", on_true.as_deref()));
                edges.push(("on_false", on_false.as_deref()));
            }
            StepKind::Action {
                next,
                on_approve,
                on_reject,
                ..
            } => {
                edges.push(("next", next.as_deref()));
                edges.push(("on_approve", on_approve.as_deref()));
                edges.push(("on_reject", on_reject.as_deref()));
            }
            StepKind::Execute { next, .. } | StepKind::Foreach { next, .. } => {
                edges.push(("next", next.as_deref()));
            }
            StepKind::Approval {
                approval,
                on_approve,
                on_reject,
            } => {
                edges.push(("on_approve", on_approve.as_deref()));
                edges.push(("on_reject", on_reject.as_deref()));
                if let OnTimeout::Step(step) = &approval.on_timeout {
                    edges.push(("on_timeout", Some(step)));
                }
            }
            StepKind::Wait { wait, next } => {
                edges.push(("next", next.as_deref()));
                edges.push(("on_timeout", wait.on_timeout.as_deref()));
            }
            StepKind::Parallel { next, on_false, .. } => {
                edges.push(("next", next.as_deref()));
                edges.push(("on_false", on_false.as_deref()));
            }
            StepKind::FirstOf { first_of } => {
                for branch in first_of {
                    match branch {
                        Branch::Event { next, .. } => edges.push(("event", next.as_deref())),
                        Branch::Approval {
                            on_approve,
                            on_reject,
                            ..
                        } => {
                            edges.push(("on_approve", on_approve.as_deref()));
                            edges.push(("on_reject", on_reject.as_deref()));
                        }
                        Branch::After { next, .. } => edges.push(("after", next.as_deref())),
                    }
                }
            }
        }
        edges.push(("on_error", self.on_error.as_deref()));
        edges
            .into_iter()
            .filter_map(|(label, target)| target.map(|target| Edge { label, target }))
            .collect()
    }

    /// The sub-actions of an `action` or `execute` step (empty otherwise).
    pub fn sub_actions(&self) -> &[SubAction] {
        match &self.kind {
            StepKind::Action { execute, .. } | StepKind::Execute { execute, .. } => execute,
            _ => &[],
        }
    }

    /// Children of a parallel or foreach step (empty otherwise).
    pub fn children(&self) -> &[Step] {
        match &self.kind {
            StepKind::Parallel { parallel, .. } => &parallel.steps,
            StepKind::Foreach { foreach, .. } => &foreach.steps,
            _ => &[],
        }
    }

    /// Whether running this step can have effects outside the execution's own state
    /// (so it must be recorded `running` before it acts, docs/ARCHITECTURE.md, "The flow of an execution"). Entering an
    /// approval gate has none: the request is inserted in the gate's own commit.
    pub fn has_side_effects(&self) -> bool {
        match &self.kind {
            StepKind::Condition { .. } | StepKind::Wait { .. } | StepKind::FirstOf { .. } => false,
            StepKind::Action { execute, .. } | StepKind::Execute { execute, .. } => {
                !execute.is_empty()
            }
            StepKind::Approval { .. } => false,
            StepKind::Parallel { .. } | StepKind::Foreach { .. } => {
                self.children().iter().any(Step::has_side_effects)
            }
        }
    }

    /// The approval this step asks for: an approval step's, or the approval branch of a
    /// `first_of` step.
    pub fn approval_spec(&self) -> Option<&ApprovalSpec> {
        match &self.kind {
            StepKind::Approval { approval, .. } => Some(approval),
            StepKind::FirstOf { first_of } => first_of.iter().find_map(|b| match b {
                Branch::Approval { approval, .. } => Some(approval.as_ref()),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Whether entering the step queues notifications, schedules an approval ladder or
    /// stores a service level (written with its commit, so its execution must be stored
    /// first).
    pub fn queues_notifications(&self) -> bool {
        match &self.kind {
            StepKind::Approval { approval, .. } => {
                !approval.notify.is_empty()
                    || !approval.reminders.is_empty()
                    || !approval.escalate.is_empty()
                    || approval.service.is_some()
            }
            _ => false,
        }
    }
}

/// The verb of an action step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionSpec {
    /// What the action decides.
    #[serde(rename = "type")]
    pub verb: Verb,
    /// Why (a template), shown in the step output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Action verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// Sets the result to `allowed`.
    Allow,
    /// Sets the result to `blocked`.
    Block,
    /// Only runs the sub-actions.
    Execute,
    /// Compatibility: an approval gate (needs a `create_approval_request` sub-action).
    RequireApproval,
}

impl Verb {
    /// Parses a verb name.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "allow" => Self::Allow,
            "block" => Self::Block,
            "execute" => Self::Execute,
            "require_approval" => Self::RequireApproval,
            _ => return None,
        })
    }
}

/// One sub-action of an `execute` list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubAction {
    /// What it does.
    #[serde(flatten)]
    pub kind: SubActionKind,
    /// When true, a failure is recorded but does not fail the step.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
}

/// The sub-action types (docs/workflow-format.md, "Sub-actions").
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SubActionKind {
    /// An HTTP call (`webhook` and `http_request` are the same thing).
    Webhook(HttpRequest),
    /// A message to people or channels through the configured notifier.
    Notify {
        /// Recipients (templates): addresses, `role:NAME`, `slack:#channel`, …
        recipients: Vec<String>,
        /// The message (a template).
        message: String,
        /// Channel hint for the notifier.
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
    },
    /// A line in the server log and the step output.
    Log {
        /// The message (a template).
        message: String,
        /// `debug`, `info`, `warn` or `error`.
        level: LogLevel,
    },
    /// Writes values (templates) at dotted context paths.
    Set {
        /// Path → value.
        values: Map<String, Value>,
    },
    /// Inserts or replaces a record in the engine's records table.
    CreateRecord {
        /// Entity type (`purchase_order`).
        entity: String,
        /// Entity id (a template); when absent a stable id is derived from the step visit.
        #[serde(skip_serializing_if = "Option::is_none")]
        entity_id: Option<String>,
        /// The record's data (templates).
        data: Value,
    },
    /// Merges keys into an existing or new record.
    UpdateRecord {
        /// Entity type.
        entity: String,
        /// Entity id (a template).
        entity_id: String,
        /// Keys to merge (templates).
        data: Value,
    },
    /// Compatibility approval gate (docs/workflow-format.md, "Approval").
    CreateApprovalRequest(Box<CompatApproval>),
}

impl SubActionKind {
    /// The type name as written in definitions.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Notify { .. } => "notify",
            Self::Log { .. } => "log",
            Self::Set { .. } => "set",
            Self::CreateRecord { .. } => "create_record",
            Self::UpdateRecord { .. } => "update_record",
            Self::CreateApprovalRequest(_) => "create_approval_request",
        }
    }
}

/// Log levels of the `log` sub-action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Debug.
    Debug,
    /// Info (default).
    #[default]
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
}

/// An HTTP request made by `webhook`/`http_request`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpRequest {
    /// Method (a template), default `POST`.
    pub method: String,
    /// URL (a template).
    pub url: String,
    /// Headers (templates).
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, Value>,
    /// JSON body (templates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Request time limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// `create_approval_request` as written for the replaced system, with the approval it
/// means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompatApproval {
    /// Entity type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Entity id (a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    /// `approver_role`, `expires_in`, `reason`, plus anything else for the approvers.
    pub data: Map<String, Value>,
    /// The approval this maps onto.
    #[serde(skip)]
    pub approval: ApprovalSpec,
}

/// What an approval gate asks for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalSpec {
    /// Who may decide.
    pub approvers: Approvers,
    /// How many distinct approvals are needed.
    pub required: Required,
    /// Why (a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is being approved (templates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntityRef>,
    /// Decision deadline, counted from the pause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// What the deadline does.
    pub on_timeout: OnTimeout,
    /// Whether the requester may decide.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_self_approval: bool,
    /// Extra information for the approvers (templates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Who is told that the request waits, and through which channel: queued in the
    /// outbox with the gate, so a crash between the gate and the send loses nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifySpec>,
    /// When the `notify` recipients are reminded, counted from the request (ascending,
    /// before the deadline). Each fires once, and only while the request is pending.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reminders: Vec<Duration>,
    /// Escalation rungs, counted from the request (ascending, before the deadline):
    /// each adds approvers, who decide alongside the earlier ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escalate: Vec<EscalationRung>,
    /// The request's service level (`priority`, `due`), when the step gives one.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub service: Option<Box<ServiceLevelSpec>>,
    /// The decision form (`form`, `editable`, `merge_into`), when the step has one.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub decision_form: Option<Box<FormSpec>>,
}

/// What an approver fills in to approve (docs/approvals.md, "Decision forms").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FormSpec {
    /// A JSON Schema (a subset: an object of string, number, integer and boolean fields,
    /// with `enum`, `format` date or date-time, `required`, bounds and `pattern`) that
    /// an approval's `data` must satisfy before it counts.
    pub form: Value,
    /// Fields of the form the approver may change that start from the request's `data`
    /// value of the same name (e.g. the approved amount).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub editable: Vec<String>,
    /// Where an approved request's decision data is merged into the context (a path
    /// such as `order`), besides `approvals.<step>.data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge_into: Option<String>,
}

/// An approval step's service level (docs/approvals.md, "Service levels").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceLevelSpec {
    /// How urgent the request is: `low`, `normal`, `high` or `urgent`, or a template
    /// rendering to one of them. Inboxes list the more urgent first among equal due
    /// times.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// When the request should be decided by (its service level, unlike `timeout`,
    /// which decides it): a duration counted from the request (`"4h"`), or a template
    /// rendering to an RFC 3339 time (`"{{now_plus_4h}}"`, `"{{context.sla_due}}"`).
    /// A pending request past it is overdue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
}

/// The priorities an approval step may give (`priority`), least urgent first.
pub const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];

/// A message to send through a configured channel (docs/notifications.md, "Channels").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotifySpec {
    /// `email`, `slack`, `teams` or `webhook`.
    pub channel: String,
    /// The address (a template); required for `email`, otherwise the channel's own
    /// destination is used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Overrides the default subject (a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Overrides the default first paragraph (a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A named approver the message's decision link decides as (a template). Without
    /// it, a request with approver roles gets a link deciding as the address `to` (or
    /// the channel) in the first role; a request naming only users gets no link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One escalation rung of an approval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EscalationRung {
    /// Counted from the request.
    pub after: Duration,
    /// Added to the request's approvers.
    pub approvers: Approvers,
    /// Who is told.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifySpec>,
}

/// The channels a [`NotifySpec`] may name.
pub const NOTIFY_CHANNELS: [&str; 4] = ["email", "slack", "teams", "webhook"];

/// Approver roles and/or users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Approvers {
    /// Holders of any of these roles may decide.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// These subjects may decide.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

/// The approval quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    /// N distinct deciders.
    Count(u32),
    /// Every listed user.
    All,
}

impl Serialize for Required {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Count(n) => serializer.serialize_u32(*n),
            Self::All => serializer.serialize_str("all"),
        }
    }
}

/// What an expired approval does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnTimeout {
    /// Treated as a rejection (default).
    Reject,
    /// Treated as an approval.
    Approve,
    /// The execution fails with `timed_out`.
    Fail,
    /// Continue at this step.
    Step(String),
}

impl Serialize for OnTimeout {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match self {
            Self::Reject => "reject",
            Self::Approve => "approve",
            Self::Fail => "fail",
            Self::Step(step) => step,
        })
    }
}

/// The entity an approval is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntityRef {
    /// Entity type (`order`).
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Entity id (a template).
    pub id: String,
}

/// What a wait step waits for.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitSpec {
    /// Event type awaited.
    pub event: String,
    /// Filter on the event (`event.*` = its payload), templates resolved at entry.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub match_: Option<Condition>,
    /// Deadline, counted from the pause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Step to continue at on deadline; absent: the execution fails `timed_out`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
    /// How far back from entering the wait an event that arrived before it may be taken
    /// (never from before the execution started; `0s`: none). Absent: any since the
    /// execution started that event retention still keeps. Longer than the server's
    /// event retention, it keeps that event type's untaken events this long.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_events: Option<Duration>,
}

/// One gate of a `first_of` step, with where the execution goes when it fires first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Branch {
    /// An event of a type, optionally matching a condition (as a wait step's).
    Event {
        /// Event type awaited.
        event: String,
        /// Filter on the event (`event.*` = its payload), templates resolved at entry.
        #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
        match_: Option<Condition>,
        /// How far back an event that arrived before the step may be taken (as a wait's).
        #[serde(skip_serializing_if = "Option::is_none")]
        early_events: Option<Duration>,
        /// Successor; absent: the execution ends.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// An approval request (without a timeout of its own: an `after` branch is the
    /// step's deadline).
    Approval {
        /// Who decides and how many (boxed: the largest branch by far).
        approval: Box<ApprovalSpec>,
        /// Successor after approval; absent: the execution ends `allowed`.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_approve: Option<String>,
        /// Successor after rejection; absent: the execution ends `blocked`.
        #[serde(skip_serializing_if = "Option::is_none")]
        on_reject: Option<String>,
    },
    /// A deadline, counted from entering the step.
    After {
        /// How long after entering the step it fires.
        after: Duration,
        /// Successor; absent: the execution ends.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
}

impl Branch {
    /// What kind of gate the branch is: `event`, `approval` or `after`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Self::Event { .. } => "event",
            Self::Approval { .. } => "approval",
            Self::After { .. } => "after",
        }
    }
}

/// A parallel step's body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParallelSpec {
    /// How child outcomes combine.
    pub strategy: Strategy,
    /// Children, run concurrently.
    pub steps: Vec<Step>,
}

/// How the outcomes of parallel children combine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Passes only if every child passes (default).
    #[default]
    AllMustPass,
    /// Passes if at least one child passes.
    AnyCanPass,
    /// Always passes; failures are recorded.
    BestEffort,
}

/// A foreach step's body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForeachSpec {
    /// The collection: a dotted context path (`order.lines`) or a template.
    pub items: String,
    /// Name under which the current item is visible to the children.
    pub item_var: String,
    /// Children, run in order for each item.
    pub steps: Vec<Step>,
}

/// Retry policy of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts in total, including the first (≥ 1).
    pub max_attempts: u32,
    /// Growth of the wait between attempts.
    pub backoff: Backoff,
    /// Wait before the second attempt.
    pub initial_interval: Duration,
    /// Upper bound of any wait.
    pub max_interval: Duration,
    /// Error classes that are retried.
    pub retry_on: Vec<ErrorClass>,
    /// Randomise waits by up to ±20% so retries of many executions do not synchronise.
    pub jitter: bool,
}

impl RetryPolicy {
    /// Default first wait.
    pub const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
    /// Default upper bound.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(300);

    /// Whether an error of `class` should be retried by this policy.
    pub fn retries(&self, class: ErrorClass) -> bool {
        self.retry_on
            .iter()
            .any(|c| *c == ErrorClass::Any || *c == class)
    }

    /// The wait before attempt `attempt + 1`, given that `attempt` (1-based) failed,
    /// without jitter.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let initial = self.initial_interval.as_millis();
        let n = u64::from(attempt.max(1) - 1);
        let ms = match self.backoff {
            Backoff::Fixed => initial,
            Backoff::Linear => initial.saturating_mul(n + 1),
            Backoff::Exponential => {
                initial.saturating_mul(1u64.checked_shl(n.min(62) as u32).unwrap_or(u64::MAX))
            }
        };
        Duration::from_millis(ms.min(self.max_interval.as_millis()))
    }
}

/// Backoff shapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// Same wait every time.
    Fixed,
    /// initial × attempt.
    Linear,
    /// initial × 2^(attempt-1) (default).
    #[default]
    Exponential,
}

/// Classes of step failure, for `retry_on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorClass {
    /// The attempt or request ran out of time.
    #[serde(rename = "timeout")]
    Timeout,
    /// HTTP 5xx.
    #[serde(rename = "5xx")]
    Server,
    /// HTTP 4xx.
    #[serde(rename = "4xx")]
    Client,
    /// Connection-level failure.
    #[serde(rename = "network")]
    Network,
    /// Anything else (templates, records, internal): only retried by `*`.
    #[serde(rename = "error")]
    Other,
    /// Every class (only meaningful in `retry_on`).
    #[serde(rename = "*")]
    Any,
}

impl ErrorClass {
    /// Parses a `retry_on` entry.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "timeout" => Self::Timeout,
            "5xx" => Self::Server,
            "4xx" => Self::Client,
            "network" => Self::Network,
            "error" => Self::Other,
            "*" => Self::Any,
            _ => return None,
        })
    }
}

/// Orders version labels so "the highest enabled version" is well defined: dot-separated
/// parts compare numerically when both are numbers (`1.10.0` > `1.9.3`), otherwise as
/// text; a label that is a prefix of another is lower (`1.0` < `1.0.1`).
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => {
                let order = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if order != std::cmp::Ordering::Equal {
                    return order;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::compare_versions;
    use std::cmp::Ordering::{Equal, Greater, Less};

    #[test]
    fn versions_compare_by_numeric_parts() {
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Greater);
        assert_eq!(compare_versions("2", "10"), Less);
        assert_eq!(compare_versions("1.0", "1.0.1"), Less);
        assert_eq!(compare_versions("1.0.0", "1.0.0"), Equal);
        assert_eq!(compare_versions("1.0.0-beta", "1.0.0-alpha"), Greater);
    }
}
