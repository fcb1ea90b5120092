//! [`Tollgate`]: one cloneable handle with the operations the HTTP API offers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tollgate_engine::{Clock, ContextProvider, Engine, EngineOptions, Notifier, Secrets};
use tollgate_model::builder::WorkflowBuilder;
use tollgate_model::records::{
    ApprovalAssignment, ApprovalRequest, DecisionKind, Delegation, Event, Execution, Principal,
    Record, ResumeRequest, StepRecord, Workflow,
};
use tollgate_model::schedule::{CatchUp, CronSchedule, Schedule};
use tollgate_model::WorkflowDefinition;
use tollgate_resumer::{
    ApprovalService, EventService, ExecutionControl, NewEvent, Tasks, Worker, WorkerOptions,
};
use tollgate_store::{
    ApprovalFilter, ExecutionFilter, Page, PageRequest, ScheduleFilter, SchemaPolicy, TickView,
    WorkflowFilter,
};
use uuid::Uuid;

use crate::backend::{Backend, BackendOptions, DatabaseTarget, Kind};
use crate::error::{Error, Problem, Result};

/// A workflow definition in any of the forms the handle takes: a JSON document (as a
/// file or `POST /api/v1/workflows` has it), a [`WorkflowBuilder`], or a definition
/// already built.
#[derive(Debug, Clone)]
pub enum Definition {
    /// A JSON document, parsed and validated on use.
    Json(Value),
    /// A builder, validated on use.
    Builder(WorkflowBuilder),
    /// A definition that went through the parser already.
    Built(Box<WorkflowDefinition>),
}

impl From<Value> for Definition {
    fn from(document: Value) -> Self {
        Self::Json(document)
    }
}

impl From<WorkflowBuilder> for Definition {
    fn from(builder: WorkflowBuilder) -> Self {
        Self::Builder(builder)
    }
}

impl From<WorkflowDefinition> for Definition {
    fn from(definition: WorkflowDefinition) -> Self {
        Self::Built(Box::new(definition))
    }
}

impl Definition {
    fn load(self) -> Result<WorkflowDefinition> {
        match self {
            Self::Json(document) => Ok(tollgate_model::load(&document)?.definition),
            Self::Builder(builder) => Ok(builder.build()?),
            Self::Built(definition) => Ok(*definition),
        }
    }
}

/// What an event did.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The stored event (the first one, when its `event_id` was seen before).
    pub event: Event,
    /// The `event_id` was seen before: nothing was started or resumed again.
    pub duplicate: bool,
    /// The executions it started, as first stored (at their first gate or end, or
    /// running and being advanced by this process).
    pub started: Vec<Execution>,
    /// The waiting executions it resumed, as claimed.
    pub resumed: Vec<Execution>,
}

/// A decision and what it did.
#[derive(Debug, Clone)]
pub struct Decided {
    /// The request after the decision.
    pub approval: ApprovalRequest,
    /// The execution as the decision left it: still paused when the quorum is not
    /// reached, otherwise claimed and being advanced (see
    /// [`Tollgate::wait_until_stopped`]).
    pub execution: Execution,
}

/// A new schedule for a workflow.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    /// A 5- or 6-field cron expression or a descriptor (`@daily`).
    pub cron: String,
    /// An IANA time zone (`Europe/Berlin`); UTC when `None`.
    pub timezone: Option<String>,
    /// Fires from now on (default) or only once enabled.
    pub enabled: bool,
    /// What a worker does with fire times it missed while none ran.
    pub catch_up: CatchUp,
}

impl NewSchedule {
    /// An enabled schedule on `cron`, in UTC, with the default catch-up.
    pub fn cron(cron: impl Into<String>) -> Self {
        Self {
            cron: cron.into(),
            timezone: None,
            enabled: true,
            catch_up: CatchUp::default(),
        }
    }
}

/// Opens a [`Tollgate`] handle. [`Tollgate::builder`] starts one.
#[must_use]
pub struct Builder {
    url: String,
    schema: SchemaPolicy,
    max_connections: Option<u32>,
    options: EngineOptions,
    clock: Option<Arc<dyn Clock>>,
    notifier: Option<Arc<dyn Notifier>>,
    provider: Option<Arc<dyn ContextProvider>>,
    worker: WorkerOptions,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// What opening does with the schema: apply missing migrations (the default),
    /// `Check` (refuse a schema that lacks one), `Skip`. A schema one release newer is
    /// accepted in every mode (rolling upgrades); one whose release declared this one
    /// too old for it is refused in every mode (see `docs/embedding.md`).
    pub fn schema(mut self, policy: SchemaPolicy) -> Self {
        self.schema = policy;
        self
    }

    /// PostgreSQL: most connections of this process (default 32).
    pub fn max_connections(mut self, max: u32) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// The id this process's claims carry (default: host, pid and a random suffix). Two
    /// processes must never share one.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.options.worker_id = id.into();
        self
    }

    /// How long a claim on a running execution lasts without a heartbeat (default
    /// 30 s): a process that dies loses its executions to another after this long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.options.lease = lease;
        self
    }

    /// Values templates read as `{{secrets.NAME}}` (recorded and logged as `***`).
    pub fn secrets(mut self, secrets: Secrets) -> Self {
        self.options.secrets = secrets;
        self
    }

    /// Time limit of each webhook call and context load (default 30 s).
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.options.http_timeout = timeout;
        self
    }

    /// Where `notify` sub-actions and approval notifications go (default: kept in the
    /// store's notification list only).
    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Loads the context resources definitions name in `context.load`.
    pub fn context_provider(mut self, provider: Arc<dyn ContextProvider>) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The clock (default: the system's). Tests pass a `TestClock` to move deadlines.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Tuning of the worker loop [`Tollgate::run_worker`] runs.
    pub fn worker_options(mut self, options: WorkerOptions) -> Self {
        self.worker = options;
        self
    }

    /// Opens the database, prepares its schema, and returns the handle. Call it inside
    /// the Tokio runtime that should advance executions.
    pub async fn open(self) -> Result<Tollgate> {
        let mut backend_options = BackendOptions::new(DatabaseTarget::parse(&self.url)?);
        backend_options.schema = self.schema;
        if let Some(max) = self.max_connections {
            backend_options.max_connections = max;
        }
        let backend = Backend::open(&backend_options).await?;
        let mut engine = Engine::builder(backend.store.clone()).options(self.options);
        if let Some(clock) = self.clock {
            engine = engine.clock(clock);
        }
        if let Some(notifier) = self.notifier {
            engine = engine.notifier(notifier);
        }
        if let Some(provider) = self.provider {
            engine = engine.context_provider(provider);
        }
        let engine = engine.build().map_err(Error::Engine)?;
        let tasks = Tasks::new(tokio::runtime::Handle::current());
        Ok(Tollgate {
            inner: Arc::new(Inner {
                approvals: ApprovalService::new(engine.clone()).with_tasks(tasks.clone()),
                events: EventService::new(engine.clone()).with_tasks(tasks.clone()),
                control: ExecutionControl::new(engine.clone()).with_tasks(tasks.clone()),
                engine,
                tasks,
                backend,
                worker: self.worker,
            }),
        })
    }
}

/// Tollgate embedded in a Rust service: workflows, events, executions, approvals and
/// schedules, with the rules and atomicity of the HTTP API, on SQLite or PostgreSQL.
///
/// Cheap to clone; clones share one database connection pool and one engine. Several
/// processes that open the same PostgreSQL database cooperate as API servers and
/// resume workers do: every wake-up is a claim, exactly one process wins it.
#[derive(Clone)]
pub struct Tollgate {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    engine: Engine,
    approvals: ApprovalService,
    events: EventService,
    control: ExecutionControl,
    tasks: Tasks,
    worker: WorkerOptions,
}

impl std::fmt::Debug for Tollgate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tollgate")
            .field("backend", &self.inner.backend.kind)
            .field("worker_id", &self.inner.engine.worker_id())
            .finish_non_exhaustive()
    }
}

/// How often [`Tollgate::wait_until_stopped`] looks at an execution at most, and at
/// least.
const FIRST_LOOK: Duration = Duration::from_millis(5);
const LONGEST_LOOK: Duration = Duration::from_millis(250);

/// How long [`Tollgate::run_worker`] gives executions in flight to reach a step
/// boundary once shutdown is asked for; those still running keep their lease, which
/// expires for another process.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Tollgate {
    /// A builder for a handle on `url`: `sqlite:PATH`, `sqlite::memory:` (a private
    /// temporary database, removed with the handle) or `postgres://…`.
    pub fn builder(url: impl Into<String>) -> Builder {
        Builder {
            url: url.into(),
            schema: SchemaPolicy::Apply,
            max_connections: None,
            options: EngineOptions {
                worker_id: default_worker_id("embedded"),
                ..EngineOptions::default()
            },
            clock: None,
            notifier: None,
            provider: None,
            worker: WorkerOptions::default(),
        }
    }

    /// A handle on `url` with the defaults ([`Tollgate::builder`]).
    pub async fn open(url: impl Into<String>) -> Result<Self> {
        Self::builder(url).open().await
    }

    /// Which backend the handle uses.
    pub fn backend(&self) -> Kind {
        self.inner.backend.kind
    }

    /// The engine, for what the handle does not wrap (its clock, its store).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    fn now(&self) -> tollgate_model::records::Timestamp {
        self.inner.engine.clock().now()
    }

    // ---- workflows ------------------------------------------------------------

    /// Validates a JSON definition without storing it: the parser's whole report
    /// (errors and warnings, each with its path).
    pub fn validate(document: &Value) -> tollgate_model::Report {
        match tollgate_model::load(document) {
            Ok(loaded) => tollgate_model::Report {
                errors: Vec::new(),
                warnings: loaded.warnings,
            },
            Err(report) => report,
        }
    }

    /// Stores a workflow. [`Error::Validation`] lists every problem of an invalid
    /// definition; [`Error::Conflict`] when its `workflow_id` + `version` is taken —
    /// a new version is a new workflow with the same `workflow_id`.
    pub async fn create_workflow(&self, definition: impl Into<Definition>) -> Result<Workflow> {
        let definition = definition.into().load()?;
        let now = self.now();
        let workflow = Workflow {
            id: Uuid::now_v7(),
            snapshot_id: tollgate_model::records::snapshot_id(&definition),
            enabled: definition.enabled,
            definition: Arc::new(definition),
            created_at: now,
            updated_at: now,
        };
        let created = self.inner.engine.store().create_workflow(workflow).await?;
        tracing::info!(workflow = %created.workflow_id(), version = %created.version(), "workflow created");
        Ok(created)
    }

    /// Replaces a workflow's definition; running and paused executions keep the one
    /// they started with.
    pub async fn replace_workflow(
        &self,
        id: Uuid,
        definition: impl Into<Definition>,
    ) -> Result<Workflow> {
        let definition = definition.into().load()?;
        Ok(self
            .inner
            .engine
            .store()
            .replace_workflow(id, Arc::new(definition), self.now())
            .await?)
    }

    /// Lets events start the workflow (`true`) or stops them (`false`).
    pub async fn set_workflow_enabled(&self, id: Uuid, enabled: bool) -> Result<Workflow> {
        Ok(self
            .inner
            .engine
            .store()
            .set_workflow_enabled(id, enabled, self.now())
            .await?)
    }

    /// One workflow.
    pub async fn workflow(&self, id: Uuid) -> Result<Workflow> {
        Ok(self.inner.engine.store().get_workflow(id).await?)
    }

    /// Workflows, oldest first, filtered, a page at a time.
    pub async fn workflows(
        &self,
        filter: &WorkflowFilter,
        page: &PageRequest,
    ) -> Result<Page<Workflow>> {
        Ok(self
            .inner
            .engine
            .store()
            .list_workflows(filter, page)
            .await?)
    }

    /// Deletes a workflow; its executions stay readable and keep running.
    pub async fn delete_workflow(&self, id: Uuid) -> Result<()> {
        Ok(self.inner.engine.store().delete_workflow(id).await?)
    }

    /// Starts an execution by hand (`trigger_event` = `manual`); `requested_by` is the
    /// requester of its approvals. [`Error::Conflict`] for a disabled workflow.
    pub async fn execute(
        &self,
        workflow_id: Uuid,
        payload: Value,
        requested_by: Option<&str>,
    ) -> Result<Execution> {
        let progress = self
            .inner
            .control
            .execute(workflow_id, payload, requested_by)
            .await?;
        Ok(progress.execution)
    }

    // ---- events ---------------------------------------------------------------

    /// Sends an event: stores it (a repeated `event_id` does nothing again), starts
    /// the enabled workflows it triggers and resumes the executions waiting for it.
    pub async fn send_event(&self, event: NewEvent) -> Result<Sent> {
        let ingested = self.inner.events.ingest(event).await?;
        Ok(Sent {
            event: ingested.event,
            duplicate: ingested.duplicate,
            started: ingested.started.into_iter().map(|p| p.execution).collect(),
            resumed: ingested.resumed.into_iter().map(|p| p.execution).collect(),
        })
    }

    /// Delivers an event to one waiting execution; [`Error::Conflict`] when it does not
    /// wait for this type or the event does not match its wait.
    pub async fn deliver_event(
        &self,
        execution_id: Uuid,
        event_type: &str,
        payload: Value,
        event_id: Option<String>,
        actor: Option<&str>,
    ) -> Result<Execution> {
        let delivered = self
            .inner
            .events
            .deliver_to(execution_id, event_type, payload, event_id, actor)
            .await?;
        Ok(delivered.progress.execution)
    }

    // ---- executions -----------------------------------------------------------

    /// One execution as stored now.
    pub async fn execution(&self, id: Uuid) -> Result<Execution> {
        Ok(self.inner.engine.store().get_execution(id).await?)
    }

    /// Executions, newest first, filtered, a page at a time.
    pub async fn executions(
        &self,
        filter: &ExecutionFilter,
        page: &PageRequest,
    ) -> Result<Page<Execution>> {
        Ok(self
            .inner
            .engine
            .store()
            .list_executions(filter, page)
            .await?)
    }

    /// An execution's step records, in the order they ran.
    pub async fn steps(&self, id: Uuid) -> Result<Vec<StepRecord>> {
        Ok(self.inner.engine.store().list_steps(id).await?)
    }

    /// Every attempt to wake an execution (decisions, events, operators), accepted or
    /// refused, oldest first.
    pub async fn audit(&self, id: Uuid) -> Result<Vec<ResumeRequest>> {
        self.execution(id).await?;
        Ok(self.inner.engine.store().list_resume_requests(id).await?)
    }

    /// Waits until the execution is not `running` — at a gate, paused or ended — and
    /// returns it; [`Error::StillRunning`] after `timeout`. It reads the store, so it
    /// sees progress made by any process.
    pub async fn wait_until_stopped(&self, id: Uuid, timeout: Duration) -> Result<Execution> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = FIRST_LOOK;
        loop {
            let execution = self.execution(id).await?;
            if execution.status != tollgate_model::ExecutionStatus::Running {
                return Ok(execution);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::StillRunning(id));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(LONGEST_LOOK);
        }
    }

    /// Pauses a running execution at its next step boundary. `Conflict` if it is not
    /// running.
    pub async fn pause(
        &self,
        id: Uuid,
        actor: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Execution> {
        Ok(self.inner.control.pause(id, actor, reason).await?)
    }

    /// Resumes a manually paused execution, merging `data` into its context.
    pub async fn resume(&self, id: Uuid, actor: Option<&str>, data: Value) -> Result<Execution> {
        Ok(self.inner.control.resume(id, actor, data).await?.execution)
    }

    /// Cancels an execution that has not ended; its open approvals are cancelled too.
    pub async fn cancel(
        &self,
        id: Uuid,
        actor: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Execution> {
        Ok(self.inner.control.cancel(id, actor, reason).await?)
    }

    /// A record that workflows keep with `create_record` / `update_record`.
    pub async fn record(&self, entity: &str, entity_id: &str) -> Result<Record> {
        Ok(self
            .inner
            .engine
            .store()
            .get_record(entity, entity_id)
            .await?)
    }

    // ---- approvals ------------------------------------------------------------

    /// One approval request with its decisions.
    pub async fn approval(&self, id: Uuid) -> Result<ApprovalRequest> {
        Ok(self.inner.engine.store().get_approval(id).await?)
    }

    /// Approval requests, newest first, filtered, a page at a time.
    pub async fn approvals(
        &self,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>> {
        Ok(self
            .inner
            .engine
            .store()
            .list_approvals(filter, page)
            .await?)
    }

    /// The pending requests `principal` may decide now (its inbox).
    pub async fn inbox(
        &self,
        principal: &Principal,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>> {
        let filter = ApprovalFilter {
            decidable_by: Some(principal.clone()),
            ..ApprovalFilter::default()
        };
        self.approvals(&filter, page).await
    }

    /// Decides as `principal` with the API's rules (role or listed user, quorum, no
    /// self-approval unless allowed, a reason to reject, the deadline). A decision that
    /// settles the request claims the execution in the same transaction and advances
    /// it; [`Error::Forbidden`] or [`Error::Conflict`] say why a decision was refused,
    /// and the refusal is in the execution's audit.
    pub async fn decide(
        &self,
        approval_id: Uuid,
        principal: &Principal,
        decision: DecisionKind,
        reason: Option<&str>,
        data: Value,
    ) -> Result<Decided> {
        let decided = self
            .inner
            .approvals
            .decide(
                approval_id,
                principal,
                decision,
                reason.map(str::to_owned),
                data,
            )
            .await?;
        Ok(Decided {
            approval: decided.approval,
            execution: decided.progress.execution,
        })
    }

    /// Decides as `delegator`'s delegate (`delegate` holds a delegation from them that
    /// covers the request now): the decision counts as `delegator`'s and records who
    /// made it. Delegations are made with [`Self::delegate`].
    pub async fn decide_on_behalf(
        &self,
        approval_id: Uuid,
        delegate: &Principal,
        delegator: &str,
        decision: DecisionKind,
        reason: Option<&str>,
        data: Value,
    ) -> Result<Decided> {
        let decided = self
            .inner
            .approvals
            .decide_on_behalf(
                approval_id,
                delegate,
                delegator,
                None,
                decision,
                reason.map(str::to_owned),
                data,
            )
            .await?;
        Ok(Decided {
            approval: decided.approval,
            execution: decided.progress.execution,
        })
    }

    /// Stores a delegation (who may decide whose requests, for which workflow or role,
    /// and when). Your service checks who may make it, as the API lets a subject
    /// delegate only their own requests unless they are an operator.
    pub async fn delegate(&self, delegation: &Delegation) -> Result<()> {
        Ok(self
            .inner
            .engine
            .store()
            .create_delegation(delegation)
            .await?)
    }

    /// Approves as `principal` (one vote towards the quorum).
    pub async fn approve(
        &self,
        approval_id: Uuid,
        principal: &Principal,
        reason: Option<&str>,
    ) -> Result<Decided> {
        self.decide(
            approval_id,
            principal,
            DecisionKind::Approve,
            reason,
            Value::Object(serde_json::Map::new()),
        )
        .await
    }

    /// Rejects as `principal`; `reason` must not be empty.
    pub async fn reject(
        &self,
        approval_id: Uuid,
        principal: &Principal,
        reason: &str,
    ) -> Result<Decided> {
        self.decide(
            approval_id,
            principal,
            DecisionKind::Reject,
            Some(reason),
            Value::Object(serde_json::Map::new()),
        )
        .await
    }

    /// `principal` claims the pending request ("I'm on it"), under the API's rules:
    /// only someone it addresses, one holder at a time ([`Error::Conflict`] while
    /// someone else holds it). Returns who holds it now.
    pub async fn claim(
        &self,
        approval_id: Uuid,
        principal: &Principal,
    ) -> Result<Option<ApprovalAssignment>> {
        Ok(self.inner.approvals.claim(approval_id, principal).await?)
    }

    /// `principal` lets go of the request: their own hold, or anyone's for an operator.
    pub async fn unclaim(
        &self,
        approval_id: Uuid,
        principal: &Principal,
    ) -> Result<Option<ApprovalAssignment>> {
        Ok(self.inner.approvals.unclaim(approval_id, principal).await?)
    }

    /// An operator (`principal`) gives the request to `to`, who must be someone it
    /// addresses (your service knows their roles; pass them in `to`).
    pub async fn assign(
        &self,
        approval_id: Uuid,
        principal: &Principal,
        to: &Principal,
    ) -> Result<Option<ApprovalAssignment>> {
        Ok(self
            .inner
            .approvals
            .assign(approval_id, principal, to)
            .await?)
    }

    /// Who holds each of `ids` (requests nobody holds are left out).
    pub async fn assignments(&self, ids: &[Uuid]) -> Result<Vec<ApprovalAssignment>> {
        Ok(self.inner.engine.store().assignments(ids).await?)
    }

    // ---- schedules ------------------------------------------------------------

    /// Attaches a cron schedule to a workflow. [`Error::Validation`] names `cron` or
    /// `timezone` when they do not parse.
    pub async fn create_schedule(&self, workflow_id: Uuid, new: NewSchedule) -> Result<Schedule> {
        let timezone = new.timezone.unwrap_or_else(|| "UTC".to_owned());
        let cron = checked_cron(&new.cron, &timezone)?;
        self.workflow(workflow_id).await?;
        let now = self.now();
        Ok(self
            .inner
            .engine
            .store()
            .create_schedule(Schedule {
                id: Uuid::now_v7(),
                workflow_id,
                cron: new.cron,
                timezone,
                enabled: new.enabled,
                catch_up: new.catch_up,
                from_trigger: false,
                next_fire_at: cron.next_after(now),
                last_fired_at: None,
                created_at: now,
                updated_at: now,
            })
            .await?)
    }

    /// One schedule.
    pub async fn schedule(&self, id: Uuid) -> Result<Schedule> {
        Ok(self.inner.engine.store().get_schedule(id).await?)
    }

    /// Schedules, filtered, a page at a time.
    pub async fn schedules(
        &self,
        filter: &ScheduleFilter,
        page: &PageRequest,
    ) -> Result<Page<Schedule>> {
        Ok(self
            .inner
            .engine
            .store()
            .list_schedules(filter, page)
            .await?)
    }

    /// Enables or disables a schedule.
    pub async fn set_schedule_enabled(&self, id: Uuid, enabled: bool) -> Result<Schedule> {
        let mut schedule = self.schedule(id).await?;
        schedule.enabled = enabled;
        schedule.updated_at = self.now();
        Ok(self.inner.engine.store().update_schedule(schedule).await?)
    }

    /// Deletes a schedule (a workflow's trigger schedule comes back with its
    /// definition).
    pub async fn delete_schedule(&self, id: Uuid) -> Result<()> {
        Ok(self.inner.engine.store().delete_schedule(id).await?)
    }

    /// The schedule's next `count` fire times (1 to 100).
    pub async fn next_fires(
        &self,
        id: Uuid,
        count: usize,
    ) -> Result<Vec<tollgate_model::records::Timestamp>> {
        if !(1..=100).contains(&count) {
            return Err(Error::Invalid(format!(
                "`count` must be between 1 and 100, not {count}"
            )));
        }
        let schedule = self.schedule(id).await?;
        let cron = checked_cron(&schedule.cron, &schedule.timezone)?;
        Ok(match schedule.next_fire_at {
            Some(first) => std::iter::once(first)
                .chain(cron.upcoming(first, count - 1))
                .collect(),
            None => Vec::new(),
        })
    }

    /// The schedule's ticks, newest first: when it fired and what it started.
    pub async fn ticks(&self, id: Uuid, page: &PageRequest) -> Result<Page<TickView>> {
        self.schedule(id).await?;
        Ok(self.inner.engine.store().list_ticks(id, page).await?)
    }

    // ---- running --------------------------------------------------------------

    /// Runs the worker loop on the caller's runtime until `shutdown` completes: due
    /// deadlines, schedule ticks, executions abandoned by a dead process, events left
    /// undelivered. Then it stops claiming, gives executions in flight up to
    /// [`DRAIN_TIMEOUT`] to reach a step boundary, and returns. On PostgreSQL it also
    /// watches this host's clock against the server's, and returns
    /// [`Error::Backend`] (clock skew) when it drifts beyond the limit — the host
    /// should stop, as the servers do.
    ///
    /// One loop per process is enough; several processes on one PostgreSQL database
    /// share the work through claims.
    pub async fn run_worker<F>(&self, shutdown: F) -> Result<()>
    where
        F: Future<Output = ()> + Send,
    {
        let token = CancellationToken::new();
        let worker = Worker::new(self.inner.engine.clone(), self.inner.worker.clone())
            .with_waker(self.inner.backend.wakeups.clone());
        let running = tokio::spawn(worker.run_supervised(token.clone()));
        let outcome = tokio::select! {
            () = shutdown => Ok(()),
            err = self.inner.backend.watch_clock() => Err(Error::Backend(err)),
        };
        token.cancel();
        if let Err(err) = running.await {
            tracing::error!("the worker loop ended abnormally: {err}");
        }
        self.drain(DRAIN_TIMEOUT).await;
        outcome
    }

    /// Writes a consistent copy of an SQLite database to `to` (a new file, owner-only)
    /// while the handle stays in use; on PostgreSQL [`Error::Backend`] says to use its
    /// own tools (`pg_dump`, base backups).
    pub async fn backup(&self, to: &std::path::Path) -> Result<()> {
        Ok(self.inner.backend.backup(to).await?)
    }

    /// Waits up to `timeout` for the executions this process is advancing to reach a
    /// step boundary; returns whether all did. Call it before the host exits.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.inner.tasks.drain(timeout).await
    }

    /// Drains ([`Tollgate::drain`]) and closes the database connections. Clones of the
    /// handle cannot be used afterwards.
    pub async fn close(&self, timeout: Duration) {
        self.drain(timeout).await;
        self.inner.backend.close().await;
    }
}

fn checked_cron(cron: &str, timezone: &str) -> Result<CronSchedule> {
    CronSchedule::checked(cron, timezone).map_err(|problems| Error::Validation {
        message: format!("the schedule has {} error(s)", problems.len()),
        problems: problems
            .into_iter()
            .map(|p| Problem {
                path: p.path,
                message: p.message,
            })
            .collect(),
    })
}

/// A worker id unique to this process: `prefix`, host, pid and a random suffix.
pub fn default_worker_id(prefix: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    let suffix = Uuid::new_v4().simple().to_string();
    format!("{prefix}-{host}-{}-{}", std::process::id(), &suffix[..6])
}
