//! The step interpreter: starts executions and advances claimed ones until they stop at a
//! gate, release their lease for a retry backoff, or end.
//!
//! Every change goes through the store as one atomic call guarded by lease owner and
//! version (docs/ARCHITECTURE.md, "The flow of an execution"): a step with side effects is recorded `running` before it acts,
//! then its completion is committed with cursor, context and effects. A worker that loses
//! its lease (it was too slow, or the execution was cancelled) stops at its next write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tollgate_model::definition::{ApprovalSpec, OnTimeout, Required, Step, StepKind};
use tollgate_model::records::{
    ApprovalRequest, ApprovalStatus, Cursor, Execution, ExecutionError, Gate, Lease, StepError,
    StepRecord, StepStatus, Timestamp, Wake, Workflow,
};
use tollgate_model::{
    ErrorKind, ExecutionResult, ExecutionStatus, PauseReason, WorkflowDefinition,
};
use tollgate_store::{Committed, Effect, LeaseClaim, Starting, StepCommit, Store, Transition};
use tracing::Instrument;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::condition::CompiledCondition;
use crate::error::{Error, Result};
use crate::notify::{Notifier, RecordingNotifier};
use crate::path::set_path;
use crate::provider::{ContextProvider, NoProviders};
use crate::steps::{Body, Env};
use crate::template::{redact_secrets, render_value, Mode, Scope, Secrets, Template};

/// Early events are looked up in pages of this many.
const EARLY_EVENT_PAGE: u32 = 500;

/// Name under which context loading is recorded (in `visits` and as a step record).
pub(crate) const CONTEXT_STEP: &str = "$context";

/// Tuning of an [`Engine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// This worker's id, the owner name of its leases. Unique per process.
    pub worker_id: String,
    /// How long a lease lasts; a heartbeat renews it every third of that while a step
    /// runs, so a dead worker's executions are reclaimed within one lease.
    pub lease: Duration,
    /// Default time limit of an HTTP sub-action without its own `timeout`.
    pub http_timeout: Duration,
    /// Recorded response bodies are cut to this many bytes.
    pub max_response_bytes: usize,
    /// Retry waits up to this long happen in place; longer ones release the lease and
    /// let any worker continue when the wait is over.
    pub inline_retry_max: Duration,
    /// Values for `{{secrets.NAME}}`.
    pub secrets: Secrets,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            worker_id: format!(
                "worker-{}-{}",
                std::process::id(),
                &Uuid::new_v4().simple().to_string()[..8]
            ),
            lease: Duration::from_secs(30),
            http_timeout: Duration::from_secs(30),
            max_response_bytes: 64 * 1024,
            inline_retry_max: Duration::from_secs(2),
            secrets: Secrets::new(),
        }
    }
}

/// Feeds the process's metrics recorder (a no-op unless the embedding program installs
/// one): step durations by step type, executions ended by status, gates entered.
fn record_commit_metrics(records: &[(String, Option<i64>)], transition: &Transition) {
    for (step_type, duration) in records {
        if let Some(ms) = duration {
            metrics::histogram!("tollgate_step_duration_seconds", "step_type" => step_type.clone())
                .record(*ms as f64 / 1000.0);
        }
    }
    match transition {
        Transition::Finish { status, .. } => {
            metrics::counter!("tollgate_executions_ended_total", "status" => status.to_string())
                .increment(1);
        }
        Transition::Gate { gate, .. } => {
            metrics::counter!("tollgate_gates_entered_total", "reason" => gate.reason.as_str())
                .increment(1);
        }
        Transition::Continue | Transition::Release { .. } => {}
    }
}

/// What starts an execution.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// The workflow (its current snapshot is pinned).
    pub workflow: Workflow,
    /// Event type, or `manual`.
    pub trigger_event: String,
    /// The triggering payload.
    pub payload: Value,
    /// Stored id of the triggering event.
    pub event_id: Option<Uuid>,
    /// The sender's `event_id`.
    pub event_key: Option<String>,
    /// The sending system.
    pub source: Option<String>,
    /// Subject of the key that sent the event or manual execute (the requester of its
    /// approvals).
    pub requested_by: Option<String>,
}

/// The interpreter. Cheap to clone; clones share caches and connections.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("worker_id", &self.inner.options.worker_id)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) notifier: Arc<dyn Notifier>,
    pub(crate) provider: Arc<dyn ContextProvider>,
    pub(crate) http: reqwest::Client,
    pub(crate) options: EngineOptions,
    cache: OnceMap<Arc<Compiled>>,
}

/// Values loaded once per key. Concurrent callers for a key being loaded wait for that
/// load: the first burst of executions of a definition costs one store read, not one
/// each (30 reads at the approval benchmark's start, before this).
pub(crate) struct OnceMap<V> {
    cells: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<V>>>>,
}

impl<V: Clone> OnceMap<V> {
    fn new() -> Self {
        Self {
            cells: Mutex::new(HashMap::new()),
        }
    }

    fn cells(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::OnceCell<V>>>> {
        self.cells.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value of `key`, when loaded already.
    fn get(&self, key: &str) -> Option<V> {
        self.cells().get(key).and_then(|cell| cell.get().cloned())
    }

    /// The value of `key`, loaded by `load` unless loaded or being loaded already. A
    /// failed load is the error of the callers that waited for it; the next caller
    /// loads again, and a key that never loads leaves nothing behind.
    async fn get_or_load<F, E>(&self, key: &str, load: impl FnOnce() -> F) -> Result<V, E>
    where
        F: std::future::Future<Output = Result<V, E>>,
    {
        let cell = self.cells().entry(key.to_owned()).or_default().clone();
        let loaded = cell.get_or_try_init(load).await.cloned();
        if loaded.is_err() {
            let mut cells = self.cells();
            if cells
                .get(key)
                .is_some_and(|c| Arc::ptr_eq(c, &cell) && !c.initialized())
            {
                cells.remove(key);
            }
        }
        loaded
    }
}

/// A definition with its conditions compiled, shared by every execution pinned to it.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) definition: Arc<WorkflowDefinition>,
    pub(crate) conditions: HashMap<String, CompiledCondition>,
}

impl Compiled {
    fn new(definition: Arc<WorkflowDefinition>) -> Result<Self> {
        fn collect(steps: &[Step], out: &mut HashMap<String, CompiledCondition>) -> Result<()> {
            for step in steps {
                if let StepKind::Condition { condition, .. } = &step.kind {
                    let compiled = CompiledCondition::compile(condition)
                        .map_err(|e| Error::Definition(e.to_string()))?;
                    out.insert(step.id.clone(), compiled);
                }
                collect(step.children(), out)?;
            }
            Ok(())
        }
        let mut conditions = HashMap::new();
        collect(&definition.steps, &mut conditions)?;
        Ok(Self {
            definition,
            conditions,
        })
    }
}

/// Builds an [`Engine`] around a store.
#[allow(missing_debug_implementations)]
pub struct EngineBuilder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    notifier: Arc<dyn Notifier>,
    provider: Arc<dyn ContextProvider>,
    options: EngineOptions,
}

impl EngineBuilder {
    /// Uses this clock (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this notifier (default: record and log).
    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = notifier;
        self
    }

    /// Uses this context provider (default: none configured).
    pub fn context_provider(mut self, provider: Arc<dyn ContextProvider>) -> Self {
        self.provider = provider;
        self
    }

    /// Uses these options.
    pub fn options(mut self, options: EngineOptions) -> Self {
        self.options = options;
        self
    }

    /// The engine.
    pub fn build(self) -> Result<Engine> {
        let http = reqwest::Client::builder()
            .timeout(self.options.http_timeout)
            .build()
            .map_err(|e| Error::Definition(format!("cannot build the HTTP client: {e}")))?;
        Ok(Engine {
            inner: Arc::new(Inner {
                store: self.store,
                clock: self.clock,
                notifier: self.notifier,
                provider: self.provider,
                http,
                options: self.options,
                cache: OnceMap::new(),
            }),
        })
    }
}

impl Engine {
    /// Starts building an engine on `store`.
    pub fn builder(store: Arc<dyn Store>) -> EngineBuilder {
        EngineBuilder {
            store,
            clock: Arc::new(SystemClock),
            notifier: Arc::new(RecordingNotifier),
            provider: Arc::new(NoProviders),
            options: EngineOptions::default(),
        }
    }

    /// This engine's worker id (the owner of the leases it takes).
    pub fn worker_id(&self) -> &str {
        &self.inner.options.worker_id
    }

    /// The store it works on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The clock it reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// A lease claim for this worker, from now.
    pub fn claim(&self) -> LeaseClaim {
        LeaseClaim {
            owner: self.inner.options.worker_id.clone(),
            expires_at: self.lease_until(),
        }
    }

    /// How long this engine's leases last (renewed every third of it while it works).
    pub fn lease(&self) -> Duration {
        self.inner.options.lease
    }

    fn lease_until(&self) -> Timestamp {
        self.inner.clock.now()
            + chrono::TimeDelta::from_std(self.inner.options.lease)
                .unwrap_or(chrono::TimeDelta::seconds(30))
    }

    /// The compiled definition, when this process has compiled it already.
    fn compiled_if_cached(&self, snapshot_id: &str) -> Option<Arc<Compiled>> {
        self.inner.cache.get(snapshot_id)
    }

    pub(crate) async fn compiled(&self, snapshot_id: &str) -> Result<Arc<Compiled>> {
        self.inner
            .cache
            .get_or_load(snapshot_id, || async {
                let definition = self.inner.store.get_snapshot(snapshot_id).await?;
                Ok(Arc::new(Compiled::new(definition)?))
            })
            .await
    }

    /// Durably creates a `running` execution leased by this worker, without running it.
    /// Callers that cannot wait call this and [`Self::advance`] later (or let a worker
    /// reclaim it when the lease lapses).
    pub async fn create(&self, request: StartRequest) -> Result<Execution> {
        let execution = self.prepare(request);
        tracing::info!(execution_id = %execution.id, workflow = %execution.workflow_key, "execution created");
        let created = self.inner.store.create_execution(execution).await?;
        metrics::counter!("tollgate_executions_started_total").increment(1);
        Ok(created)
    }

    /// The execution [`Self::create`] would store, without storing it: for callers that
    /// store it atomically with something else (a schedule's tick). It is `running` and
    /// leased by this worker, so the caller may [`Self::advance`] it once stored.
    pub fn prepare(&self, request: StartRequest) -> Execution {
        let now = self.inner.clock.now();
        let workflow = &request.workflow;
        let definition = &workflow.definition;
        let first = definition
            .steps
            .first()
            .map(|s| Cursor::new(s.id.clone(), 1));
        let mut context = match &request.payload {
            Value::Object(map) => Value::Object(map.clone()),
            _ => Value::Object(Map::new()),
        };
        if let Value::Object(map) = &mut context {
            map.insert("event".into(), request.payload.clone());
            map.insert(
                "trigger".into(),
                json!({
                    "event_type": request.trigger_event,
                    "event_id": request.event_key.clone().or_else(|| request.event_id.map(|id| id.to_string())),
                    "source": request.source,
                    "received_at": now,
                }),
            );
        }
        Execution {
            id: Uuid::now_v7(),
            workflow_id: workflow.id,
            workflow_key: definition.workflow_id.clone(),
            workflow_version: definition.version.clone(),
            snapshot_id: workflow.snapshot_id.clone(),
            status: ExecutionStatus::Running,
            result: None,
            trigger_event: request.trigger_event,
            trigger_payload: request.payload,
            context,
            cursor: first,
            visits: std::collections::BTreeMap::new(),
            steps_run: 0,
            version: 1,
            lease: Some(Lease {
                owner: Some(self.inner.options.worker_id.clone()),
                expires_at: self.lease_until(),
            }),
            gate: None,
            wake: None,
            pause_requested: false,
            deadline: definition.timeout.map(|t| now + t.as_chrono()),
            resume_count: 0,
            last_resumed_at: None,
            started_at: now,
            completed_at: None,
            updated_at: now,
            error: None,
            requested_by: request.requested_by,
            consumed_events: Vec::new(),
        }
    }

    /// Creates an execution and runs it until it stops at a gate or ends.
    pub async fn start(&self, request: StartRequest) -> Result<Execution> {
        let execution = self.create(request).await?;
        self.advance(execution).await
    }

    /// Runs a [`Self::prepare`]d execution ahead of storage: its side-effect-free steps
    /// run in memory up to the first one that needs it stored (a side effect, a wait, a
    /// context load, a retry) or to its first gate or its end. The caller stores the
    /// result in one transaction with whatever starts it
    /// ([`tollgate_store::EventStore::insert_event_starting`]), so an event and its
    /// executions' first steps are durable together or not at all; a crash before that
    /// loses nothing that running again would not redo identically.
    pub async fn run_ahead(&self, execution: Execution) -> Result<Ahead> {
        let compiled = self.compiled(&execution.snapshot_id).await?;
        let mut run = Run::new(self, execution, compiled, true);
        let span = tracing::info_span!("execution", execution_id = %run.exec.id, workflow = %run.exec.workflow_key, worker = %self.inner.options.worker_id);
        run.drive().instrument(span).await?;
        Ok(run.into_ahead())
    }

    /// Continues, in memory, an execution a decision has just claimed for this worker
    /// (its approval wake signal stored on it): resolves the decision and runs the
    /// side-effect-free steps after it, like [`Self::run_ahead`], so that the decision
    /// and those steps are stored in one transaction
    /// ([`tollgate_store::ApprovalStore::decide_then`]). Synchronous because it runs
    /// inside that transaction; `None` when it cannot run without the store (the
    /// definition is not compiled in this process yet, or a step would wait for I/O) —
    /// then the claimed execution is stored and advanced as usual.
    pub fn continue_ahead(&self, claimed: &Execution) -> Option<Ahead> {
        let compiled = self.compiled_if_cached(&claimed.snapshot_id)?;
        let mut run = Run::new(self, claimed.clone(), compiled, true);
        let span = tracing::info_span!("execution", execution_id = %run.exec.id, workflow = %run.exec.workflow_key, worker = %self.inner.options.worker_id);
        let polled = {
            // Running ahead never waits on I/O (it stops before any step that would), so
            // one poll finishes it; a pending poll means it would have, and is dropped.
            let drive = std::pin::pin!(run.drive().instrument(span));
            std::future::Future::poll(
                drive,
                &mut std::task::Context::from_waker(std::task::Waker::noop()),
            )
        };
        match polled {
            std::task::Poll::Ready(Ok(())) => Some(run.into_ahead()),
            std::task::Poll::Ready(Err(err)) => {
                tracing::debug!(execution_id = %claimed.id, "not continued ahead: {err}");
                None
            }
            std::task::Poll::Pending => None,
        }
    }

    /// Runs an execution this worker holds (`running`, leased by [`Self::worker_id`])
    /// until it stops at a gate, waits for a retry, or ends; returns it as stored then.
    /// [`Error::Lost`] when another worker took it over or it was cancelled meanwhile.
    pub async fn advance(&self, execution: Execution) -> Result<Execution> {
        let id = execution.id;
        let compiled = self.compiled(&execution.snapshot_id).await?;
        let mut run = Run::new(self, execution, compiled, false);
        let span = tracing::info_span!("execution", execution_id = %id, workflow = %run.exec.workflow_key, worker = %self.inner.options.worker_id);
        match run.drive().instrument(span).await {
            // After our own last commit the local copy is the stored row; otherwise (we
            // never held it, or stopped right after starting a step) read it.
            Ok(()) if run.exact => Ok(run.exec),
            Ok(()) => Ok(self.inner.store.get_execution(id).await?),
            Err(Error::Store(err)) if err.is_conflict() => {
                tracing::info!(execution_id = %id, "execution taken over or ended elsewhere: {err}");
                Err(Error::Lost(id))
            }
            Err(err) => Err(err),
        }
    }
}

/// An execution run ahead of storage by [`Engine::run_ahead`].
#[derive(Debug)]
pub struct Ahead {
    /// What to store: the execution as it stands, with its step records and approval.
    pub starting: Starting,
    metrics: Vec<(String, Option<i64>)>,
    ended_or_gated: Option<Transition>,
}

impl Ahead {
    /// Records the metrics of the steps it ran; call once it is stored.
    pub fn record_stored(&self) {
        if let Some(transition) = &self.ended_or_gated {
            record_commit_metrics(&self.metrics, transition);
        }
    }

    /// What to store, leaving the execution here (the records and the approval are moved
    /// out, not copied).
    pub fn take_starting(&mut self) -> Starting {
        Starting {
            execution: self.starting.execution.clone(),
            records: std::mem::take(&mut self.starting.records),
            approval: self.starting.approval.take(),
        }
    }

    /// True when the creating worker should go on advancing it once stored (it stopped
    /// before a step that needs the stored execution, still leased by this worker).
    pub fn needs_advancing(&self) -> bool {
        let e = &self.starting.execution;
        e.status == ExecutionStatus::Running && e.lease.as_ref().is_some_and(|l| l.owner.is_some())
    }
}

/// Side-effect-free steps committed together at most.
const MAX_PURE_BATCH: usize = 100;

/// One advancement of one execution: the local copy and what it is pinned to.
struct Run<'e> {
    engine: &'e Engine,
    exec: Execution,
    compiled: Arc<Compiled>,
    /// Records of side-effect-free steps run since the last commit. They are committed
    /// with the next commit (which any side effect, gate or end forces); a crash before
    /// that only loses steps that rerun identically from the committed cursor.
    pending: Vec<StepRecord>,
    /// True when `exec` is known to equal the stored row: right after one of our
    /// commits, until another write (a step start) changes it.
    exact: bool,
    /// Running ahead of storage ([`Engine::run_ahead`]): the execution is not stored yet,
    /// so only side-effect-free steps run, and the first commit is kept here instead of
    /// being sent — it stops the run.
    ahead: Option<Deferred>,
}

/// The commit a run ahead stopped with, and the metrics to record once it is stored.
#[derive(Default)]
struct Deferred {
    commit: Option<StepCommit>,
    metrics: Vec<(String, Option<i64>)>,
}

/// A step attempt's outcome at the top level.
enum Outcome {
    /// Continue at `next` (or end when `None`).
    Done {
        body: Body,
        next: Option<String>,
        consumed: Vec<Uuid>,
    },
    /// The attempt failed.
    Failed { body: Body, error: StepError },
    /// Stop at a gate.
    Gate {
        body: Body,
        gate: Gate,
        approval: Option<Box<ApprovalRequest>>,
    },
}

impl<'e> Run<'e> {
    fn inner(&self) -> &Inner {
        &self.engine.inner
    }

    fn now(&self) -> Timestamp {
        self.inner().clock.now()
    }

    fn definition(&self) -> &WorkflowDefinition {
        &self.compiled.definition
    }

    /// Whether the next thing to do can run before the execution is stored: a step (or
    /// the end) that touches nothing outside the engine, cannot wait or sleep, and reads
    /// nothing stored — so that running it later, from the stored cursor, would do the
    /// same. Context loads, side effects, waits (which look for early events), retries
    /// and step timeouts wait for the stored execution.
    fn can_run_ahead(&self) -> bool {
        // A decision's signal resolves without I/O ([`Engine::continue_ahead`]); other
        // signals consume events or are rare.
        if self.exec.pause_requested
            || self
                .exec
                .wake
                .as_ref()
                .is_some_and(|w| !matches!(w, Wake::Approval { .. }))
        {
            return false;
        }
        if !self.definition().context.load.is_empty()
            && !self.exec.visits.contains_key(CONTEXT_STEP)
        {
            return false;
        }
        let Some(cursor) = &self.exec.cursor else {
            return true;
        };
        self.compiled
            .definition
            .step(&cursor.step_id)
            .is_none_or(|step| {
                !step.has_side_effects()
                    && !matches!(step.kind, StepKind::Wait { .. })
                    && step.retry.is_none()
                    && step.timeout.is_none()
            })
    }

    /// A run of `exec`; `ahead` runs it ahead of storage (see [`Engine::run_ahead`]).
    fn new(engine: &'e Engine, exec: Execution, compiled: Arc<Compiled>, ahead: bool) -> Self {
        Self {
            engine,
            exec,
            compiled,
            pending: Vec::new(),
            exact: false,
            ahead: ahead.then(Deferred::default),
        }
    }

    /// The run ahead as it stopped (see [`Engine::run_ahead`]).
    fn into_ahead(mut self) -> Ahead {
        let deferred = self.ahead.take().unwrap_or_default();
        let (records, approval, transition) = match deferred.commit {
            Some(commit) => {
                let approval = match &commit.transition {
                    Transition::Gate { approval, .. } => approval.as_deref().cloned(),
                    _ => None,
                };
                (commit.records, approval, Some(commit.transition))
            }
            None => (Vec::new(), None, None),
        };
        Ahead {
            starting: Starting {
                execution: self.exec,
                records,
                approval,
            },
            metrics: deferred.metrics,
            ended_or_gated: transition,
        }
    }

    fn owned_by_me(&self) -> bool {
        self.exec.status == ExecutionStatus::Running
            && self.exec.lease.as_ref().and_then(|l| l.owner.as_deref())
                == Some(self.inner().options.worker_id.as_str())
    }

    async fn drive(&mut self) -> Result<()> {
        loop {
            if !self.owned_by_me() {
                return Ok(());
            }
            if let Some(deferred) = &self.ahead {
                if deferred.commit.is_some() || !self.can_run_ahead() {
                    if deferred.commit.is_none() && !self.pending.is_empty() {
                        self.commit(Vec::new(), Vec::new(), Vec::new(), Transition::Continue)
                            .await?;
                    }
                    return Ok(());
                }
            }
            let now = self.now();
            if let Some(deadline) = self.exec.deadline.filter(|d| *d <= now) {
                let message = format!("the workflow deadline {} passed", deadline.to_rfc3339());
                return self
                    .finish(
                        ExecutionStatus::TimedOut,
                        Some((ErrorKind::TimedOut, message)),
                        Vec::new(),
                    )
                    .await;
            }
            if self.exec.wake.is_some() {
                self.resolve_wake().await?;
                continue;
            }
            if self.exec.pause_requested {
                return self.pause_here().await;
            }
            if !self.definition().context.load.is_empty()
                && !self.exec.visits.contains_key(CONTEXT_STEP)
            {
                self.load_context().await?;
                continue;
            }
            let Some(cursor) = self.exec.cursor.clone() else {
                return self
                    .finish(ExecutionStatus::Completed, None, Vec::new())
                    .await;
            };
            let max_steps = self.definition().max_steps();
            if self.exec.steps_run >= max_steps {
                let message = format!("the execution ran {max_steps} steps, the limit of this workflow (max_steps); it is probably looping");
                return self
                    .finish(
                        ExecutionStatus::Failed,
                        Some((ErrorKind::MaxStepsExceeded, message)),
                        Vec::new(),
                    )
                    .await;
            }
            // One span per step attempt: every log line of the step (HTTP calls,
            // retries, the commit) carries the execution and the step.
            let span = tracing::info_span!("step", execution_id = %self.exec.id, step_id = %cursor.step_id, attempt = cursor.attempt);
            if !self.run_step(cursor).instrument(span).await? {
                return Ok(());
            }
        }
    }

    /// Commits `transition` with the local state; updates the local copy.
    async fn commit(
        &mut self,
        records: Vec<StepRecord>,
        effects: Vec<Effect>,
        consumed: Vec<Uuid>,
        transition: Transition,
    ) -> Result<Committed> {
        let now = self.now();
        let records = if self.pending.is_empty() {
            records
        } else {
            let mut all = std::mem::take(&mut self.pending);
            all.extend(records);
            all
        };
        let commit_records: Vec<(String, Option<i64>)> = records
            .iter()
            .map(|r| (r.step_type.clone(), r.duration_ms()))
            .collect();
        let commit = StepCommit {
            execution_id: self.exec.id,
            owner: self.inner().options.worker_id.clone(),
            expected_version: self.exec.version,
            records,
            context: self.exec.context.clone(),
            cursor: self.exec.cursor.clone(),
            visits: self.exec.visits.clone(),
            steps_run: self.exec.steps_run,
            result: self.exec.result,
            consumed_events: consumed.clone(),
            effects,
            transition: transition.clone(),
            lease_expires_at: self.engine.lease_until(),
            now,
        };
        let lease_expires_at = commit.lease_expires_at;
        let committed = match self.ahead.as_mut() {
            // Not stored yet: keep the commit for the insert, and stop (see `drive`).
            Some(deferred) => {
                if !commit.effects.is_empty() || !commit.consumed_events.is_empty() {
                    return Err(Error::Store(tollgate_store::Error::Invalid(
                        "a step with effects cannot run ahead of storage".into(),
                    )));
                }
                deferred.commit = Some(commit);
                deferred.metrics = commit_records;
                Committed {
                    version: self.exec.version + 1,
                    pause_requested: false,
                }
            }
            None => {
                let committed = self.inner().store.commit_step(commit).await?;
                record_commit_metrics(&commit_records, &transition);
                committed
            }
        };
        // The stored row is now exactly what the store's rules make of the row we held
        // and this commit (the compare-and-set proved nobody else changed it): apply the
        // same rules to the local copy instead of reading the row back.
        let shadow = StepCommit {
            execution_id: self.exec.id,
            owner: self.inner().options.worker_id.clone(),
            expected_version: self.exec.version,
            records: Vec::new(),
            context: std::mem::take(&mut self.exec.context),
            cursor: self.exec.cursor.take(),
            visits: std::mem::take(&mut self.exec.visits),
            steps_run: self.exec.steps_run,
            result: self.exec.result,
            consumed_events: consumed,
            effects: Vec::new(),
            transition,
            lease_expires_at,
            now,
        };
        match tollgate_store::rules::apply_commit(&mut self.exec, shadow) {
            Ok(_) if self.exec.version == committed.version => {
                self.exec.pause_requested = committed.pause_requested;
                self.exact = true;
            }
            // Cannot happen while the stores follow the rules; then the row is read back.
            _ => {
                tracing::warn!(execution_id = %self.exec.id, "local copy diverged from the committed row; reading it back");
                self.exec = self.inner().store.get_execution(self.exec.id).await?;
                self.exact = true;
            }
        }
        Ok(committed)
    }

    async fn finish(
        &mut self,
        status: ExecutionStatus,
        error: Option<(ErrorKind, String)>,
        records: Vec<StepRecord>,
    ) -> Result<()> {
        if status == ExecutionStatus::Completed && self.exec.result.is_none() {
            self.exec.result = Some(ExecutionResult::Executed);
        }
        let error = error.map(|(kind, message)| ExecutionError { kind, message });
        if let Some(e) = &error {
            tracing::warn!(execution_id = %self.exec.id, status = %status, "execution ended: {}", e.message);
        } else {
            tracing::info!(execution_id = %self.exec.id, status = %status, result = ?self.exec.result, "execution ended");
        }
        self.commit(
            records,
            Vec::new(),
            Vec::new(),
            Transition::Finish { status, error },
        )
        .await?;
        Ok(())
    }

    async fn pause_here(&mut self) -> Result<()> {
        let (step_id, visit) = self
            .exec
            .cursor
            .as_ref()
            .map(|c| (c.step_id.clone(), c.visit))
            .unwrap_or_default();
        let gate = Gate {
            reason: PauseReason::Manual,
            step_id,
            visit,
            paused_at: self.now(),
            deadline: None,
            event: None,
            event_match: None,
            approval_id: None,
            note: None,
        };
        tracing::info!(execution_id = %self.exec.id, "paused at a step boundary on request");
        self.commit(
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Transition::Gate {
                gate,
                approval: None,
            },
        )
        .await?;
        Ok(())
    }

    fn scope<'a>(&'a self, context: &'a Value, step_id: Option<&'a str>) -> Scope<'a> {
        Scope {
            context,
            now: self.now(),
            execution_id: Some(self.exec.id),
            workflow_id: Some(&self.exec.workflow_key),
            step_id,
            secrets: Some(&self.inner().options.secrets),
            locals: &[],
        }
    }

    async fn load_context(&mut self) -> Result<()> {
        let started = self.now();
        let mut context = self.exec.context.clone();
        let mut warnings = Vec::new();
        let mut loaded = Vec::new();
        for resource in self.definition().context.load.clone() {
            // A provider may be slow: the lease is renewed meanwhile, as for any step.
            let result = {
                let scope = self.scope(&context, None);
                self.heartbeat(self.inner().provider.load(&resource, &scope))
                    .await?
            };
            match result {
                Ok(Some(value)) => {
                    set_path(&mut context, &resource, value);
                    loaded.push(resource);
                }
                Ok(None) => warnings.push(format!(
                    "context resource `{resource}` has no configured provider; skipped"
                )),
                Err(err) => warnings.push(redact_secrets(
                    &format!("context resource `{resource}` could not be loaded ({err}); skipped"),
                    &self.inner().options.secrets,
                )),
            }
        }
        for w in &warnings {
            tracing::warn!(execution_id = %self.exec.id, step_id = CONTEXT_STEP, "{w}");
        }
        let record = StepRecord {
            id: record_id(self.exec.id, CONTEXT_STEP, 1, None, 1),
            execution_id: self.exec.id,
            step_id: CONTEXT_STEP.into(),
            step_type: "context".into(),
            parent_step_id: None,
            iteration: None,
            visit: 1,
            attempt: 1,
            status: StepStatus::Completed,
            input: json!({"load": self.definition().context.load}),
            output: json!({"loaded": loaded}),
            warnings,
            started_at: started,
            completed_at: Some(self.now()),
            error: None,
        };
        self.exec.context = context;
        self.exec.visits.insert(CONTEXT_STEP.into(), 1);
        self.commit(vec![record], Vec::new(), Vec::new(), Transition::Continue)
            .await?;
        Ok(())
    }

    /// Runs one attempt of the step at `cursor` and commits what follows. Returns whether
    /// to keep going.
    async fn run_step(&mut self, cursor: Cursor) -> Result<bool> {
        // The step is borrowed from the shared compiled definition, not copied.
        let compiled = self.compiled.clone();
        let Some(step) = compiled.definition.step(&cursor.step_id) else {
            let message = format!("step `{}` is not in the pinned definition", cursor.step_id);
            self.finish(
                ExecutionStatus::Failed,
                Some((ErrorKind::Interrupted, message)),
                Vec::new(),
            )
            .await?;
            return Ok(false);
        };
        let started = self.now();
        let id = record_id(self.exec.id, &step.id, cursor.visit, None, cursor.attempt);
        let mut record = StepRecord {
            id,
            execution_id: self.exec.id,
            step_id: step.id.clone(),
            step_type: step.kind.type_name().into(),
            parent_step_id: None,
            iteration: None,
            visit: cursor.visit,
            attempt: cursor.attempt,
            status: StepStatus::Running,
            input: Value::Null,
            output: Value::Null,
            warnings: Vec::new(),
            started_at: started,
            completed_at: None,
            error: None,
        };
        if step.has_side_effects() {
            if !self.pending.is_empty() {
                // Everything before a side effect is durable before it happens.
                self.commit(Vec::new(), Vec::new(), Vec::new(), Transition::Continue)
                    .await?;
            }
            self.exact = false;
            let version = self
                .inner()
                .store
                .begin_step(
                    self.exec.id,
                    &self.inner().options.worker_id,
                    self.exec.version,
                    record.clone(),
                    started,
                )
                .await?;
            self.exec.version = version;
        }
        self.exec.visits.insert(step.id.clone(), cursor.visit);
        self.exec.steps_run += 1;
        tracing::debug!(execution_id = %self.exec.id, step_id = %step.id, visit = cursor.visit, attempt = cursor.attempt, "step");

        // Only a step that can write to the context (a `set`, possibly in a child) needs
        // a copy to fall back to if it fails; the others work on the context in place.
        let backup = writes_context(step).then(|| self.exec.context.clone());
        let mut context = std::mem::take(&mut self.exec.context);
        let env = Env {
            run_exec_id: self.exec.id,
            workflow_key: self.exec.workflow_key.clone(),
            consumed: self.exec.consumed_events.clone(),
            visit: cursor.visit,
            attempt: cursor.attempt,
            iteration: None,
            locals: Vec::new(),
        };
        let attempt = self.attempt(step, &mut context, &env);
        // Steps without side effects finish without awaiting anything slow, so they need
        // no lease heartbeat (and no timer per step).
        let guarded = async {
            if step.has_side_effects() {
                self.heartbeat(attempt).await
            } else {
                Ok(attempt.await)
            }
        };
        let outcome = match step.timeout {
            Some(limit) => match tokio::time::timeout(limit.as_std(), guarded).await {
                Ok(result) => result,
                Err(_) => Ok(Outcome::Failed {
                    body: Body::default(),
                    error: StepError {
                        class: tollgate_model::definition::ErrorClass::Timeout,
                        message: format!("the step did not finish within its timeout of {limit}"),
                    },
                }),
            },
            None => guarded.await,
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(err) => {
                self.exec.context = backup.unwrap_or(context);
                return Err(err);
            }
        };
        let finished = self.now();
        record.completed_at = Some(finished);

        match outcome {
            Outcome::Done {
                mut body,
                next,
                consumed,
            } => {
                record.status = StepStatus::Completed;
                fill(&mut record, &mut body);
                if let Some(result) = body.verb_result {
                    self.exec.result = Some(result);
                }
                set_step_output(&mut context, &step.id, body.output.clone());
                self.exec.context = context;
                let mut records = body.children;
                records.push(record);
                let pure =
                    !step.has_side_effects() && body.effects.is_empty() && consumed.is_empty();
                if let Some(next) = next.clone().filter(|_| {
                    pure && self.pending.len() < MAX_PURE_BATCH && !self.exec.pause_requested
                }) {
                    let visit = self.exec.visits.get(&next).copied().unwrap_or(0) + 1;
                    self.exec.cursor = Some(Cursor::new(next, visit));
                    self.pending.extend(records);
                    return Ok(true);
                }
                self.goto(next, records, body.effects, consumed).await
            }
            Outcome::Gate {
                mut body,
                gate,
                approval,
            } => {
                record.status = if gate.reason == PauseReason::Event {
                    StepStatus::Waiting
                } else {
                    StepStatus::Paused
                };
                record.completed_at = None;
                fill(&mut record, &mut body);
                if let Some(result) = body.verb_result {
                    self.exec.result = Some(result);
                }
                self.exec.context = context;
                let is_wait = gate.reason == PauseReason::Event;
                let mut records = body.children;
                records.push(record);
                tracing::info!(execution_id = %self.exec.id, step_id = %step.id, gate = ?gate.reason, "stopped at a gate");
                self.commit(
                    records,
                    body.effects,
                    Vec::new(),
                    Transition::Gate { gate, approval },
                )
                .await?;
                if is_wait {
                    return self.recheck_wait().await;
                }
                Ok(false)
            }
            Outcome::Failed { mut body, error } => {
                record.status = StepStatus::Failed;
                fill(&mut record, &mut body);
                record.error = Some(error.clone());
                // A failed attempt leaves the context as it was before it.
                self.exec.context = backup.unwrap_or(context);
                tracing::warn!(execution_id = %self.exec.id, step_id = %step.id, attempt = cursor.attempt, class = ?error.class, "step failed: {}", error.message);
                let mut records = body.children;
                records.push(record);
                self.after_failure(step, cursor, error, records).await
            }
        }
    }

    /// Moves the cursor to `next` (or ends) and commits.
    async fn goto(
        &mut self,
        next: Option<String>,
        records: Vec<StepRecord>,
        effects: Vec<Effect>,
        consumed: Vec<Uuid>,
    ) -> Result<bool> {
        match next {
            Some(next) => {
                let visit = self.exec.visits.get(&next).copied().unwrap_or(0) + 1;
                self.exec.cursor = Some(Cursor::new(next, visit));
                self.commit(records, effects, consumed, Transition::Continue)
                    .await?;
                Ok(true)
            }
            None => {
                if self.exec.result.is_none() {
                    self.exec.result = Some(ExecutionResult::Executed);
                }
                // The last step's effects and consumed events commit with the ending.
                self.commit(
                    records,
                    effects,
                    consumed,
                    Transition::Finish {
                        status: ExecutionStatus::Completed,
                        error: None,
                    },
                )
                .await?;
                tracing::info!(execution_id = %self.exec.id, result = ?self.exec.result, "execution completed");
                Ok(false)
            }
        }
    }

    async fn after_failure(
        &mut self,
        step: &Step,
        cursor: Cursor,
        error: StepError,
        records: Vec<StepRecord>,
    ) -> Result<bool> {
        if let Some(policy) = step
            .retry
            .as_ref()
            .filter(|p| p.retries(error.class) && cursor.attempt < p.max_attempts)
        {
            let delay = jittered(policy.delay_after(cursor.attempt).as_std(), policy.jitter);
            self.exec.cursor = Some(Cursor {
                attempt: cursor.attempt + 1,
                ..cursor
            });
            if delay <= self.inner().options.inline_retry_max {
                self.commit(records, Vec::new(), Vec::new(), Transition::Continue)
                    .await?;
                tokio::time::sleep(delay).await;
                return Ok(true);
            }
            let at =
                self.now() + chrono::TimeDelta::from_std(delay).unwrap_or(chrono::TimeDelta::MAX);
            tracing::info!(execution_id = %self.exec.id, step_id = %step.id, retry_at = %at, "retry after backoff; lease released");
            self.commit(records, Vec::new(), Vec::new(), Transition::Release { at })
                .await?;
            return Ok(false);
        }
        if let Some(target) = step.on_error.clone() {
            set_step_output(
                &mut self.exec.context,
                &step.id,
                json!({"error": {"class": error.class, "message": error.message}}),
            );
            return self
                .goto(Some(target), records, Vec::new(), Vec::new())
                .await;
        }
        let message = format!("step `{}` failed: {}", step.id, error.message);
        self.finish(
            ExecutionStatus::Failed,
            Some((ErrorKind::StepFailed, message)),
            records,
        )
        .await?;
        Ok(false)
    }

    /// Runs `work` while renewing the lease every third of its length; a refused renewal
    /// (the execution was cancelled or taken over) abandons the work.
    async fn heartbeat<T, F: std::future::Future<Output = T>>(&self, work: F) -> Result<T> {
        let period = (self.inner().options.lease / 3).max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tokio::pin!(work);
        loop {
            tokio::select! {
                outcome = &mut work => return Ok(outcome),
                _ = ticker.tick() => {
                    let until = self.engine.lease_until();
                    match self.inner().store.renew_lease(self.exec.id, &self.inner().options.worker_id, until).await {
                        Ok(()) => {}
                        Err(err) if err.is_conflict() => return Err(Error::Lost(self.exec.id)),
                        Err(err) => tracing::warn!(execution_id = %self.exec.id, "lease renewal failed: {err}"),
                    }
                }
            }
        }
    }

    /// One attempt of a top-level step.
    async fn attempt(&self, step: &Step, context: &mut Value, env: &Env) -> Outcome {
        match &step.kind {
            StepKind::Approval { approval, .. } => {
                let body = Body::default();
                self.enter_approval(step, approval, context, env, body)
            }
            StepKind::Wait { wait, next } => {
                self.enter_wait(step, wait, next.clone(), context, env)
                    .await
            }
            _ => {
                let body =
                    crate::steps::run_body(self.engine, &self.compiled, step, context, env).await;
                if let Some(error) = body.error.clone() {
                    return Outcome::Failed { body, error };
                }
                if let Some(spec) = step.compat_approval() {
                    return self.enter_approval(step, spec, context, env, body);
                }
                let next = match &step.kind {
                    StepKind::Condition {
                        on_true, on_false, ..
                    } => {
                        if body.passed {
                            on_true.clone()
                        } else {
                            on_false.clone()
                        }
                    }
                    StepKind::Action { next, .. }
                    | StepKind::Execute { next, .. }
                    | StepKind::Foreach { next, .. } => next.clone(),
                    StepKind::Parallel { next, on_false, .. } => {
                        if body.passed {
                            next.clone()
                        } else if on_false.is_some() {
                            on_false.clone()
                        } else {
                            let error = StepError {
                                class: tollgate_model::definition::ErrorClass::Other,
                                message: "the parallel checks did not pass and the step has no `on_false`".into(),
                            };
                            return Outcome::Failed { body, error };
                        }
                    }
                    StepKind::Approval { .. } | StepKind::Wait { .. } => None,
                };
                Outcome::Done {
                    body,
                    next,
                    consumed: Vec::new(),
                }
            }
        }
    }

    fn enter_approval(
        &self,
        step: &Step,
        spec: &ApprovalSpec,
        context: &Value,
        env: &Env,
        mut body: Body,
    ) -> Outcome {
        let now = self.now();
        let scope = self.scope(context, Some(&step.id));
        let warnings = &mut body.warnings;
        let reason = spec
            .reason
            .as_ref()
            .map(|r| Template::parse(r).render_text(&scope, Mode::Redacted, warnings));
        let (entity_type, entity_id) = match &spec.entity {
            Some(e) => (
                Some(Template::parse(&e.entity_type).render_text(&scope, Mode::Redacted, warnings)),
                Some(Template::parse(&e.id).render_text(&scope, Mode::Redacted, warnings)),
            ),
            None => (None, None),
        };
        let data = spec.data.as_ref().map_or(json!({}), |d| {
            render_value(d, &scope, Mode::Redacted, warnings)
        });
        let required = match spec.required {
            Required::Count(n) => n,
            Required::All => {
                let distinct: std::collections::HashSet<&String> =
                    spec.approvers.users.iter().collect();
                u32::try_from(distinct.len()).unwrap_or(u32::MAX)
            }
        };
        let approval_id = Uuid::new_v5(
            &self.exec.id,
            format!("approval:{}:{}", step.id, env.visit).as_bytes(),
        );
        let expires_at = spec.timeout.map(|t| now + t.as_chrono());
        let approval = ApprovalRequest {
            id: approval_id,
            execution_id: self.exec.id,
            step_id: step.id.clone(),
            visit: env.visit,
            entity_type,
            entity_id,
            approver_roles: spec.approvers.roles.clone(),
            approver_users: spec.approvers.users.clone(),
            required,
            status: ApprovalStatus::Pending,
            reason,
            data,
            decisions: Vec::new(),
            requested_by: self.exec.requested_by.clone(),
            allow_self_approval: spec.allow_self_approval,
            requested_at: now,
            expires_at,
            decided_at: None,
        };
        body.output = merge_output(
            body.output,
            json!({"approval_id": approval_id, "required": required, "expires_at": expires_at}),
        );
        let gate = Gate {
            reason: PauseReason::Approval,
            step_id: step.id.clone(),
            visit: env.visit,
            paused_at: now,
            deadline: expires_at,
            event: None,
            event_match: None,
            approval_id: Some(approval_id),
            note: None,
        };
        Outcome::Gate {
            body,
            gate,
            approval: Some(Box::new(approval)),
        }
    }

    async fn enter_wait(
        &self,
        step: &Step,
        wait: &tollgate_model::definition::WaitSpec,
        next: Option<String>,
        context: &mut Value,
        env: &Env,
    ) -> Outcome {
        let now = self.now();
        let mut body = Body::default();
        let resolved = wait.match_.as_ref().map(|m| {
            let scope = self.scope(context, Some(&step.id));
            resolve_match(
                &serde_json::to_value(m).unwrap_or(Value::Null),
                &scope,
                &mut body.warnings,
            )
        });
        // An event that arrived after the execution started but before this wait is not
        // lost: it is looked for first, through every page (no cap may hide a match).
        let early = self
            .find_early_event(&wait.event, |event| {
                !env.consumed.contains(&event.id)
                    && wait_matches(resolved.as_ref(), context, &event.payload, now)
            })
            .await;
        match early {
            Ok(Some(event)) => {
                apply_event(context, &step.id, &event.payload);
                body.output =
                    json!({"event_id": event.id, "event_type": event.event_type, "early": true});
                return Outcome::Done {
                    body,
                    next,
                    consumed: vec![event.id],
                };
            }
            Ok(None) => {}
            Err(err) => body.warnings.push(format!(
                "could not look for events that arrived early: {err}"
            )),
        }
        body.output =
            json!({"event": wait.event, "deadline": wait.timeout.map(|t| now + t.as_chrono())});
        let gate = Gate {
            reason: PauseReason::Event,
            step_id: step.id.clone(),
            visit: env.visit,
            paused_at: now,
            deadline: wait.timeout.map(|t| now + t.as_chrono()),
            event: Some(wait.event.clone()),
            event_match: resolved,
            approval_id: None,
            note: None,
        };
        Outcome::Gate {
            body,
            gate,
            approval: None,
        }
    }

    /// After committing a wait: an event stored while we were entering it may have been
    /// missed both by our look-up and by its sender's scan of waiting executions. Look
    /// once more now that the wait is visible; claim it ourselves if one matches.
    async fn recheck_wait(&mut self) -> Result<bool> {
        let Some(gate) = self.exec.gate.clone() else {
            return Ok(false);
        };
        let Some(event_type) = gate.event.clone() else {
            return Ok(false);
        };
        let now = self.now();
        let early = self
            .find_early_event(&event_type, |event| {
                !self.exec.consumed_events.contains(&event.id)
                    && wait_matches(
                        gate.event_match.as_ref(),
                        &self.exec.context,
                        &event.payload,
                        now,
                    )
            })
            .await?;
        let Some(event) = early else {
            return Ok(false);
        };
        match self
            .inner()
            .store
            .claim_wait(
                self.exec.id,
                Some(self.exec.version),
                &event,
                None,
                &self.engine.claim(),
                now,
            )
            .await
        {
            Ok(claimed) => {
                self.exec = claimed;
                Ok(true)
            }
            Err(err) if err.is_conflict() => Ok(false), // the sender claimed it
            Err(err) => Err(err.into()),
        }
    }

    /// The oldest event of `event_type` this execution may consume (received since it
    /// started, addressed to nobody or to it, not the event that started it) for which
    /// `accept` holds, looked for page by page.
    async fn find_early_event(
        &self,
        event_type: &str,
        mut accept: impl FnMut(&tollgate_model::records::Event) -> bool,
    ) -> tollgate_store::Result<Option<tollgate_model::records::Event>> {
        let mut after = None;
        loop {
            let page = self
                .inner()
                .store
                .events_for_wait(
                    event_type,
                    self.exec.started_at,
                    self.exec.id,
                    after,
                    EARLY_EVENT_PAGE,
                )
                .await?;
            let full = page.len() == EARLY_EVENT_PAGE as usize;
            after = page.last().map(|e| (e.received_at, e.id));
            if let Some(found) = page
                .into_iter()
                .find(|e| !e.started.contains(&self.exec.id) && accept(e))
            {
                return Ok(Some(found));
            }
            if !full {
                return Ok(None);
            }
        }
    }

    /// Leaves an approval gate for `next`. Resolving a decision has no side effect and
    /// the deciding signal is stored on the execution until the next commit clears it,
    /// so — like a pure step — the move rides on the next commit instead of costing one
    /// of its own: a worker that dies before that commit is followed by one that resolves
    /// the same stored signal the same way.
    async fn leave_gate(&mut self, next: Option<String>, records: Vec<StepRecord>) -> Result<()> {
        let batchable = self.pending.len() < MAX_PURE_BATCH && !self.exec.pause_requested;
        match next {
            Some(next) if batchable => {
                let visit = self.exec.visits.get(&next).copied().unwrap_or(0) + 1;
                self.exec.cursor = Some(Cursor::new(next, visit));
                self.exec.gate = None;
                self.exec.wake = None;
                self.pending.extend(records);
                Ok(())
            }
            other => {
                self.goto(other, records, Vec::new(), Vec::new()).await?;
                Ok(())
            }
        }
    }

    /// Acts on the signal that woke the execution (docs/execution-semantics.md, "Gates").
    async fn resolve_wake(&mut self) -> Result<()> {
        let Some(wake) = self.exec.wake.clone() else {
            return Ok(());
        };
        let Some(gate) = self.exec.gate.clone() else {
            // A manual resume of an execution paused at a step boundary.
            if let Wake::Manual { data, .. } = &wake {
                merge_into(&mut self.exec.context, data);
            }
            self.exec.wake = None;
            return Ok(());
        };
        let now = self.now();
        let step = self.definition().step(&gate.step_id).cloned();
        let attempt = self.exec.cursor.as_ref().map_or(1, |c| c.attempt);
        let mut record = step.as_ref().map(|s| StepRecord {
            id: record_id(self.exec.id, &s.id, gate.visit, None, attempt),
            execution_id: self.exec.id,
            step_id: s.id.clone(),
            step_type: s.kind.type_name().into(),
            parent_step_id: None,
            iteration: None,
            visit: gate.visit,
            attempt,
            status: StepStatus::Completed,
            input: Value::Null,
            output: Value::Null,
            warnings: Vec::new(),
            started_at: gate.paused_at,
            completed_at: Some(now),
            error: None,
        });
        match wake {
            Wake::Manual { data, .. } => {
                merge_into(&mut self.exec.context, &data);
                self.exec.wake = None;
                self.exec.gate = None;
                Ok(())
            }
            Wake::Approval {
                approval_id,
                outcome,
                decided_by,
                reason,
                data,
                decided_at,
            } => {
                let Some(step) = step else {
                    return self.lost_step(&gate.step_id).await;
                };
                let decision = json!({
                    "approval_id": approval_id, "status": outcome, "decided_by": decided_by,
                    "reason": reason, "data": data, "decided_at": decided_at,
                });
                set_step_output(&mut self.exec.context, &step.id, decision.clone());
                if let Value::Object(map) = &mut self.exec.context {
                    let approvals = map.entry("approvals").or_insert_with(|| json!({}));
                    if !approvals.is_object() {
                        *approvals = json!({});
                    }
                    if let Value::Object(a) = approvals {
                        a.insert(step.id.clone(), decision.clone());
                    }
                    map.insert("approval".into(), decision.clone());
                }
                if let Some(r) = record.as_mut() {
                    r.output = decision;
                }
                let records: Vec<StepRecord> = record.into_iter().collect();
                let spec_timeout = match &step.kind {
                    StepKind::Approval { approval, .. } => approval.on_timeout.clone(),
                    _ => step
                        .compat_approval()
                        .map_or(OnTimeout::Reject, |a| a.on_timeout.clone()),
                };
                let verdict = match outcome {
                    ApprovalStatus::Approved => Verdict::Approve,
                    ApprovalStatus::Expired => match spec_timeout {
                        OnTimeout::Reject => Verdict::Reject,
                        OnTimeout::Approve => Verdict::Approve,
                        OnTimeout::Fail => Verdict::Fail,
                        OnTimeout::Step(target) => Verdict::Goto(target),
                    },
                    _ => Verdict::Reject,
                };
                let (on_approve, on_reject, next) = match &step.kind {
                    StepKind::Approval {
                        on_approve,
                        on_reject,
                        ..
                    } => (on_approve.clone(), on_reject.clone(), None),
                    StepKind::Action {
                        on_approve,
                        on_reject,
                        next,
                        ..
                    } => (on_approve.clone(), on_reject.clone(), next.clone()),
                    _ => (None, None, None),
                };
                match verdict {
                    Verdict::Approve => {
                        self.exec.result = Some(ExecutionResult::Allowed);
                        self.leave_gate(on_approve.or(next), records).await?;
                    }
                    Verdict::Reject => {
                        self.exec.result = Some(ExecutionResult::Blocked);
                        self.leave_gate(on_reject, records).await?;
                    }
                    Verdict::Goto(target) => {
                        self.leave_gate(Some(target), records).await?;
                    }
                    Verdict::Fail => {
                        let message = format!(
                            "approval `{}` expired and its step says on_timeout: fail",
                            step.id
                        );
                        self.finish(
                            ExecutionStatus::TimedOut,
                            Some((ErrorKind::TimedOut, message)),
                            records,
                        )
                        .await?;
                    }
                }
                Ok(())
            }
            Wake::Event {
                event_id,
                event_type,
                payload,
            } => {
                let Some(step) = step else {
                    return self.lost_step(&gate.step_id).await;
                };
                apply_event(&mut self.exec.context, &step.id, &payload);
                if let Some(r) = record.as_mut() {
                    r.output = json!({"event_id": event_id, "event_type": event_type});
                }
                let next = match &step.kind {
                    StepKind::Wait { next, .. } => next.clone(),
                    _ => None,
                };
                self.goto(next, record.into_iter().collect(), Vec::new(), Vec::new())
                    .await?;
                Ok(())
            }
            Wake::WaitTimeout { at } => {
                let Some(step) = step else {
                    return self.lost_step(&gate.step_id).await;
                };
                let on_timeout = match &step.kind {
                    StepKind::Wait { wait, .. } => wait.on_timeout.clone(),
                    _ => None,
                };
                set_step_output(
                    &mut self.exec.context,
                    &step.id,
                    json!({"timed_out": true, "at": at}),
                );
                if let Some(r) = record.as_mut() {
                    r.output = json!({"timed_out": true, "at": at});
                }
                match on_timeout {
                    Some(target) => {
                        self.goto(
                            Some(target),
                            record.into_iter().collect(),
                            Vec::new(),
                            Vec::new(),
                        )
                        .await?;
                    }
                    None => {
                        if let Some(r) = record.as_mut() {
                            r.status = StepStatus::Failed;
                            r.error = Some(StepError {
                                class: tollgate_model::definition::ErrorClass::Timeout,
                                message: "no event arrived before the deadline".into(),
                            });
                        }
                        let message = format!(
                            "wait `{}` reached its deadline without an event and has no on_timeout",
                            step.id
                        );
                        self.finish(
                            ExecutionStatus::TimedOut,
                            Some((ErrorKind::TimedOut, message)),
                            record.into_iter().collect(),
                        )
                        .await?;
                    }
                }
                Ok(())
            }
        }
    }

    async fn lost_step(&mut self, step_id: &str) -> Result<()> {
        let message = format!("gate step `{step_id}` is not in the pinned definition");
        self.finish(
            ExecutionStatus::Failed,
            Some((ErrorKind::Interrupted, message)),
            Vec::new(),
        )
        .await
    }
}

enum Verdict {
    Approve,
    Reject,
    Fail,
    Goto(String),
}

/// Deterministic step-record id: a re-run of the same attempt after a crash replaces its
/// `running` record instead of adding a second one.
pub(crate) fn record_id(
    execution_id: Uuid,
    step_id: &str,
    visit: u32,
    iteration: Option<u32>,
    attempt: u32,
) -> Uuid {
    let name = match iteration {
        Some(i) => format!("step:{step_id}:{visit}:{i}:{attempt}"),
        None => format!("step:{step_id}:{visit}:{attempt}"),
    };
    Uuid::new_v5(&execution_id, name.as_bytes())
}

fn fill(record: &mut StepRecord, body: &mut Body) {
    record.input = std::mem::take(&mut body.input);
    record.output = body.output.clone();
    record.warnings = std::mem::take(&mut body.warnings);
}

/// Whether running `step` can change the context (a `set` sub-action, here or in a child).
fn writes_context(step: &Step) -> bool {
    let own = match &step.kind {
        StepKind::Action { execute, .. } | StepKind::Execute { execute, .. } => {
            execute.iter().any(|a| {
                matches!(
                    a.kind,
                    tollgate_model::definition::SubActionKind::Set { .. }
                )
            })
        }
        _ => false,
    };
    own || step.children().iter().any(writes_context)
}

fn merge_output(base: Value, extra: Value) -> Value {
    match (base, extra) {
        (Value::Object(mut a), Value::Object(b)) => {
            a.extend(b);
            Value::Object(a)
        }
        (Value::Null, extra) => extra,
        (base, _) => base,
    }
}

/// `steps.<id>` = output (ids may contain dots, so this is not a dotted path).
pub(crate) fn set_step_output(context: &mut Value, step_id: &str, output: Value) {
    if !context.is_object() {
        *context = json!({});
    }
    if let Value::Object(map) = context {
        let steps = map.entry("steps").or_insert_with(|| json!({}));
        if !steps.is_object() {
            *steps = json!({});
        }
        if let Value::Object(steps) = steps {
            steps.insert(step_id.to_owned(), output);
        }
    }
}

/// An event's payload lands at `events.<step_id>` and replaces `event`.
fn apply_event(context: &mut Value, step_id: &str, payload: &Value) {
    if let Value::Object(map) = context {
        let events = map.entry("events").or_insert_with(|| json!({}));
        if !events.is_object() {
            *events = json!({});
        }
        if let Value::Object(events) = events {
            events.insert(step_id.to_owned(), payload.clone());
        }
        map.insert("event".into(), payload.clone());
    }
}

/// Shallow-merges the keys of `data` (an object) into the context.
fn merge_into(context: &mut Value, data: &Value) {
    if let (Value::Object(target), Value::Object(source)) = (context, data) {
        for (k, v) in source {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// Resolves the templates in a wait's `match` condition (JSON form) at entry: only the
/// `value`s are rendered; fields stay paths (`event.*` is the incoming payload).
fn resolve_match(condition: &Value, scope: &Scope<'_>, warnings: &mut Vec<String>) -> Value {
    match condition {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let v = match k.as_str() {
                    "value" => render_value(v, scope, Mode::Live, warnings),
                    "and" | "or" => Value::Array(
                        v.as_array()
                            .map(|a| {
                                a.iter()
                                    .map(|c| resolve_match(c, scope, warnings))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    "not" => resolve_match(v, scope, warnings),
                    _ => v.clone(),
                };
                out.insert(k.clone(), v);
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

/// Whether an event payload satisfies a wait's resolved `match` (absent: any event of
/// the awaited type). `event` in the condition is the payload; other roots read the
/// execution's context.
pub fn wait_matches(
    resolved: Option<&Value>,
    context: &Value,
    payload: &Value,
    now: Timestamp,
) -> bool {
    let Some(resolved) = resolved else {
        return true;
    };
    let Ok(condition) = tollgate_model::parse_condition(resolved) else {
        return false;
    };
    let Ok(compiled) = CompiledCondition::compile(&condition) else {
        return false;
    };
    let locals = [("event", payload)];
    let scope = Scope {
        locals: &locals,
        ..Scope::new(context, now)
    };
    compiled.evaluate(&scope, &mut Vec::new())
}

/// ±20% jitter so the retries of many executions do not line up.
fn jittered(delay: Duration, jitter: bool) -> Duration {
    if !jitter || delay.is_zero() {
        return delay;
    }
    let random = Uuid::new_v4().as_u128() % 10_000;
    let factor = 0.8 + 0.4 * (random as f64 / 10_000.0);
    delay.mul_f64(factor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_key_is_loaded_once_for_every_concurrent_caller() {
        let map = Arc::new(OnceMap::<Arc<String>>::new());
        let loads = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..32)
            .map(|_| {
                let (map, loads) = (map.clone(), loads.clone());
                tokio::spawn(async move {
                    map.get_or_load("k", || async {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, ()>(Arc::new("v".to_owned()))
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut values = Vec::new();
        for caller in callers {
            values.push(caller.await.unwrap());
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        assert!(values.iter().all(|v| Arc::ptr_eq(v, &values[0])));
        assert_eq!(map.get("k").as_deref().map(String::as_str), Some("v"));
    }

    #[tokio::test]
    async fn a_failed_load_is_retried_and_leaves_nothing_behind() {
        let map = OnceMap::<u32>::new();
        assert_eq!(
            map.get_or_load("k", || async { Err("down") }).await,
            Err("down")
        );
        assert!(map.get("k").is_none());
        assert!(map.cells().is_empty(), "no cell kept for a key that failed");
        assert_eq!(
            map.get_or_load("k", || async { Ok::<_, &str>(7) }).await,
            Ok(7)
        );
        assert_eq!(map.get("k"), Some(7));
    }
}
