//! The storage traits. Each method's doc comment is its contract: what it changes, what
//! it checks, and which [`crate::Error`] it returns when. The contract test kit checks exactly
//! these sentences against every backend.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use tollgate_model::records::{
    ApiKey, ApprovalAssignment, ApprovalComment, ApprovalRequest, ApprovalRung, ApprovalSla,
    ConsoleSession, Decision, Delegation, Event, Execution, Migration, Notification, Principal,
    Record, ResumeRequest, Retry, StepRecord, Timestamp, WorkerBeat, Workflow,
};
use tollgate_model::schedule::Schedule;
use tollgate_model::undo::ContextUndo;
use tollgate_model::{ExecutionStatus, WorkflowDefinition};
use uuid::Uuid;

use crate::types::{
    ApprovalFilter, ApprovalPin, AssignmentChange, ClaimedTick, Committed, Continuation, Decided,
    Delivery, EventInsert, EventKey, EventPurge, EventShape, ExecutionFilter, LeaseClaim,
    NotificationFilter, Overdue, Page, PageRequest, Purge, Purged, Quarantined, ScheduleFilter,
    Settle, Starting, StepCommit, TickView, WaitKey, WaitShape, WorkflowFilter,
};
use crate::Result;

/// Workflows and their immutable definition snapshots.
#[async_trait]
pub trait WorkflowStore: Send + Sync {
    /// Inserts a workflow and its definition snapshot (snapshots are content-addressed:
    /// an identical definition reuses the existing one). `Conflict` if
    /// (`workflow_id`, `version`) is taken.
    async fn create_workflow(&self, workflow: Workflow) -> Result<Workflow>;

    /// Replaces a workflow's definition (and `enabled`, from the definition) and stores
    /// its snapshot; executions keep the snapshot they started with. `NotFound` if absent;
    /// `Conflict` if the new (`workflow_id`, `version`) belongs to another workflow.
    async fn replace_workflow(
        &self,
        id: Uuid,
        definition: Arc<WorkflowDefinition>,
        now: Timestamp,
    ) -> Result<Workflow>;

    /// Enables or disables a workflow. `NotFound` if absent.
    async fn set_workflow_enabled(
        &self,
        id: Uuid,
        enabled: bool,
        now: Timestamp,
    ) -> Result<Workflow>;

    /// Deletes a workflow; its snapshots and executions stay. `NotFound` if absent.
    async fn delete_workflow(&self, id: Uuid) -> Result<()>;

    /// One workflow. `NotFound` if absent.
    async fn get_workflow(&self, id: Uuid) -> Result<Workflow>;

    /// Workflows in creation order (oldest first), filtered. `Invalid` for a foreign cursor.
    async fn list_workflows(
        &self,
        filter: &WorkflowFilter,
        page: &PageRequest,
    ) -> Result<Page<Workflow>>;

    /// The enabled workflows an event of `event_type` starts: those whose event trigger
    /// matches, and for each `workflow_id` only its highest enabled version.
    async fn workflows_for_event(&self, event_type: &str) -> Result<Vec<Workflow>>;

    /// A definition snapshot by id. `NotFound` if absent.
    async fn get_snapshot(&self, snapshot_id: &str) -> Result<Arc<WorkflowDefinition>>;
}

/// Executions and their step records.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Inserts a new execution exactly as given (normally `running`, version 1, leased by
    /// its creator). `Conflict` if the id exists; `NotFound` if its snapshot does not.
    async fn create_execution(&self, execution: Execution) -> Result<Execution>;

    /// One execution. `NotFound` if absent.
    async fn get_execution(&self, id: Uuid) -> Result<Execution>;

    /// Executions newest first, filtered. `Invalid` for a foreign cursor.
    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: &PageRequest,
    ) -> Result<Page<Execution>>;

    /// How many executions are in each status (statuses with none are absent). For
    /// gauges and dashboards: one aggregate read, not a page walk.
    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>>;

    /// How many executions are `running`, `paused` or `waiting` (statuses with none are
    /// absent). Unlike [`count_by_status`](Self::count_by_status), whose cost grows with
    /// every execution ever run, this reads only the executions in flight, so a gauge
    /// can read it on every scrape of a store holding years of history.
    async fn count_in_flight(&self) -> Result<Vec<(ExecutionStatus, u64)>>;

    /// Gated (`paused`/`waiting`) executions whose gate deadline has passed at `now` but
    /// that no worker has claimed yet, and the earliest such deadline. Nonzero for long
    /// means no worker loop is running: the signal operators need when deadlines pass
    /// and nothing happens. Reads only the due gates' index.
    async fn overdue_gates(&self, now: Timestamp) -> Result<Overdue>;

    /// `paused` and `waiting` executions, oldest pause first.
    async fn list_gated(&self, page: &PageRequest) -> Result<Page<Execution>>;

    /// Step records of an execution in the order they were created.
    async fn list_steps(&self, execution_id: Uuid) -> Result<Vec<StepRecord>>;

    /// The execution's context undo trail, oldest entry first (see
    /// [`tollgate_model::undo`]): what its commits' steps, and its retries, replaced in
    /// the context. Empty for a completed execution, whose trail is dropped when it
    /// completes. `NotFound` for an unknown execution.
    async fn context_trail(&self, execution_id: Uuid) -> Result<Vec<ContextUndo>>;

    /// Records a step attempt as `running` before it acts (docs/ARCHITECTURE.md, "The flow of an execution"), inserting or
    /// replacing the record by id, and increments the version. Checks that the execution
    /// is `running`, leased by `owner`, at `expected_version`; otherwise `Conflict`.
    /// Returns the new version.
    async fn begin_step(
        &self,
        execution_id: Uuid,
        owner: &str,
        expected_version: i64,
        record: StepRecord,
        now: Timestamp,
    ) -> Result<i64>;

    /// Commits a step (docs/ARCHITECTURE.md, "The flow of an execution"): step records, context, cursor, counters, result,
    /// effects and the status transition in one transaction; clears the gate and the
    /// wake signal the worker acted on, and the pause request when stopping or ending.
    /// Checks `running`, lease owner and version as [`Self::begin_step`] (`Conflict`
    /// otherwise, with nothing written). Returns the new version and whether an operator
    /// has asked for a pause.
    async fn commit_step(&self, commit: StepCommit) -> Result<Committed>;

    /// Extends a lease. `Conflict` if the execution is not `running` under `owner`.
    async fn renew_lease(&self, id: Uuid, owner: &str, expires_at: Timestamp) -> Result<()>;

    /// Gives a lease up so another worker can take the execution at once (graceful
    /// shutdown). `Conflict` if the execution is not `running` under `owner`.
    async fn release_lease(&self, id: Uuid, owner: &str, now: Timestamp) -> Result<()>;

    /// Claims up to `limit` `running` executions whose lease expired at or before `now`
    /// (a dead worker's, or one released until then): each gets the new lease and a new
    /// version. No execution is handed to two concurrent callers.
    async fn claim_expired_leases(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<Execution>>;

    /// Claims up to `limit` `paused`/`waiting` executions whose gate deadline is at or
    /// before `now`, in one transaction each: an approval gate's request becomes
    /// `expired` and the wake signal says so; a wait gate gets a wait-timeout signal; the
    /// execution becomes `running` under the claim, and a `timer` resume request is
    /// recorded. No execution is handed to two concurrent callers.
    async fn claim_due_gates(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<Execution>>;

    /// Ends up to `limit` executions whose workflow deadline is at or before `now` and
    /// that no live worker holds (gated, or running with an expired lease) as
    /// `timed_out`, expiring their pending approvals and recording a `timer` resume
    /// request. Returns the ended executions.
    async fn time_out_overdue(&self, now: Timestamp, limit: u32) -> Result<Vec<Execution>>;

    /// Asks a `running` execution to pause at its next step boundary (a flag its worker
    /// sees in its next [`Self::commit_step`] result; the version is unchanged so the
    /// worker's commit is not refused); one that no live worker holds is paused at once
    /// (manual gate at its cursor, version incremented) — unless it holds a wake signal
    /// no worker has acted on yet: then it too gets the flag, so that the worker taking
    /// it over acts on the signal first (a pause never discards a stored decision, event
    /// or deadline). `Conflict` if it is not running.
    async fn request_pause(
        &self,
        id: Uuid,
        actor: Option<&str>,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution>;

    /// Resumes a manually paused execution: `running` under `claim`, with a manual wake
    /// signal carrying `data`, and a `manual` resume request. `Conflict` if it is not
    /// paused for a manual reason (approval gates are resumed by deciding).
    async fn resume_manual(
        &self,
        id: Uuid,
        actor: Option<&str>,
        data: Value,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution>;

    /// Starts a `failed` or `timed_out` execution again as `retry` says (see
    /// [`tollgate_model::records::Retry`]): `running` under `claim`, and a `manual`
    /// resume request from `actor` carrying `retry.audit`. `Conflict` if it is in another
    /// status or no longer at `retry.expected_version`, with nothing changed.
    async fn retry_execution(
        &self,
        id: Uuid,
        retry: &Retry,
        actor: Option<&str>,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution>;

    /// Deletes up to `limit` ended executions (oldest end first) that ended before the
    /// cutoff `purge` gives their workflow, each with its step records, approvals, resume
    /// requests, notifications and quarantine row, and the events it consumed that
    /// arrived before that cutoff; returns what it deleted. Running, paused and waiting
    /// executions are never touched. One transaction: an execution is gone whole or not
    /// at all. While another caller is purging (another node), it deletes nothing and
    /// returns an empty list rather than waiting.
    async fn purge_ended(&self, purge: &Purge, limit: u32) -> Result<Vec<Purged>>;

    /// The executions [`Self::purge_ended`] would delete now with the same arguments,
    /// oldest end first, deleting nothing (so that they can be archived first).
    async fn purgeable(&self, purge: &Purge, limit: u32) -> Result<Vec<Purged>>;

    /// Moves a paused or waiting execution to another version of its workflow as
    /// `migration` says (see [`tollgate_model::records::Migration`]), with a `manual`
    /// resume request from `actor` carrying `migration.audit`. Its gate, pending approval
    /// and deadline are kept. `Conflict` if it is not at a gate or no longer at
    /// `migration.expected_version`, with nothing changed.
    async fn migrate_execution(
        &self,
        id: Uuid,
        migration: &Migration,
        actor: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution>;

    /// Cancels a non-terminal execution: `cancelled`, error kind `cancelled`, lease
    /// dropped, pending approvals `cancelled`, context undo trail dropped (a cancelled
    /// execution cannot be retried). `Conflict` if it is already terminal.
    async fn cancel_execution(
        &self,
        id: Uuid,
        actor: Option<&str>,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution>;

    /// Claims a `waiting` execution for an event: checks that it waits for
    /// `event.event_type` (and, when `expected_version` is given, that it is still at that
    /// version), makes it `running` under `claim` with an event wake signal, adds the
    /// event to its consumed list, and records an `event` resume request. `Conflict`
    /// otherwise, with nothing changed.
    async fn claim_wait(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        event: &Event,
        actor: Option<&str>,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution>;

    /// `waiting` executions whose wait is for `event_type`, by id, after `after`. One
    /// that cannot be read is quarantined at `now` (see
    /// [`Self::quarantine_execution`]) and left out, so that it cannot fail every event
    /// of its type; rows of a newer release ([`crate::STORED_FORMAT`]) are left out.
    async fn waiting_for_event(
        &self,
        event_type: &str,
        after: Option<Uuid>,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<Execution>>;

    /// The correlation shapes of the event gates of type `event_type` of executions at
    /// `first_of` steps (a gate without a key has the empty shape, no fields). Empty —
    /// the usual answer — when no `first_of` step awaits the type: then an event need not
    /// look further.
    async fn first_of_shapes(&self, event_type: &str) -> Result<Vec<WaitShape>>;

    /// `waiting` executions stopped at a `first_of` step with an event gate for
    /// `event_type` that has no correlation key or one of `keys`, by id, after `after` —
    /// an index probe per key (each gate's whole match is then checked by the caller).
    /// Unreadable rows are quarantined and rows of a newer release left out, as by
    /// [`Self::waiting_for_event`].
    async fn waiting_at_first_of(
        &self,
        event_type: &str,
        keys: &[WaitKey],
        after: Option<Uuid>,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<Execution>>;

    /// The distinct correlation shapes of the `waiting` executions whose wait is for
    /// `event_type` (waits without a key have none). Few per type: one per wait step
    /// whose `match` has a key, in practice.
    async fn wait_shapes(&self, event_type: &str) -> Result<Vec<WaitShape>>;

    /// `waiting` executions whose wait is for `event_type` and either has no correlation
    /// key or has one of `keys` (shape and hash), by id, after `after` — an index probe
    /// per key, not a scan of the type's waits. Unreadable rows are quarantined and rows
    /// of a newer release left out, as by [`Self::waiting_for_event`].
    async fn waiting_for_keys(
        &self,
        event_type: &str,
        keys: &[WaitKey],
        after: Option<Uuid>,
        limit: u32,
        now: Timestamp,
    ) -> Result<Vec<Execution>>;

    /// Sets aside an execution that cannot be run because what is stored for it cannot be
    /// read (its row does not decode — the caller may not be able to read it at all — or
    /// its definition snapshot does not): keeps the stored row verbatim in the quarantine
    /// list with `detail`, and ends the execution `failed` with an `interrupted` error
    /// naming `detail`, lease, gate and wake signal cleared, its pending approvals
    /// `cancelled`. Repeating it keeps the first record. `NotFound` if absent;
    /// `NewerFormat` (nothing changed) if a newer release wrote the row.
    async fn quarantine_execution(
        &self,
        id: Uuid,
        detail: &str,
        now: Timestamp,
    ) -> Result<Execution>;

    /// Quarantined executions, most recent first (keyset by execution id).
    async fn list_quarantined(&self, page: &PageRequest) -> Result<Page<Quarantined>>;
}

/// Approval requests and their decisions.
#[async_trait]
pub trait ApprovalStore: Send + Sync {
    /// One request. `NotFound` if absent.
    async fn get_approval(&self, id: Uuid) -> Result<ApprovalRequest>;

    /// A request's step and its execution's pinned definition, in one read: what a
    /// decision looks the step's decision form up by, on every approval. `NotFound` if
    /// the request (or its execution) is absent.
    async fn approval_pin(&self, approval_id: Uuid) -> Result<ApprovalPin>;

    /// How many requests are `pending` (a gauge: reads only the pending requests' index).
    async fn count_pending_approvals(&self) -> Result<u64>;

    /// Requests newest first, filtered. `Invalid` for a foreign cursor.
    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>>;

    /// Records a decision by `decider` (whose subject signs `decision`) and, when it
    /// settles the request (quorum reached, or a rejection), claims the gated execution
    /// under `claim` with an approval wake signal and an `approval` resume request — all
    /// in one transaction (docs/ARCHITECTURE.md, "The flow of an execution"), authorised
    /// against the request as it stands in that transaction ([`crate::rules::decide`]).
    /// A refusal is [`crate::Error::Refused`] and changes nothing. `NotFound` if absent.
    ///
    /// With `then`, a claimed execution is stored as `then` continues it instead, with
    /// the step records and approval request `then` returns, in the same transaction: a
    /// decision and the side-effect-free steps that follow it are one write, and what was
    /// stored comes back in [`Decided::continued`]. `then` must return the claimed
    /// execution advanced by the rules of [`crate::rules::apply_commit`] (same id, version
    /// above the claim's), or `None` to store it as claimed; a result that does not follow
    /// the claim is ignored ([`crate::rules::continuation`]).
    async fn decide(
        &self,
        approval_id: Uuid,
        decision: Decision,
        decider: &Principal,
        claim: &LeaseClaim,
        now: Timestamp,
        then: Option<Continuation>,
    ) -> Result<Decided> {
        self.decide_request(crate::decision_batch::DecideRequest::new(
            approval_id,
            decision,
            decider,
            claim,
            now,
            then,
        ))
        .await
    }

    /// [`Self::decide`] with every argument in one request, and with its
    /// [`crate::FormCheck`] if it has one: an approving decision's data is checked (and
    /// filled) against the request's step form inside the decision's transaction, before
    /// the rules judge it ([`crate::rules::check_form`]); a refusal is
    /// [`crate::Error::Form`] and changes nothing.
    async fn decide_request(
        &self,
        request: crate::decision_batch::DecideRequest,
    ) -> Result<Decided>;

    /// Adds a comment to its request, whatever the request's status (a thread outlives
    /// the decision). `NotFound` if the request is absent. Comments go with their
    /// request when retention deletes it.
    async fn add_comment(&self, comment: &ApprovalComment) -> Result<()>;

    /// Fires up to `limit` ladder rungs due at or before `now`, each in one transaction
    /// and each once across concurrent callers: for a pending request, an escalation
    /// adds its approvers, and the rung's notifications are queued (fresh ids, due
    /// now); for a request no longer pending, the rung is marked `skipped`. Returns the
    /// rungs as fired.
    async fn fire_due_rungs(&self, now: Timestamp, limit: u32) -> Result<Vec<ApprovalRung>>;

    /// A request's ladder, in order, fired or not. `NotFound` for an unknown request.
    async fn list_rungs(&self, approval_id: Uuid) -> Result<Vec<ApprovalRung>>;

    /// A request's comments, oldest first. `NotFound` if the request is absent;
    /// `Invalid` for a foreign cursor.
    async fn list_comments(
        &self,
        approval_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<ApprovalComment>>;

    /// Claims, releases or assigns a request, under [`crate::rules::assign`], reading
    /// the request and its holder and writing the outcome in one transaction, so two
    /// approvers claiming at once get one claim and one `Conflict`. Returns who holds it
    /// now. `NotFound` if the request is absent; `Conflict` if it is no longer pending
    /// or the rule refuses. The caller checks who may make the change.
    async fn assign_approval(
        &self,
        approval_id: Uuid,
        change: &AssignmentChange,
        now: Timestamp,
    ) -> Result<Option<ApprovalAssignment>>;

    /// The service levels of `ids` (requests without one, and absent ids, are left
    /// out: they are `normal` with no due time).
    async fn slas(&self, ids: &[Uuid]) -> Result<Vec<ApprovalSla>>;

    /// How many pending requests are past their due time at `now` (a gauge).
    async fn count_overdue_approvals(&self, now: Timestamp) -> Result<u64>;

    /// Who holds each of `ids` (requests nobody holds, and absent ids, are left out).
    /// The hold stays after the decision: it says who was on the request.
    async fn assignments(&self, ids: &[Uuid]) -> Result<Vec<ApprovalAssignment>>;

    /// [`Self::assignments`] and [`Self::slas`] of `ids` in one read: what every request
    /// shown by the API carries, a decision's answer included. A backend that answers
    /// both in one statement spares a round trip (or, on SQLite, a hand-off to a reader
    /// thread) per request shown; the default reads them side by side.
    async fn assignments_and_slas(
        &self,
        ids: &[Uuid],
    ) -> Result<(Vec<ApprovalAssignment>, Vec<ApprovalSla>)> {
        futures_util::future::try_join(self.assignments(ids), self.slas(ids)).await
    }
}

/// Incoming events.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Stores an event, pending delivery (see [`Self::undelivered_events`]); when its
    /// `event_id` was seen before, returns the first one unchanged instead.
    async fn insert_event(&self, event: Event) -> Result<EventInsert>;

    /// Stores an event together with the executions it starts (their ids are in
    /// `event.started`) — each with the step records and approval request it comes
    /// with — in one transaction: either all of them or, when the `event_id` was seen
    /// before, none — then the first event is returned unchanged. `Conflict` if an
    /// execution id exists. The event is stored pending delivery to the executions
    /// already waiting for it (see [`Self::undelivered_events`]).
    async fn insert_event_starting(
        &self,
        event: Event,
        starts: Vec<Starting>,
    ) -> Result<EventInsert>;

    /// Stores an event addressed to one execution and claims that execution with it, in
    /// one transaction (a direct delivery): the event must satisfy
    /// [`crate::rules::check_wait_claim`] for `event.correlation_id` (at
    /// `expected_version` when given); then the execution is `running` under `claim` with
    /// an event wake signal, the event is stored as delivered with the execution in its
    /// `resumed` list, and an `event` resume request is recorded. When the `event_id` was
    /// seen before, nothing changes and the first event is returned
    /// ([`Delivery::Duplicate`]). A refusal is `Conflict` and stores nothing — not even
    /// the event. `NotFound` if the execution does not exist; `Invalid` if the event has
    /// no `correlation_id`.
    async fn deliver_event(
        &self,
        event: Event,
        expected_version: Option<i64>,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Delivery>;

    /// Records which executions an event started, and adds those it resumed to its
    /// `resumed` list (executions that took it meanwhile stay listed). `NotFound` if
    /// absent.
    async fn set_event_outcome(
        &self,
        id: Uuid,
        started: Vec<Uuid>,
        resumed: Vec<Uuid>,
    ) -> Result<Event>;

    /// One event. `NotFound` if absent.
    async fn get_event(&self, id: Uuid) -> Result<Event>;

    /// Events of `event_type` received at or after `since` that are addressed to nobody
    /// or to `execution_id`, oldest first (by `received_at`, then id), starting after
    /// `after` (the `(received_at, id)` of the last event of the previous page): the
    /// candidates for a wait that may have missed them. Callers page through until they
    /// find a match; no cap hides one.
    async fn events_for_wait(
        &self,
        event_type: &str,
        since: Timestamp,
        execution_id: Uuid,
        after: Option<(Timestamp, Uuid)>,
        limit: u32,
    ) -> Result<Vec<Event>>;

    /// Events still pending delivery that were received at or before `received_before`,
    /// oldest first: those whose ingesting process may have died before it offered them
    /// to the executions waiting for them. The worker loop delivers them again (delivery
    /// is idempotent: an execution consumes an event once) and then marks them.
    async fn undelivered_events(
        &self,
        received_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<Event>>;

    /// Marks events delivered: offered to every execution that waited for them when
    /// they were stored. Unknown ids are ignored.
    async fn mark_events_delivered(&self, ids: &[Uuid]) -> Result<()>;

    /// Deletes, in one transaction, up to `limit` events that nobody took — delivered,
    /// started no execution, in no execution's `resumed` list (an execution that
    /// consumes an event, however it finds it, is added there) — received before their
    /// type's cutoff, oldest first. Returns how many it deleted.
    async fn purge_events(&self, purge: &EventPurge, limit: u32) -> Result<u64>;

    /// The shapes stored events are keyed for: of `event_type`, or all of them.
    async fn event_shapes(&self, event_type: Option<&str>) -> Result<Vec<EventShape>>;

    /// Registers a shape (with nothing keyed yet) unless it is registered already.
    async fn add_event_shape(&self, event_type: &str, shape: &str, fields: &[String])
        -> Result<()>;

    /// Events of `event_type` after `after` (a `(received_at, id)`) received at or before
    /// `up_to`, oldest first: the next ones to key.
    async fn events_to_key(
        &self,
        event_type: &str,
        after: Option<(Timestamp, Uuid)>,
        up_to: Timestamp,
        limit: u32,
    ) -> Result<Vec<Event>>;

    /// Stores `keys` for a shape and moves its `keyed_through` from `from` to
    /// `through`, in one transaction. `Conflict` (nothing stored) when the shape is not
    /// at `from` — another worker keyed those events meanwhile; `NotFound` when the
    /// shape is not registered. A key of an event deleted meanwhile is skipped.
    async fn add_event_keys(
        &self,
        event_type: &str,
        shape: &str,
        keys: &[EventKey],
        from: Option<(Timestamp, Uuid)>,
        through: (Timestamp, Uuid),
    ) -> Result<()>;

    /// Like [`Self::events_for_wait`], but only events keyed with `hash` for `shape`, and
    /// only up to `through` (a `(received_at, id)`; the shape's `keyed_through`): the
    /// candidates of a wait with that key, found by an index probe however many other
    /// events of its type are kept.
    #[allow(clippy::too_many_arguments)]
    async fn keyed_events_for_wait(
        &self,
        event_type: &str,
        shape: &str,
        hash: &str,
        since: Timestamp,
        execution_id: Uuid,
        after: Option<(Timestamp, Uuid)>,
        through: (Timestamp, Uuid),
        limit: u32,
    ) -> Result<Vec<Event>>;
}

/// The resume-request audit (docs/execution-semantics.md, "Statuses and the audit").
#[async_trait]
pub trait ResumeRequestStore: Send + Sync {
    /// Appends an audit row (used for refused attempts; accepted ones are written by the
    /// claiming methods themselves).
    async fn record_resume_request(&self, request: ResumeRequest) -> Result<()>;

    /// An execution's audit rows, oldest first.
    async fn list_resume_requests(&self, execution_id: Uuid) -> Result<Vec<ResumeRequest>>;
}

/// Records written by `create_record`/`update_record`.
#[async_trait]
pub trait RecordStore: Send + Sync {
    /// One record. `NotFound` if absent.
    async fn get_record(&self, entity: &str, entity_id: &str) -> Result<Record>;
}

/// Notifications recorded by `notify`.
#[async_trait]
pub trait NotificationStore: Send + Sync {
    /// Stores a notification outside a step commit (a notifier reporting delivery); an
    /// existing id is overwritten with the new status.
    async fn put_notification(&self, notification: Notification) -> Result<()>;

    /// Notifications oldest first, filtered. `Invalid` for a foreign cursor.
    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> Result<Page<Notification>>;

    /// Claims up to `limit` `queued` notifications due at or before `now` that no live
    /// claim holds, oldest due first, for `claim.owner` until `claim.expires_at`: one
    /// sender at a time, across any number of workers. A claim that lapses (its worker
    /// died mid-send) makes the notification claimable again, so it is sent at least
    /// once; receivers drop repeats by its id.
    async fn claim_notifications(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<Notification>>;

    /// Records how an attempt of a notification `owner` claimed ended, counting the
    /// attempt and releasing the claim. `Conflict` when the claim is no longer
    /// `owner`'s (it lapsed and another worker took it), `NotFound` for an unknown id.
    async fn settle_notification(
        &self,
        id: Uuid,
        owner: &str,
        now: Timestamp,
        settle: &Settle,
    ) -> Result<()>;
}

/// API keys (hashes only).
#[async_trait]
pub trait ApiKeyStore: Send + Sync {
    /// Stores a key. `Conflict` if the name is taken.
    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey>;

    /// Keys in creation order.
    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKey>>;

    /// Deletes a key; it stops working at once. `NotFound` if absent.
    async fn delete_api_key(&self, id: Uuid) -> Result<()>;

    /// The key with this hash, if any.
    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>>;
}

/// Cron schedules and their ticks. A schedule mirroring a workflow's own `schedule`
/// trigger (`from_trigger`) is kept in step with the workflow by the [`WorkflowStore`]
/// methods themselves: created with it, changed when its definition is replaced,
/// re-created when it is enabled without one, and deleted with it.
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Inserts a schedule. `NotFound` if its workflow does not exist.
    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule>;

    /// One schedule. `NotFound` if absent.
    async fn get_schedule(&self, id: Uuid) -> Result<Schedule>;

    /// Schedules, oldest first. `Invalid` for a foreign cursor.
    async fn list_schedules(
        &self,
        filter: &ScheduleFilter,
        page: &PageRequest,
    ) -> Result<Page<Schedule>>;

    /// Replaces a schedule's cron, time zone, `enabled`, catch-up policy and next fire
    /// time (the caller recomputes it). `NotFound` if absent.
    async fn update_schedule(&self, schedule: Schedule) -> Result<Schedule>;

    /// Deletes a schedule and its tick history. `NotFound` if absent.
    async fn delete_schedule(&self, id: Uuid) -> Result<()>;

    /// Claims work for the scheduler, in one transaction: first pending ticks whose
    /// lease expired (their claimer died before starting them), then enabled schedules
    /// of enabled workflows whose `next_fire_at` has come, up to `limit` schedules. For
    /// each due schedule it computes the ticks its catch-up policy fires, inserts them
    /// (unique per schedule and tick time, so a tick is never recorded twice), and
    /// advances `next_fire_at` past `now`. Every returned tick is `pending` and leased to
    /// `claim.owner` until `claim.expires_at`.
    async fn claim_ticks(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<ClaimedTick>>;

    /// Stores `execution` and marks the tick `started` with it, atomically, if `owner`
    /// still holds the tick `pending`. `Conflict` otherwise (it started, or its lease
    /// lapsed and another worker took it) — then nothing is stored.
    async fn start_tick(
        &self,
        tick_id: Uuid,
        owner: &str,
        execution: Execution,
        now: Timestamp,
    ) -> Result<Execution>;

    /// Marks a pending tick held by `owner` `failed` with `error` (e.g. its workflow was
    /// deleted). `Conflict` if `owner` does not hold it.
    async fn fail_tick(
        &self,
        tick_id: Uuid,
        owner: &str,
        error: &str,
        now: Timestamp,
    ) -> Result<()>;

    /// The earliest `next_fire_at` of the enabled schedules of enabled workflows — when
    /// the scheduler next has work — or `None` when nothing is scheduled.
    async fn next_fire_at(&self) -> Result<Option<Timestamp>>;

    /// A schedule's ticks, newest first, with their executions' current status.
    /// `Invalid` for a foreign cursor.
    async fn list_ticks(&self, schedule_id: Uuid, page: &PageRequest) -> Result<Page<TickView>>;
}

/// Delegations of approval requests from one subject to another for a period
/// (docs/approvals.md, "Delegation").
#[async_trait]
pub trait DelegationStore: Send + Sync {
    /// Stores a new delegation. `Conflict` if its id exists.
    async fn create_delegation(&self, delegation: &Delegation) -> Result<()>;

    /// Delegations from or to `subject` (all of them when `None`), newest first,
    /// revoked and ended ones included. `Invalid` for a foreign cursor.
    async fn list_delegations(
        &self,
        subject: Option<&str>,
        page: &PageRequest,
    ) -> Result<Page<Delegation>>;

    /// Revokes a delegation at `now`, so its delegate may no longer use it. `NotFound`
    /// if absent; `Conflict` if it was already revoked or has ended.
    async fn revoke_delegation(&self, id: Uuid, now: Timestamp) -> Result<Delegation>;

    /// The delegations `delegate` may use at `now`: started, not ended, not revoked.
    async fn delegations_to(&self, delegate: &str, now: Timestamp) -> Result<Vec<Delegation>>;
}

/// Web-console sessions, shared by every API process of a database.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session, and removes sessions that expired before `now` (so the table
    /// holds only live ones). `Conflict` if the id exists.
    async fn create_session(&self, session: ConsoleSession, now: Timestamp) -> Result<()>;

    /// The session with this id hash, unless it expired at `now`.
    async fn get_session(&self, id_hash: &str, now: Timestamp) -> Result<Option<ConsoleSession>>;

    /// Ends a session (nothing happens if there is none).
    async fn delete_session(&self, id_hash: &str) -> Result<()>;
}

/// Worker loops' heartbeats (one row per worker id).
#[async_trait]
pub trait WorkerStore: Send + Sync {
    /// Records that `worker_id`'s loop, started at `started_at`, is alive at `now` and
    /// claimed `claimed` more executions or ticks since its previous beat (then
    /// `last_claim_at` becomes `now`). Workers silent for [`WORKERS_FORGOTTEN_AFTER`] are
    /// forgotten in the same change, so restarts do not pile up rows.
    async fn heartbeat(
        &self,
        worker_id: &str,
        started_at: Timestamp,
        now: Timestamp,
        claimed: u64,
    ) -> Result<()>;

    /// Workers whose latest beat is at or after `since`, latest first.
    async fn list_workers(&self, since: Timestamp) -> Result<Vec<WorkerBeat>>;
}

/// How long a silent worker's heartbeat row is kept.
pub const WORKERS_FORGOTTEN_AFTER: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Liveness of the backend.
#[async_trait]
pub trait Health: Send + Sync {
    /// Succeeds when the backend answers.
    async fn ping(&self) -> Result<()>;
}

/// Every trait at once: what binaries hold as `Arc<dyn Store>`.
pub trait Store:
    WorkflowStore
    + ExecutionStore
    + ApprovalStore
    + EventStore
    + ResumeRequestStore
    + RecordStore
    + NotificationStore
    + ApiKeyStore
    + ScheduleStore
    + SessionStore
    + DelegationStore
    + WorkerStore
    + Health
{
}

impl<T> Store for T where
    T: WorkflowStore
        + ExecutionStore
        + ApprovalStore
        + EventStore
        + ResumeRequestStore
        + RecordStore
        + NotificationStore
        + ApiKeyStore
        + ScheduleStore
        + SessionStore
        + DelegationStore
        + WorkerStore
        + Health
{
}
