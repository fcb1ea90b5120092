//! What wakes Tollgate executions: approval decisions ([`ApprovalService`]), events
//! ([`EventService`]), operators ([`ExecutionControl`]) and time ([`Worker`]: deadlines,
//! abandoned executions and schedule ticks).
//!
//! Every wake-up follows docs/ARCHITECTURE.md, "The flow of an execution": store the signal and claim the execution in one
//! store call; whoever claims runs it, everyone else gets [`Error::Conflict`]. Every
//! attempt — accepted or refused — leaves a resume-request audit row.
//!
//! Claimed executions are advanced in a spawned task, so a caller that stops waiting
//! (an HTTP request that times out) never abandons an execution half-way; see
//! [`Progress::settled`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use tollgate_engine::Engine;
//! use tollgate_model::records::{snapshot_id, DecisionKind, Principal, Workflow};
//! use tollgate_resumer::{ApprovalService, EventService, NewEvent};
//! use tollgate_store::{MemoryStore, Store};
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let engine = Engine::builder(store.clone()).build()?;
//! let doc = serde_json::json!({"workflow_id": "refunds", "version": "1",
//!     "trigger": {"type": "event", "event": "refund.requested"},
//!     "steps": [{"id": "ok", "type": "approval", "approval": {"approvers": {"role": "finance"}},
//!                "on_approve": "pay"},
//!               {"id": "pay", "type": "action", "action": "allow"}]});
//! let definition = Arc::new(tollgate_model::load(&doc).map_err(|r| format!("{:?}", r.errors))?.definition);
//! let now = engine.clock().now();
//! store.create_workflow(Workflow { id: uuid::Uuid::now_v7(), snapshot_id: snapshot_id(&definition),
//!     enabled: true, definition, created_at: now, updated_at: now }).await?;
//!
//! // An event starts the workflow; it stops at the approval.
//! let events = EventService::new(engine.clone());
//! let ingested = events.ingest(NewEvent { event_type: "refund.requested".into(),
//!     payload: serde_json::json!({"amount": 80}), ..NewEvent::default() }).await?;
//! let paused = ingested.started.into_iter().next().ok_or("nothing started")?
//!     .settled(&engine, std::time::Duration::from_secs(5)).await?;
//! let approval_id = paused.gate.and_then(|g| g.approval_id).ok_or("no approval")?;
//!
//! // A decision claims the execution and resumes it; a second one is refused.
//! let approvals = ApprovalService::new(engine.clone());
//! let fin = Principal { subject: "fin".into(), roles: vec!["finance".into()] };
//! let decided = approvals.decide(approval_id, &fin, DecisionKind::Approve, None, serde_json::json!({})).await?;
//! let done = decided.progress.settled(&engine, std::time::Duration::from_secs(5)).await?;
//! assert_eq!(done.result, Some(tollgate_model::ExecutionResult::Allowed));
//! let twice = approvals.decide(approval_id, &fin, DecisionKind::Approve, None, serde_json::json!({})).await;
//! assert!(matches!(twice, Err(tollgate_resumer::Error::Conflict(_))));
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod approvals;
mod archive;
mod control;
mod events;
mod keying;
mod migrate;
mod outbox;
mod retention;
mod retry;
mod worker;

use std::time::Duration;

use tollgate_engine::Engine;
use tollgate_model::records::{Execution, StepRecord};

pub use approvals::{ApprovalService, Decided};
pub use archive::ArchiveDir;
pub use control::ExecutionControl;
pub use events::{DirectDelivery, EventService, Ingested, NewEvent};
pub use migrate::{
    MigrateCommand, MigrationItem, MigrationOutcome, MigrationReport, MigrationSelection,
};
pub use outbox::{OutboxOptions, OutboxReport};
pub use retention::{RetentionOptions, DEFAULT_EVENT_RETENTION};
pub use retry::{RetryCommand, RetryItem, RetryOutcome, RetryReport, RetrySelection, MAX_BULK};
pub use worker::{TickReport, Worker, WorkerOptions};

/// Where claimed executions are advanced: a runtime plus a tracker, so that a process
/// can wait for every execution it is advancing before it exits (graceful shutdown).
///
/// Services without a `Tasks` spawn onto the ambient runtime. A server whose request
/// handlers run on short-lived per-thread runtimes (actix-web) gives its services a
/// `Tasks` on its main runtime, so that stopping the HTTP workers never drops an
/// execution half-way through a step.
#[derive(Debug, Clone)]
pub struct Tasks {
    handle: tokio::runtime::Handle,
    tracker: tokio_util::task::TaskTracker,
}

impl Tasks {
    /// Tasks spawned on `handle`.
    pub fn new(handle: tokio::runtime::Handle) -> Self {
        Self {
            handle,
            tracker: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Executions being advanced right now.
    pub fn in_flight(&self) -> usize {
        self.tracker.len()
    }

    /// Stops accepting nothing new (spawning still works, so late requests are not
    /// lost) and waits up to `timeout` for the executions in flight; returns whether all
    /// finished. Those still running keep their lease, which expires for another worker.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.tracker.close();
        let done = tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok();
        self.tracker.reopen();
        done
    }

    fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn_on(future, &self.handle)
    }
}

/// What can go wrong when waking an execution.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The approval, execution or event does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this (→ 403).
    #[error("{0}")]
    Forbidden(String),
    /// The state does not allow it, or another caller won the race (→ 409).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (→ 400).
    #[error("{0}")]
    Invalid(String),
    /// An approval's `data` does not satisfy the step's decision form (→ 400
    /// `validation_failed`), field by field.
    #[error("the decision's data does not satisfy the step's form")]
    FormInvalid(Vec<tollgate_model::form::FormProblem>),
    /// The store failed.
    #[error(transparent)]
    Store(tollgate_store::Error),
    /// The engine failed.
    #[error(transparent)]
    Engine(tollgate_engine::Error),
}

impl From<tollgate_store::Error> for Error {
    fn from(err: tollgate_store::Error) -> Self {
        match err {
            tollgate_store::Error::NotFound { what, id } => {
                Self::NotFound(format!("{what} {id} not found"))
            }
            tollgate_store::Error::Conflict(message) => Self::Conflict(message),
            tollgate_store::Error::Refused { refusal, .. } if refusal.is_forbidden() => {
                Self::Forbidden(refusal.to_string())
            }
            tollgate_store::Error::Refused { refusal, .. } => Self::Conflict(refusal.to_string()),
            tollgate_store::Error::Invalid(message) => Self::Invalid(message),
            err @ tollgate_store::Error::NewerFormat { .. } => Self::Conflict(err.to_string()),
            tollgate_store::Error::Form(tollgate_store::FormRefusal::Invalid(problems)) => {
                Self::FormInvalid(problems)
            }
            // Only when the definition went out of the cache again before the second
            // try (ApprovalService decides again once it is loaded): try later.
            other @ (tollgate_store::Error::Form(tollgate_store::FormRefusal::Unloaded(_))
            | tollgate_store::Error::Backend(_)
            | tollgate_store::Error::Unreadable(_)
            | tollgate_store::Error::Unavailable(_)) => Self::Store(other),
        }
    }
}

impl From<tollgate_engine::Error> for Error {
    fn from(err: tollgate_engine::Error) -> Self {
        match err {
            tollgate_engine::Error::Store(store) => store.into(),
            other => Self::Engine(other),
        }
    }
}

/// Results of resumer calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An execution that was durably claimed (or created) and is being advanced in the
/// background.
#[derive(Debug)]
pub struct Progress {
    /// The execution as it was when claimed.
    pub execution: Execution,
    running: Option<tokio::task::JoinHandle<tollgate_engine::Result<Execution>>>,
    /// `execution` is already stored as it stopped (at a gate or its end).
    stopped: bool,
}

impl Progress {
    /// Starts advancing `execution` (held by `engine`'s worker) in a task, on `tasks`
    /// when given (else on the current runtime). `trigger` labels the resume-latency
    /// metric: the time from the signal being recorded to the execution's next stop.
    pub fn spawn(
        engine: &Engine,
        tasks: Option<&Tasks>,
        execution: Execution,
        trigger: &'static str,
    ) -> Self {
        Self::spawn_begun(engine, tasks, execution, None, trigger)
    }

    /// [`Self::spawn`] for an execution stored with the `running` record of the step at
    /// its cursor (see [`Engine::advance_begun`]).
    pub fn spawn_begun(
        engine: &Engine,
        tasks: Option<&Tasks>,
        execution: Execution,
        begun: Option<StepRecord>,
        trigger: &'static str,
    ) -> Self {
        let worker = engine.clone();
        let claimed = execution.clone();
        let advance = async move {
            let began = std::time::Instant::now();
            let outcome = worker.advance_begun(claimed, begun).await;
            metrics::histogram!("tollgate_resume_latency_seconds", "trigger" => trigger)
                .record(began.elapsed().as_secs_f64());
            outcome
        };
        let running = match tasks {
            Some(tasks) => tasks.spawn(advance),
            None => tokio::spawn(advance),
        };
        Self {
            execution,
            running: Some(running),
            stopped: false,
        }
    }

    /// Nothing to advance (e.g. a partial approval); settling reads its current state.
    pub fn idle(execution: Execution) -> Self {
        Self {
            execution,
            running: None,
            stopped: false,
        }
    }

    /// An execution stored as it stands at its gate or end (started and run ahead of
    /// storage): settling returns it as is.
    pub fn stopped(execution: Execution) -> Self {
        Self {
            execution,
            running: None,
            stopped: true,
        }
    }

    /// Waits up to `timeout` for the execution to reach its next gate or end, then
    /// returns its stored state. The advancing task keeps going if the wait times out.
    pub async fn settled(self, engine: &Engine, timeout: Duration) -> Result<Execution> {
        let id = self.execution.id;
        if self.stopped {
            return Ok(self.execution);
        }
        if let Some(mut running) = self.running {
            match tokio::time::timeout(timeout, &mut running).await {
                Ok(Ok(Ok(execution))) => return Ok(execution),
                Ok(Ok(Err(tollgate_engine::Error::Lost(_)))) | Err(_) => {}
                Ok(Ok(Err(err))) => return Err(err.into()),
                Ok(Err(join)) => {
                    tracing::error!(execution_id = %id, "advancing task failed: {join}");
                }
            }
        }
        Ok(engine.store().get_execution(id).await?)
    }
}

/// Audit row for an attempt that was refused.
pub(crate) fn refused(
    engine: &Engine,
    execution_id: uuid::Uuid,
    trigger: tollgate_model::records::ResumeTrigger,
    actor: Option<&str>,
    data: serde_json::Value,
    error: &str,
) -> tollgate_model::records::ResumeRequest {
    tollgate_model::records::ResumeRequest {
        id: uuid::Uuid::now_v7(),
        execution_id,
        trigger,
        actor: actor.map(str::to_owned),
        data,
        requested_at: engine.clock().now(),
        executed_at: None,
        outcome: tollgate_model::records::ResumeOutcome::Refused,
        error: Some(error.to_owned()),
    }
}

/// Records a refused attempt; a failure to record it is logged, not returned, so the
/// caller still gets the refusal itself.
pub(crate) async fn audit_refusal(engine: &Engine, row: tollgate_model::records::ResumeRequest) {
    let id = row.execution_id;
    if let Err(err) = engine.store().record_resume_request(row).await {
        tracing::error!(execution_id = %id, "could not record a refused resume attempt: {err}");
    }
}
