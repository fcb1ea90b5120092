//! Arguments and results of store methods.

use std::collections::BTreeMap;

use serde_json::Value;
use tollgate_model::records::{
    ApprovalAssignment, ApprovalRequest, ApprovalRung, ApprovalSla, ApprovalStatus, Cursor, Event,
    Execution, ExecutionError, Gate, Notification, Principal, StepRecord, StepStatus, Timestamp,
};
use tollgate_model::undo::ContextUndo;
use tollgate_model::{ExecutionResult, ExecutionStatus, PauseReason};
use uuid::Uuid;

/// What opening a backend does with its schema (`--migrate`).
///
/// Migrations are additive for one release, so a binary runs on a schema one release
/// newer than itself (an old process restarting in the middle of a rolling upgrade, or
/// a rollback): migrations it does not know are never an error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SchemaPolicy {
    /// Apply this release's missing migrations (the default).
    #[default]
    Apply,
    /// Apply nothing; refuse to open a schema that lacks one of this release's
    /// migrations (run `migrate` first, once, from one process).
    Check,
    /// Neither apply nor check: the operator manages the schema.
    Skip,
}

impl SchemaPolicy {
    /// Of a database's compatibility floor (`schema_compatibility.min_reader_migration`:
    /// the highest migration a release must know to run on it; `None` before the table
    /// exists) and a release's `known` migrations: `Some((floor, highest known))` when
    /// this release is too old for the schema and must not open it. Checked in every
    /// policy: a newer release's schema that declares itself unreadable by this one is
    /// never run on.
    pub fn too_old_for(floor: Option<i64>, known: &[i64]) -> Option<(i64, i64)> {
        let knows = known.iter().copied().max().unwrap_or(0);
        floor
            .filter(|&needs| needs > knows)
            .map(|needs| (needs, knows))
    }

    /// Of a release's `known` migration versions and a database's `applied` ones: those
    /// the database lacks, and those it has from a newer release.
    pub fn difference(known: &[i64], applied: Vec<i64>) -> (Vec<i64>, Vec<i64>) {
        (
            known
                .iter()
                .copied()
                .filter(|v| !applied.contains(v))
                .collect(),
            applied.into_iter().filter(|v| !known.contains(v)).collect(),
        )
    }
}

/// Keyset page request: at most `limit` items after `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Page size (callers clamp it; stores take it as given).
    pub limit: u32,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        Self {
            limit,
            cursor: None,
        }
    }

    /// The page after `cursor`.
    pub fn after(limit: u32, cursor: impl Into<String>) -> Self {
        Self {
            limit,
            cursor: Some(cursor.into()),
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(50)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, in the list's order.
    pub items: Vec<T>,
    /// Cursor for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of the workflow list (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkflowFilter {
    /// Only enabled or only disabled.
    pub enabled: Option<bool>,
    /// Only this string id.
    pub workflow_id: Option<String>,
    /// Only workflows carrying this tag.
    pub tag: Option<String>,
}

/// Filters of the execution list (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Only this status.
    pub status: Option<ExecutionStatus>,
    /// Only executions of this workflow row.
    pub workflow_id: Option<Uuid>,
    /// Only executions of this workflow string id.
    pub workflow_key: Option<String>,
    /// Only executions stopped for this reason.
    pub paused_reason: Option<PauseReason>,
    /// Only executions stopped at a pending approval addressed to this role.
    pub approver_role: Option<String>,
}

/// Filters of the approval list (all optional, combined with AND).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalFilter {
    /// Only this status.
    pub status: Option<ApprovalStatus>,
    /// Only requests addressed to this role.
    pub role: Option<String>,
    /// Only requests of this execution.
    pub execution_id: Option<Uuid>,
    /// Only pending requests this principal may decide (`?mine=true`).
    pub decidable_by: Option<Principal>,
    /// Only requests of executions of this workflow (its `workflow_id`).
    pub workflow_key: Option<String>,
    /// Only requests made by this step.
    pub step_id: Option<String>,
    /// Only requests made before this time.
    pub requested_before: Option<Timestamp>,
    /// List by due time, soonest (the most overdue) first, then the requests without
    /// one; newest first among equals. Otherwise newest first.
    pub by_due: bool,
}

/// Filters of the notification list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotificationFilter {
    /// Only notifications of this execution.
    pub execution_id: Option<Uuid>,
}

/// A worker's claim: who takes an execution and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseClaim {
    /// Worker id.
    pub owner: String,
    /// Lease expiry; the worker renews before then or loses the execution.
    pub expires_at: Timestamp,
}

/// Effects on the engine's own tables, applied in the same transaction as a step commit
/// so that they happen exactly once, however often the step is attempted.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Create or update a record: `merge` merges top-level keys into existing data,
    /// otherwise the data is replaced. The version starts at 1 and grows by one per write.
    UpsertRecord {
        /// Entity type.
        entity: String,
        /// Entity id.
        entity_id: String,
        /// Data.
        data: Value,
        /// Merge (update) or replace (create).
        merge: bool,
    },
    /// Store a notification; a notification whose id already exists is left as it is.
    Notify(Notification),
    /// Schedule a rung of an approval request's ladder (a reminder or an escalation),
    /// fired later by [`crate::ApprovalStore::fire_due_rungs`].
    Rung(ApprovalRung),
    /// Store an approval request's service level (priority and due time).
    Sla(ApprovalSla),
}

/// A change of who is on a pending approval request
/// ([`crate::ApprovalStore::assign_approval`], ruled by [`crate::rules::assign`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentChange {
    /// `by` takes the request. Refused while someone else holds it; taking one's own
    /// again changes nothing.
    Claim {
        /// The claimer.
        by: String,
    },
    /// `by` lets go of it. Refused unless `by` holds it, or `force` (an operator
    /// clearing someone else's). Releasing an unheld request changes nothing.
    Release {
        /// Who lets go.
        by: String,
        /// Whether `by` may clear another's hold.
        force: bool,
    },
    /// An operator `by` gives it to `to`, whoever held it before.
    Assign {
        /// The new assignee.
        to: String,
        /// The operator.
        by: String,
    },
}

/// How a delivery attempt of a queued notification ended
/// ([`crate::NotificationStore::settle_notification`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// The receiver accepted it: `sent`.
    Sent,
    /// It failed and is tried again at `at` (still `queued`).
    Retry {
        /// The next attempt.
        at: Timestamp,
        /// Why this one failed.
        error: String,
    },
    /// It failed for the last time: `failed`.
    Failed {
        /// Why.
        error: String,
    },
    /// It is no longer worth sending (its approval was decided): `dropped`.
    Dropped {
        /// Why.
        why: String,
    },
}

/// What a step commit does to the execution's status.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Stays `running`, lease kept (and extended to the commit's `lease_expires_at`).
    Continue,
    /// Stays `running` but the lease is released until `at` (e.g. a retry backoff):
    /// any worker may take it then.
    Release {
        /// When it becomes claimable.
        at: Timestamp,
    },
    /// Stops at a gate: `paused` (approval, manual) or `waiting` (event). The lease is
    /// released; an approval request, if given, is inserted in the same transaction.
    Gate {
        /// The gate.
        gate: Gate,
        /// The approval request it waits for.
        approval: Option<Box<ApprovalRequest>>,
    },
    /// Ends the execution with a terminal status; pending approvals of the execution
    /// become `cancelled` (or `expired` for `timed_out`).
    Finish {
        /// `completed`, `failed`, `timed_out` or `cancelled`.
        status: ExecutionStatus,
        /// Why, when not completed.
        error: Option<ExecutionError>,
    },
}

/// Everything one step commit writes, atomically (docs/ARCHITECTURE.md, "The flow of an execution").
#[derive(Debug, Clone, PartialEq)]
pub struct StepCommit {
    /// The execution.
    pub execution_id: Uuid,
    /// The committing worker; must hold the lease.
    pub owner: String,
    /// The version the worker last saw; must still be current.
    pub expected_version: i64,
    /// Step records to insert or replace (by id).
    pub records: Vec<StepRecord>,
    /// The new context.
    pub context: Value,
    /// The next step; `None` when the execution ends.
    pub cursor: Option<Cursor>,
    /// Visit counters.
    pub visits: BTreeMap<String, u32>,
    /// Steps run so far.
    pub steps_run: u32,
    /// The result so far.
    pub result: Option<ExecutionResult>,
    /// Events consumed by this commit (appended to the execution's list).
    pub consumed_events: Vec<Uuid>,
    /// What the committed steps replaced in the context, oldest first; stored on the
    /// execution's undo trail under the commit's new version (see
    /// [`tollgate_model::undo`]). Left out of a commit that completes the execution: a
    /// completed execution cannot be retried, so its trail is dropped with that commit.
    pub undo: Vec<ContextUndo>,
    /// Record and notification writes.
    pub effects: Vec<Effect>,
    /// Status change.
    pub transition: Transition,
    /// New lease expiry for [`Transition::Continue`].
    pub lease_expires_at: Timestamp,
    /// Commit time.
    pub now: Timestamp,
    /// Refuse the commit (a `Conflict`, nothing changed) while an operator's pause request
    /// is pending. A worker sets it on a commit that carries steps it ran past a step
    /// boundary it has not stored (a side effect's completion followed by
    /// side-effect-free steps): a pause asked for at that boundary must stop the execution
    /// there, so on refusal the worker commits the boundary as the pause instead.
    pub refuse_if_pause_requested: bool,
}

/// Result of a step commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The execution's new version.
    pub version: i64,
    /// An operator asked for a pause (the worker stops at this step boundary).
    pub pause_requested: bool,
}

/// Gates past their deadline that no worker has acted on
/// ([`crate::ExecutionStore::overdue_gates`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overdue {
    /// How many.
    pub count: u64,
    /// The earliest of their deadlines.
    pub oldest_deadline: Option<Timestamp>,
}

/// An execution a worker found undecodable and set aside
/// ([`crate::ExecutionStore::quarantine_execution`]): the row is `failed` with an
/// `interrupted` error naming the decode error, and what was stored is kept here,
/// verbatim, for an operator to inspect or repair.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Quarantined {
    /// The execution.
    pub execution_id: Uuid,
    /// Why it could not be read.
    pub detail: String,
    /// The stored row as it was before quarantine, column by column (undecodable JSON
    /// columns as their text).
    pub original: Value,
    /// When.
    pub quarantined_at: Timestamp,
}

/// What a request is decided under (see [`crate::ApprovalStore::approval_pin`]): its step,
/// in its execution's pinned definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalPin {
    /// The gated execution.
    pub execution_id: Uuid,
    /// The approval step.
    pub step_id: String,
    /// The definition snapshot the execution is pinned to now (a migration moves it).
    pub snapshot_id: String,
}

/// Result of [`crate::ApprovalStore::decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// The request after the decision.
    pub approval: ApprovalRequest,
    /// The execution, claimed by the caller's lease when the decision settled the
    /// request; as it was otherwise.
    pub execution: Execution,
    /// Whether the decision claimed the execution for the caller.
    pub claimed: bool,
    /// What the caller's [`Continuation`] made of the claimed execution, as stored (its
    /// execution is then `execution`); `None` when the execution was stored as the
    /// decision claimed it.
    pub continued: Option<Starting>,
    /// Who holds the request, read in the decision's transaction: the answer shows it
    /// without a read of its own.
    pub assignment: Option<ApprovalAssignment>,
    /// The request's service level, read in the decision's transaction.
    pub sla: Option<ApprovalSla>,
}

/// What an execution does right after a decision settles its gate, computed by the
/// caller's engine in memory, inside the decision's transaction: given the execution as
/// the decision claimed it, the state to store instead — its side-effect-free steps run
/// up to its next gate, its end, or a step that needs it stored — with their step
/// records and the next approval request, or `None` to store it as claimed. It must be
/// quick and must not block: it runs while the decision holds its rows.
pub type Continuation = std::sync::Arc<dyn Fn(&Execution) -> Option<Starting> + Send + Sync>;

/// The caller's check of an approving decision's `data` against the decision form of the
/// request's step, run inside the decision's transaction so that the request and the
/// definition snapshot its execution is pinned to need no read of their own: given the
/// request, that snapshot's id and the data sent, the data to record (the form's
/// editable fields the approver left out filled from the request), or why not. Like a
/// [`Continuation`] it must be quick and must not block; a definition it does not have
/// at hand is [`FormRefusal::Unloaded`], never a read.
pub type FormCheck = std::sync::Arc<
    dyn Fn(&ApprovalRequest, &str, Value) -> std::result::Result<Value, FormRefusal> + Send + Sync,
>;

/// Why a [`FormCheck`] did not accept a decision's data; the decision changed nothing
/// ([`crate::Error::Form`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormRefusal {
    /// The data does not satisfy the form: what is wrong, field by field.
    Invalid(Vec<tollgate_model::form::FormProblem>),
    /// The check does not have this definition snapshot at hand: the caller loads it
    /// and decides again.
    Unloaded(String),
}

impl std::fmt::Display for FormRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(problems) => {
                write!(f, "the decision's data does not satisfy its form:")?;
                for p in problems {
                    write!(f, " {}: {};", p.path, p.message)?;
                }
                Ok(())
            }
            Self::Unloaded(snapshot) => write!(
                f,
                "the decision form's definition {snapshot} was not at hand; decide again"
            ),
        }
    }
}

/// An execution an event starts, as [`crate::EventStore::insert_event_starting`] stores
/// it: possibly already advanced past its first side-effect-free steps — then with their
/// step records, and when it stopped at an approval gate, the request it waits for.
#[derive(Debug, Clone, PartialEq)]
pub struct Starting {
    /// The row as stored (`running` and leased, or already `paused`, `waiting`, ended).
    pub execution: Execution,
    /// Step records of the steps it already ran.
    pub records: Vec<StepRecord>,
    /// The approval request of the gate it stopped at.
    pub approval: Option<ApprovalRequest>,
    /// What its steps replaced in the context (see [`StepCommit::undo`]), stored under
    /// the execution's version.
    pub undo: Vec<ContextUndo>,
}

impl From<Execution> for Starting {
    fn from(execution: Execution) -> Self {
        Self {
            execution,
            records: Vec::new(),
            approval: None,
            undo: Vec::new(),
        }
    }
}

impl Starting {
    /// True when storing it should wake the worker loops: it stopped at a gate with a
    /// deadline, or waits, lease released, for a retry.
    pub fn wakes_workers(&self) -> bool {
        let e = &self.execution;
        e.gate.as_ref().is_some_and(|g| g.deadline.is_some())
            || (e.status == ExecutionStatus::Running
                && e.lease.as_ref().is_some_and(|l| l.owner.is_none()))
    }

    /// The `running` record of the step attempt at the cursor, when it is stored with the
    /// execution: the run ahead stopped before a side effect and recorded that step's
    /// begin in the same write, so whoever advances it next (the holder of the lease
    /// stored here) acts without recording the begin again.
    pub fn begun(&self) -> Option<&StepRecord> {
        let cursor = self.execution.cursor.as_ref()?;
        self.records.iter().find(|r| {
            r.status == StepStatus::Running
                && r.iteration.is_none()
                && r.parent_step_id.is_none()
                && r.step_id == cursor.step_id
                && r.visit == cursor.visit
                && r.attempt == cursor.attempt
        })
    }
}

/// Result of [`crate::EventStore::insert_event`].
#[derive(Debug, Clone, PartialEq)]
pub enum EventInsert {
    /// Stored for the first time.
    Inserted(Event),
    /// An event with the same `event_id` was stored before; this is it, unchanged.
    Duplicate(Event),
}

/// What [`crate::EventStore::deliver_event`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The event was stored and the execution claimed with it (as returned).
    Claimed {
        /// The stored event.
        event: Event,
        /// The execution, `running` under the caller's claim.
        execution: Box<Execution>,
    },
    /// An event with the same `event_id` was stored before; this is it, unchanged.
    Duplicate(Event),
}

/// Filters of [`crate::ScheduleStore::list_schedules`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleFilter {
    /// Only this workflow's schedules.
    pub workflow_id: Option<Uuid>,
}

/// A tick claimed by a worker, with its schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTick {
    /// The tick (pending, leased to the claimer).
    pub tick: tollgate_model::schedule::Tick,
    /// Its schedule.
    pub schedule: tollgate_model::schedule::Schedule,
}

/// A tick as listed: with the status of the execution it started.
#[derive(Debug, Clone, PartialEq)]
pub struct TickView {
    /// The tick.
    pub tick: tollgate_model::schedule::Tick,
    /// The status of its execution now (None before it started, or when the execution
    /// is gone).
    pub outcome: Option<ExecutionStatus>,
}

/// Which ended executions [`crate::ExecutionStore::purge_ended`] deletes: those that ended
/// before their workflow's cutoff (docs/operations.md, "History retention").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purge {
    /// The cutoff of workflows not listed in `per_workflow`; `None` keeps them.
    pub default_before: Option<Timestamp>,
    /// Cutoffs by workflow string id, for workflows whose definition sets `retention`.
    pub per_workflow: Vec<(String, Timestamp)>,
    /// When set, only these executions are considered (those an archive already holds).
    pub only: Option<Vec<Uuid>>,
}

impl Purge {
    /// Whether it deletes nothing at all.
    pub fn is_empty(&self) -> bool {
        (self.default_before.is_none() && self.per_workflow.is_empty())
            || self.only.as_ref().is_some_and(Vec::is_empty)
    }

    /// The cutoff that applies to executions of `workflow_key`.
    pub fn cutoff(&self, workflow_key: &str) -> Option<Timestamp> {
        self.per_workflow
            .iter()
            .find(|(key, _)| key == workflow_key)
            .map(|(_, before)| *before)
            .or(self.default_before)
    }
}

/// Which events [`crate::EventStore::purge_events`] deletes: those nobody took, received
/// before their type's cutoff (docs/operations.md, "Event retention").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPurge {
    /// The cutoff of event types not listed in `per_type`.
    pub before: Timestamp,
    /// Earlier cutoffs by event type, for types a wait step keeps longer
    /// (its `early_events`).
    pub per_type: Vec<(String, Timestamp)>,
}

impl EventPurge {
    /// The cutoff that applies to events of `event_type`.
    pub fn cutoff(&self, event_type: &str) -> Timestamp {
        self.per_type
            .iter()
            .find(|(t, _)| t == event_type)
            .map_or(self.before, |(_, before)| *before)
    }
}

/// A correlation shape stored events are keyed for (docs/execution-semantics.md,
/// "Correlation keys"): the event fields a definition's wait steps compare, and how far
/// the events of its type are keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventShape {
    /// The event type whose events carry the keys.
    pub event_type: String,
    /// The shape's id (as in [`tollgate_model::records::Correlation::shape`]).
    pub shape: String,
    /// The event field paths, sorted.
    pub fields: Vec<String>,
    /// Every event of the type up to this `(received_at, id)` has its key stored (one
    /// without the fields has none); `None`: none is keyed yet. Only ever moves forward.
    pub keyed_through: Option<(Timestamp, Uuid)>,
}

/// One stored event's key for a shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey {
    /// The event.
    pub event_id: Uuid,
    /// When it arrived (keys are read oldest first).
    pub received_at: Timestamp,
    /// Its hash for the shape.
    pub hash: String,
}

/// An execution [`crate::ExecutionStore::purge_ended`] deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purged {
    /// The execution.
    pub execution_id: Uuid,
    /// Its workflow's string id.
    pub workflow_key: String,
    /// When it had ended.
    pub ended_at: Timestamp,
}

/// A correlation shape waiting on an event type: the event fields its waits' keys read
/// (see [`tollgate_model::records::Correlation`]). An incoming event computes its own
/// hash for each shape and looks the waits up by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitShape {
    /// The shape's id.
    pub shape: String,
    /// The event field paths, sorted.
    pub fields: Vec<String>,
}

/// One correlation key an event has: the waits with this shape and hash may match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitKey {
    /// The shape's id.
    pub shape: String,
    /// The event's hash for that shape.
    pub hash: String,
}
