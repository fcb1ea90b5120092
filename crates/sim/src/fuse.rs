//! A store that a simulated `kill -9` can stop at any call.
//!
//! [`CrashStore`] wraps a real store and numbers every call a process makes. When the
//! call chosen by its [`Fuse`] comes, the process "dies" there: either before the call
//! reaches the store, or after the store committed it but before the caller sees the
//! answer. From then on every call of that process — from any of its tasks — waits
//! forever, so nothing the dead process would still have done can reach the store:
//! exactly what survives a `kill -9` is what was committed.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::Rng;
use serde_json::Value;
use tokio::sync::Notify;
use tollgate_model::records::{
    ApiKey, ApprovalRequest, ConsoleSession, Event, Execution, Migration, Notification, Record,
    ResumeRequest, Retry, StepRecord, Timestamp, Workflow,
};
use tollgate_model::schedule::Schedule;
use tollgate_model::undo::ContextUndo;
use tollgate_model::{ExecutionStatus, WorkflowDefinition};
use tollgate_store::{
    ApiKeyStore, ApprovalFilter, ApprovalStore, ClaimedTick, Committed, Decided, DelegationStore,
    Delivery, EventInsert, EventKey, EventPurge, EventShape, EventStore, ExecutionFilter,
    ExecutionStore, Health, LeaseClaim, NotificationFilter, NotificationStore, Overdue, Page,
    PageRequest, Purge, Purged, Quarantined, RecordStore, Result, ResumeRequestStore,
    ScheduleFilter, ScheduleStore, SessionStore, Settle, Starting, StepCommit, Store, TickView,
    WaitKey, WaitShape, WorkerStore, WorkflowFilter, WorkflowStore,
};
use uuid::Uuid;

/// When, relative to its store call, the process dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The call never reaches the store.
    Before,
    /// The store committed the call; its answer is lost with the process.
    After,
}

/// Where a process dies: its `call`-th store call (from 0), at `phase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CrashPoint {
    /// Index of the store call, counting every call the process makes.
    pub call: usize,
    /// Before or after the call takes effect.
    pub phase: Phase,
}

impl std::fmt::Display for CrashPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match self.phase {
            Phase::Before => "before",
            Phase::After => "after",
        };
        write!(f, "{phase} call {}", self.call)
    }
}

/// The process's fate: counts its store calls and blows at its crash point.
#[derive(Debug, Default)]
pub struct Fuse {
    calls: AtomicUsize,
    point: Option<CrashPoint>,
    blown: AtomicBool,
    notify: Notify,
    names: Mutex<Vec<&'static str>>,
    jitter: Option<Mutex<StdRng>>,
    black_hole: AtomicBool,
    black_holed_calls: Mutex<Vec<&'static str>>,
}

impl Fuse {
    /// A fuse that never blows: it only counts (the dry run that sizes the sweep).
    pub fn counting() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A fuse that blows at `point`.
    pub fn at(point: CrashPoint) -> Arc<Self> {
        Arc::new(Self {
            point: Some(point),
            ..Self::default()
        })
    }

    /// A fuse that blows at `point` (if any) and yields to the scheduler a random number
    /// of times before each call, so concurrent callers interleave differently per seed.
    pub fn with_jitter(point: Option<CrashPoint>, rng: StdRng) -> Arc<Self> {
        Arc::new(Self {
            point,
            jitter: Some(Mutex::new(rng)),
            ..Self::default()
        })
    }

    /// Store calls made so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The names of the calls made so far, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// While `on`, every call the process makes goes unanswered, forever: what a
    /// connection black-holed by a network partition or a failover does (the database
    /// never hears of it, TCP gives up only after many minutes). Calls made after it is
    /// turned off go through, as on a fresh connection; the swallowed ones stay
    /// unanswered.
    pub fn black_hole(&self, on: bool) {
        self.black_hole.store(on, Ordering::SeqCst);
    }

    /// From now on, calls named `name` (a store method) go unanswered, forever, as in
    /// [`Self::black_hole`]; the others go through.
    pub fn black_hole_call(&self, name: &'static str) {
        self.black_holed_calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name);
    }

    fn swallows(&self, name: &str) -> bool {
        self.black_hole.load(Ordering::SeqCst)
            || self
                .black_holed_calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&name)
    }

    /// Whether the process has died.
    pub fn is_blown(&self) -> bool {
        self.blown.load(Ordering::SeqCst)
    }

    /// Resolves once the process has died.
    pub async fn blown(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_blown() {
                return;
            }
            notified.await;
        }
    }

    fn blow(&self) {
        self.blown.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    async fn jitter(&self) {
        let Some(rng) = &self.jitter else { return };
        let yields = rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .random_range(0..4u32);
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
    }

    /// Runs one store call under the fuse.
    async fn run<T>(&self, name: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.jitter().await;
        if self.is_blown() || self.swallows(name) {
            return std::future::pending().await;
        }
        let index = self.calls.fetch_add(1, Ordering::SeqCst);
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name);
        let hit = |phase| {
            self.point
                .is_some_and(|p| p.call == index && p.phase == phase)
        };
        if hit(Phase::Before) {
            self.blow();
            return std::future::pending().await;
        }
        let answer = call.await;
        if hit(Phase::After) {
            self.blow();
        }
        // A process that died while this call was in flight never sees its answer.
        if self.is_blown() {
            return std::future::pending().await;
        }
        answer
    }
}

/// A store whose calls go through a [`Fuse`]; see the module documentation.
#[derive(Clone)]
pub struct CrashStore {
    inner: Arc<dyn Store>,
    fuse: Arc<Fuse>,
}

impl std::fmt::Debug for CrashStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrashStore")
            .field("fuse", &self.fuse)
            .finish_non_exhaustive()
    }
}

impl CrashStore {
    /// `inner`, dying as `fuse` says.
    pub fn new(inner: Arc<dyn Store>, fuse: Arc<Fuse>) -> Self {
        Self { inner, fuse }
    }
}

/// Forwards each listed method of a store trait through the fuse.
macro_rules! through_fuse {
    ($trait:ident { $(fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;)* }) => {
        #[async_trait]
        impl $trait for CrashStore {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret> {
                    self.fuse.run(stringify!($name), self.inner.$name($($arg),*)).await
                }
            )*
        }
    };
}

through_fuse!(WorkflowStore {
    fn create_workflow(&self, workflow: Workflow) -> Workflow;
    fn replace_workflow(&self, id: Uuid, definition: Arc<WorkflowDefinition>, now: Timestamp) -> Workflow;
    fn set_workflow_enabled(&self, id: Uuid, enabled: bool, now: Timestamp) -> Workflow;
    fn delete_workflow(&self, id: Uuid) -> ();
    fn get_workflow(&self, id: Uuid) -> Workflow;
    fn list_workflows(&self, filter: &WorkflowFilter, page: &PageRequest) -> Page<Workflow>;
    fn workflows_for_event(&self, event_type: &str) -> Vec<Workflow>;
    fn get_snapshot(&self, snapshot_id: &str) -> Arc<WorkflowDefinition>;
});

through_fuse!(ExecutionStore {
    fn create_execution(&self, execution: Execution) -> Execution;
    fn get_execution(&self, id: Uuid) -> Execution;
    fn list_executions(&self, filter: &ExecutionFilter, page: &PageRequest) -> Page<Execution>;
    fn count_by_status(&self) -> Vec<(ExecutionStatus, u64)>;
    fn count_in_flight(&self) -> Vec<(ExecutionStatus, u64)>;
    fn overdue_gates(&self, now: Timestamp) -> Overdue;
    fn list_gated(&self, page: &PageRequest) -> Page<Execution>;
    fn list_steps(&self, execution_id: Uuid) -> Vec<StepRecord>;
    fn context_trail(&self, execution_id: Uuid) -> Vec<ContextUndo>;
    fn begin_step(&self, execution_id: Uuid, owner: &str, expected_version: i64, record: StepRecord, now: Timestamp) -> i64;
    fn commit_step(&self, commit: StepCommit) -> Committed;
    fn renew_lease(&self, id: Uuid, owner: &str, expires_at: Timestamp) -> ();
    fn release_lease(&self, id: Uuid, owner: &str, now: Timestamp) -> ();
    fn claim_expired_leases(&self, now: Timestamp, claim: &LeaseClaim, limit: u32) -> Vec<Execution>;
    fn claim_due_gates(&self, now: Timestamp, claim: &LeaseClaim, limit: u32) -> Vec<Execution>;
    fn time_out_overdue(&self, now: Timestamp, limit: u32) -> Vec<Execution>;
    fn request_pause(&self, id: Uuid, actor: Option<&str>, reason: Option<&str>, now: Timestamp) -> Execution;
    fn resume_manual(&self, id: Uuid, actor: Option<&str>, data: Value, claim: &LeaseClaim, now: Timestamp) -> Execution;
    fn migrate_execution(&self, id: Uuid, migration: &Migration, actor: Option<&str>, now: Timestamp) -> Execution;
    fn purge_ended(&self, purge: &Purge, limit: u32) -> Vec<Purged>;
    fn purgeable(&self, purge: &Purge, limit: u32) -> Vec<Purged>;
    fn retry_execution(&self, id: Uuid, retry: &Retry, actor: Option<&str>, claim: &LeaseClaim, now: Timestamp) -> Execution;
    fn cancel_execution(&self, id: Uuid, actor: Option<&str>, reason: Option<&str>, now: Timestamp) -> Execution;
    fn claim_wait(&self, id: Uuid, expected_version: Option<i64>, event: &Event, actor: Option<&str>, claim: &LeaseClaim, now: Timestamp) -> Execution;
    fn waiting_for_event(&self, event_type: &str, after: Option<Uuid>, limit: u32, now: Timestamp) -> Vec<Execution>;
    fn first_of_shapes(&self, event_type: &str) -> Vec<WaitShape>;
    fn waiting_at_first_of(&self, event_type: &str, keys: &[WaitKey], after: Option<Uuid>, limit: u32, now: Timestamp) -> Vec<Execution>;
    fn wait_shapes(&self, event_type: &str) -> Vec<WaitShape>;
    fn waiting_for_keys(&self, event_type: &str, keys: &[WaitKey], after: Option<Uuid>, limit: u32, now: Timestamp) -> Vec<Execution>;
    fn quarantine_execution(&self, id: Uuid, detail: &str, now: Timestamp) -> Execution;
    fn list_quarantined(&self, page: &PageRequest) -> Page<Quarantined>;
});

#[async_trait]
impl ApprovalStore for CrashStore {
    async fn count_pending_approvals(&self) -> Result<u64> {
        self.fuse
            .run(
                "count_pending_approvals",
                self.inner.count_pending_approvals(),
            )
            .await
    }

    async fn get_approval(&self, id: Uuid) -> Result<ApprovalRequest> {
        self.fuse
            .run("get_approval", self.inner.get_approval(id))
            .await
    }

    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>> {
        self.fuse
            .run("list_approvals", self.inner.list_approvals(filter, page))
            .await
    }

    async fn decide_request(
        &self,
        request: tollgate_store::decision_batch::DecideRequest,
    ) -> Result<Decided> {
        self.fuse
            .run("decide", self.inner.decide_request(request))
            .await
    }

    async fn add_comment(&self, comment: &tollgate_model::records::ApprovalComment) -> Result<()> {
        self.fuse
            .run("add_comment", self.inner.add_comment(comment))
            .await
    }

    async fn list_comments(
        &self,
        approval_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<tollgate_model::records::ApprovalComment>> {
        self.fuse
            .run("list_comments", self.inner.list_comments(approval_id, page))
            .await
    }

    async fn assign_approval(
        &self,
        approval_id: Uuid,
        change: &tollgate_store::AssignmentChange,
        now: Timestamp,
    ) -> Result<Option<tollgate_model::records::ApprovalAssignment>> {
        self.fuse
            .run(
                "assign_approval",
                self.inner.assign_approval(approval_id, change, now),
            )
            .await
    }

    async fn approval_pin(&self, approval_id: Uuid) -> Result<tollgate_store::ApprovalPin> {
        self.fuse
            .run("approval_pin", self.inner.approval_pin(approval_id))
            .await
    }

    async fn slas(&self, ids: &[Uuid]) -> Result<Vec<tollgate_model::records::ApprovalSla>> {
        self.fuse.run("slas", self.inner.slas(ids)).await
    }

    async fn count_overdue_approvals(&self, now: Timestamp) -> Result<u64> {
        self.fuse
            .run(
                "count_overdue_approvals",
                self.inner.count_overdue_approvals(now),
            )
            .await
    }

    async fn assignments(
        &self,
        ids: &[Uuid],
    ) -> Result<Vec<tollgate_model::records::ApprovalAssignment>> {
        self.fuse
            .run("assignments", self.inner.assignments(ids))
            .await
    }

    async fn assignments_and_slas(
        &self,
        ids: &[Uuid],
    ) -> Result<(
        Vec<tollgate_model::records::ApprovalAssignment>,
        Vec<tollgate_model::records::ApprovalSla>,
    )> {
        self.fuse
            .run("assignments_and_slas", self.inner.assignments_and_slas(ids))
            .await
    }

    async fn fire_due_rungs(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<tollgate_model::records::ApprovalRung>> {
        self.fuse
            .run("fire_due_rungs", self.inner.fire_due_rungs(now, limit))
            .await
    }

    async fn list_rungs(
        &self,
        approval_id: Uuid,
    ) -> Result<Vec<tollgate_model::records::ApprovalRung>> {
        self.fuse
            .run("list_rungs", self.inner.list_rungs(approval_id))
            .await
    }
}

through_fuse!(EventStore {
    fn insert_event(&self, event: Event) -> EventInsert;
    fn insert_event_starting(&self, event: Event, starts: Vec<Starting>) -> EventInsert;
    fn deliver_event(&self, event: Event, expected_version: Option<i64>, claim: &LeaseClaim, now: Timestamp) -> Delivery;
    fn set_event_outcome(&self, id: Uuid, started: Vec<Uuid>, resumed: Vec<Uuid>) -> Event;
    fn get_event(&self, id: Uuid) -> Event;
    fn events_for_wait(&self, event_type: &str, since: Timestamp, execution_id: Uuid, after: Option<(Timestamp, Uuid)>, limit: u32) -> Vec<Event>;
    fn undelivered_events(&self, received_before: Timestamp, limit: u32) -> Vec<Event>;
    fn mark_events_delivered(&self, ids: &[Uuid]) -> ();
    fn purge_events(&self, purge: &EventPurge, limit: u32) -> u64;
    fn event_shapes(&self, event_type: Option<&str>) -> Vec<EventShape>;
    fn add_event_shape(&self, event_type: &str, shape: &str, fields: &[String]) -> ();
    fn events_to_key(&self, event_type: &str, after: Option<(Timestamp, Uuid)>, up_to: Timestamp, limit: u32) -> Vec<Event>;
    fn add_event_keys(&self, event_type: &str, shape: &str, keys: &[EventKey], from: Option<(Timestamp, Uuid)>, through: (Timestamp, Uuid)) -> ();
    fn keyed_events_for_wait(&self, event_type: &str, shape: &str, hash: &str, since: Timestamp, execution_id: Uuid, after: Option<(Timestamp, Uuid)>, through: (Timestamp, Uuid), limit: u32) -> Vec<Event>;
});

through_fuse!(ResumeRequestStore {
    fn record_resume_request(&self, request: ResumeRequest) -> ();
    fn list_resume_requests(&self, execution_id: Uuid) -> Vec<ResumeRequest>;
});

through_fuse!(RecordStore {
    fn get_record(&self, entity: &str, entity_id: &str) -> Record;
});

through_fuse!(NotificationStore {
    fn put_notification(&self, notification: Notification) -> ();
    fn list_notifications(&self, filter: &NotificationFilter, page: &PageRequest) -> Page<Notification>;
    fn claim_notifications(&self, now: Timestamp, claim: &LeaseClaim, limit: u32) -> Vec<Notification>;
    fn settle_notification(&self, id: Uuid, owner: &str, now: Timestamp, settle: &Settle) -> ();
});

through_fuse!(ApiKeyStore {
    fn create_api_key(&self, key: ApiKey) -> ApiKey;
    fn list_api_keys(&self, page: &PageRequest) -> Page<ApiKey>;
    fn delete_api_key(&self, id: Uuid) -> ();
    fn find_api_key(&self, key_hash: &str) -> Option<ApiKey>;
});

through_fuse!(ScheduleStore {
    fn create_schedule(&self, schedule: Schedule) -> Schedule;
    fn get_schedule(&self, id: Uuid) -> Schedule;
    fn list_schedules(&self, filter: &ScheduleFilter, page: &PageRequest) -> Page<Schedule>;
    fn update_schedule(&self, schedule: Schedule) -> Schedule;
    fn delete_schedule(&self, id: Uuid) -> ();
    fn claim_ticks(&self, now: Timestamp, claim: &LeaseClaim, limit: u32) -> Vec<ClaimedTick>;
    fn start_tick(&self, tick_id: Uuid, owner: &str, execution: Execution, now: Timestamp) -> Execution;
    fn fail_tick(&self, tick_id: Uuid, owner: &str, error: &str, now: Timestamp) -> ();
    fn next_fire_at(&self) -> Option<Timestamp>;
    fn list_ticks(&self, schedule_id: Uuid, page: &PageRequest) -> Page<TickView>;
});

through_fuse!(SessionStore {
    fn create_session(&self, session: ConsoleSession, now: Timestamp) -> ();
    fn get_session(&self, id_hash: &str, now: Timestamp) -> Option<ConsoleSession>;
    fn delete_session(&self, id_hash: &str) -> ();
});

through_fuse!(DelegationStore {
    fn create_delegation(&self, delegation: &tollgate_model::records::Delegation) -> ();
    fn list_delegations(&self, subject: Option<&str>, page: &PageRequest) -> Page<tollgate_model::records::Delegation>;
    fn revoke_delegation(&self, id: Uuid, now: Timestamp) -> tollgate_model::records::Delegation;
    fn delegations_to(&self, delegate: &str, now: Timestamp) -> Vec<tollgate_model::records::Delegation>;
});

through_fuse!(WorkerStore {
    fn heartbeat(&self, worker_id: &str, started_at: Timestamp, now: Timestamp, claimed: u64) -> ();
    fn list_workers(&self, since: Timestamp) -> Vec<tollgate_model::records::WorkerBeat>;
});

through_fuse!(Health {
    fn ping(&self) -> ();
});
