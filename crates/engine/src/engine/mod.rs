//! The step interpreter: starts executions and advances claimed ones until they stop at a
//! gate, release their lease for a retry backoff, or end.
//!
//! Every change goes through the store as one atomic call guarded by lease owner and
//! version (docs/ARCHITECTURE.md, "The flow of an execution"): a step with side effects is recorded `running` before it acts,
//! then its completion is committed with cursor, context and effects. A worker that loses
//! its lease (it was too slow, or the execution was cancelled) stops at its next write.
//!
//! The pieces: [`Engine`] and its builder here; `compiled` holds the definitions
//! executions are pinned to; `run` is one advancement of one execution (the step loop
//! and its commits); `gates` enters and leaves approvals and waits; `wake` acts on what
//! woke a gated execution.

mod compiled;
mod gates;
mod run;
mod wake;

pub use gates::{gate_accepts, wait_matches, RETRY_ROOT};

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::{json, Map, Value};
use tollgate_model::records::{Cursor, Execution, Lease, StepRecord, Timestamp, Workflow};
use tollgate_model::{ExecutionStatus, PauseReason};
use tollgate_store::{LeaseClaim, Starting, Store, Transition};
use tracing::Instrument;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::notify::{Notifier, RecordingNotifier};
use crate::provider::{ContextProvider, NoProviders};
use crate::template::Secrets;

use compiled::{Compiled, OnceMap};
use run::Run;

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
    let stop = match transition {
        Transition::Finish { status, .. } => Some(Stop::Ended(*status)),
        Transition::Gate { gate, .. } => Some(Stop::Gated(gate.reason)),
        Transition::Continue | Transition::Release { .. } => None,
    };
    record_step_metrics(records, stop);
}

/// Where a commit left its execution, for the metrics.
enum Stop {
    Ended(ExecutionStatus),
    Gated(PauseReason),
}

fn record_step_metrics(records: &[(String, Option<i64>)], stop: Option<Stop>) {
    for (step_type, duration) in records {
        if let Some(ms) = duration {
            metrics::histogram!("tollgate_step_duration_seconds", "step_type" => step_type.clone())
                .record(*ms as f64 / 1000.0);
        }
    }
    match stop {
        Some(Stop::Ended(status)) => {
            metrics::counter!("tollgate_executions_ended_total", "status" => status.to_string())
                .increment(1);
        }
        Some(Stop::Gated(reason)) => {
            metrics::counter!("tollgate_gates_entered_total", "reason" => reason.as_str())
                .increment(1);
        }
        None => {}
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

    /// Uses this notifier for the outbox (default: [`RecordingNotifier`], which sends
    /// nothing).
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

    /// The notifier the workers send queued notifications with.
    pub fn notifier(&self) -> &Arc<dyn Notifier> {
        &self.inner.notifier
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

    /// The workflow definition of snapshot `snapshot_id` if this process has compiled it
    /// already, without a read: for checks that run inside a store transaction.
    pub fn cached_definition(
        &self,
        snapshot_id: &str,
    ) -> Option<Arc<tollgate_model::WorkflowDefinition>> {
        self.compiled_if_cached(snapshot_id)
            .map(|compiled| compiled.definition.clone())
    }

    /// The workflow definition an execution is pinned to (its snapshot), from this
    /// process's cache when it has compiled it already.
    pub async fn definition(
        &self,
        snapshot_id: &str,
    ) -> Result<Arc<tollgate_model::WorkflowDefinition>> {
        Ok(self.compiled(snapshot_id).await?.definition.clone())
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
    /// side-effect-free steps after it, like [`Self::run_ahead`], and returns what to
    /// store instead of the claimed row, so that the decision and those steps are one
    /// write ([`tollgate_store::ApprovalStore::decide`] with a continuation). `None` when
    /// it cannot run without the store (the definition is not compiled in this process
    /// yet, or a step would wait for I/O) — then the claimed execution is stored and
    /// advanced as usual.
    ///
    /// Synchronous because it runs inside the decision's transaction, while the store
    /// holds its rows. The run loop is one `async` function for both modes, and running
    /// ahead never awaits I/O (it stops before any step that would), so one poll
    /// finishes it ([`FutureExt::now_or_never`]); a poll that is not ready would have
    /// waited, and is dropped — the safe answer, `None`. Writing a second, synchronous
    /// copy of the step loop for this one caller would let the two drift apart.
    pub fn continue_ahead(&self, claimed: &Execution) -> Option<Starting> {
        let compiled = self.compiled_if_cached(&claimed.snapshot_id)?;
        let mut run = Run::new(self, claimed.clone(), compiled, true);
        let span = tracing::info_span!("execution", execution_id = %run.exec.id, workflow = %run.exec.workflow_key, worker = %self.inner.options.worker_id);
        match run.drive().instrument(span).now_or_never()? {
            Ok(()) => Some(run.into_ahead().starting),
            Err(err) => {
                tracing::debug!(execution_id = %claimed.id, "not continued ahead: {err}");
                None
            }
        }
    }

    /// Records the metrics of a continuation once the store kept it
    /// ([`tollgate_store::Decided::continued`]): its steps' durations, and the gate it
    /// entered or the status it ended with.
    pub fn record_continued(&self, stored: &Starting) {
        let durations: Vec<(String, Option<i64>)> = stored
            .records
            .iter()
            .map(|r| (r.step_type.clone(), r.duration_ms()))
            .collect();
        let e = &stored.execution;
        let stop = if e.status.is_terminal() {
            Some(Stop::Ended(e.status))
        } else {
            e.gate
                .as_ref()
                .filter(|_| e.status != ExecutionStatus::Running)
                .map(|g| Stop::Gated(g.reason))
        };
        record_step_metrics(&durations, stop);
    }

    /// Runs an execution this worker holds (`running`, leased by [`Self::worker_id`])
    /// until it stops at a gate, waits for a retry, or ends; returns it as stored then.
    /// [`Error::Lost`] when another worker took it over or it was cancelled meanwhile.
    pub fn advance(
        &self,
        execution: Execution,
    ) -> impl std::future::Future<Output = Result<Execution>> + Send + '_ {
        self.advance_begun(execution, None)
    }

    /// [`Self::advance`] for an execution stored together with the `running` record of
    /// the step at its cursor ([`Starting::begun`], [`Ahead::begun`]): that step acts
    /// without recording its begin again, which saves a write per side effect that
    /// follows a decision or starts a workflow. With `None`, or a record of another
    /// attempt, it is [`Self::advance`].
    pub async fn advance_begun(
        &self,
        execution: Execution,
        begun: Option<StepRecord>,
    ) -> Result<Execution> {
        let begun = begun.map(Box::new);
        let id = execution.id;
        let compiled = match self.compiled(&execution.snapshot_id).await {
            Ok(compiled) => compiled,
            // A pinned definition this release cannot read or compile will not become
            // readable by retrying: the execution is quarantined rather than taken over
            // again on every lease expiry.
            Err(err) if unusable_definition(&err) => {
                let detail = format!("definition snapshot {}: {err}", execution.snapshot_id);
                let now = self.inner.clock.now();
                return Ok(self
                    .inner
                    .store
                    .quarantine_execution(id, &detail, now)
                    .await?);
            }
            Err(err) => return Err(err),
        };
        let mut run = Run::new(self, execution, compiled, false);
        run.begun = begun;
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

/// Whether a failure to load a pinned definition is for good: the snapshot is missing,
/// does not decode, or does not compile. A snapshot of a newer release is not (an
/// upgraded process runs it), nor is a failing database.
fn unusable_definition(err: &Error) -> bool {
    match err {
        Error::Definition(_) => true,
        Error::Store(store) => {
            store.is_not_found() || matches!(store, tollgate_store::Error::Unreadable(_))
        }
        Error::Lost(_) => false,
    }
}

/// An execution run ahead of storage by [`Engine::run_ahead`].
#[derive(Debug)]
pub struct Ahead {
    /// What to store: the execution as it stands, with its step records and approval.
    pub starting: Starting,
    metrics: Vec<(String, Option<i64>)>,
    ended_or_gated: Option<Transition>,
    begun: Option<StepRecord>,
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
            undo: std::mem::take(&mut self.starting.undo),
        }
    }

    /// True when the creating worker should go on advancing it once stored (it stopped
    /// before a step that needs the stored execution, still leased by this worker).
    pub fn needs_advancing(&self) -> bool {
        self.starting.execution.is_held()
    }

    /// The `running` record of the step it stopped before, stored with it (see
    /// [`Starting::begun`]); pass it to [`Engine::advance_begun`]. Kept here because
    /// [`Self::take_starting`] moves the records out.
    pub fn begun(&self) -> Option<&StepRecord> {
        self.begun.as_ref()
    }
}
