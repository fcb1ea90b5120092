//! The worker loop: claims due timers, overdue executions and expired leases, and runs
//! them.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tollgate_engine::Engine;
use tollgate_model::records::Execution;

use crate::Result;

/// Tuning of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Executions claimed per query.
    pub batch: u32,
    /// Executions advanced at once.
    pub concurrency: usize,
    /// Sleep between passes when nothing wakes the worker earlier (the safety net
    /// behind wake-ups).
    pub poll_interval: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            batch: 100,
            concurrency: 16,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Executions ended by their workflow deadline.
    pub timed_out: usize,
    /// Gates whose deadline passed (approvals expired, waits timed out), resumed.
    pub gates: usize,
    /// Executions with an expired or released lease, taken over.
    pub leases: usize,
}

impl TickReport {
    /// Total executions touched.
    pub fn total(&self) -> usize {
        self.timed_out + self.gates + self.leases
    }
}

/// Claims due work in batches and advances it with bounded concurrency.
#[derive(Debug, Clone)]
pub struct Worker {
    engine: Engine,
    options: WorkerOptions,
    wake: Arc<Notify>,
}

impl Worker {
    /// A worker running executions with `engine`.
    pub fn new(engine: Engine, options: WorkerOptions) -> Self {
        Self {
            engine,
            options,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Uses `wake` (e.g. a backend's wake-up signal: `LISTEN/NOTIFY` on PostgreSQL, the
    /// writer's commits on SQLite) to end a poll interval early.
    pub fn with_waker(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// A handle that wakes the loop before its poll interval is over (a backend's
    /// notification, or a gate with a near deadline).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// One pass: ends overdue executions, claims due gates and expired leases (a batch
    /// each) and advances what it claimed, waiting for all of them.
    pub async fn tick(&self) -> Result<TickReport> {
        let store = self.engine.store();
        let now = self.engine.clock().now();
        let ended = store.time_out_overdue(now, self.options.batch).await?;
        for execution in &ended {
            tracing::info!(execution_id = %execution.id, "execution timed out (workflow deadline)");
        }
        let gates = store
            .claim_due_gates(now, &self.engine.claim(), self.options.batch)
            .await?;
        for execution in &gates {
            if let Some(deadline) = execution.gate.as_ref().and_then(|g| g.deadline) {
                let lag = (now - deadline).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::histogram!("tollgate_timer_lag_seconds").record(lag);
            }
        }
        let leases = store
            .claim_expired_leases(now, &self.engine.claim(), self.options.batch)
            .await?;
        let report = TickReport {
            timed_out: ended.len(),
            gates: gates.len(),
            leases: leases.len(),
        };
        self.advance_all(gates.into_iter().chain(leases)).await;
        Ok(report)
    }

    async fn advance_all(&self, executions: impl Iterator<Item = Execution>) {
        stream::iter(executions)
            .for_each_concurrent(self.options.concurrency.max(1), |execution| async move {
                let id = execution.id;
                match self.engine.advance(execution).await {
                    Ok(done) => {
                        tracing::debug!(execution_id = %id, status = %done.status, "advanced");
                    }
                    Err(tollgate_engine::Error::Lost(_)) => {
                        tracing::info!(execution_id = %id, "taken over elsewhere");
                    }
                    Err(err) => tracing::error!(execution_id = %id, "advancing failed: {err}"),
                }
            })
            .await;
    }

    /// Runs passes until `shutdown` is cancelled: immediately again after a full batch,
    /// otherwise after the poll interval or a wake-up. Work in flight finishes before it
    /// returns.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(worker = %self.engine.worker_id(), "worker loop started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            let busy = match self.tick().await {
                Ok(report) => {
                    report.gates == self.options.batch as usize
                        || report.leases == self.options.batch as usize
                }
                Err(err) => {
                    tracing::error!(worker = %self.engine.worker_id(), "worker pass failed: {err}");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.options.poll_interval) => {}
            }
        }
        tracing::info!(worker = %self.engine.worker_id(), "worker loop stopped");
    }
}
