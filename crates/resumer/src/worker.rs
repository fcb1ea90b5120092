//! The worker loop: claims due timers, overdue executions and expired leases, and runs
//! them.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_engine::Engine;
use tollgate_engine::StartRequest;
use tollgate_model::records::Execution;
use tollgate_store::ClaimedTick;

use crate::keying::Keying;
use crate::outbox::{OutboxOptions, OutboxReport};
use crate::retention::{Retention, RetentionOptions};
use crate::Result;

/// After a wake-up, the worker waits this long before its pass, so that a burst of
/// wake-ups costs one pass.
const WAKE_COALESCE: Duration = Duration::from_millis(25);

/// The shortest sleep between passes that were not busy.
const MIN_PAUSE: Duration = Duration::from_millis(10);

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
    /// How long after its arrival an event's delivery to waiting executions is left to
    /// the process that stored it; after that the worker delivers it (again) itself, so
    /// an event whose ingesting process died half-way still reaches every execution
    /// that waited for it.
    pub delivery_grace: Duration,
    /// How often the loop records its heartbeat (`WorkerStore::heartbeat`), so that the
    /// API can say which loops run and warn when none does.
    pub heartbeat_interval: Duration,
    /// The longest a pass's claims, its heartbeat or its schedule look-up may take. A
    /// call the database never answers (a connection black-holed by a network
    /// partition or a failover: TCP gives up only after about 15 minutes) would
    /// otherwise stop the loop for that long; past this bound the pass is abandoned
    /// and the next one starts on fresh connections. What an abandoned pass had
    /// claimed is taken over once its lease expires, as after a crash.
    pub pass_timeout: Duration,
    /// History retention: which ended executions are deleted, and how fast.
    pub retention: RetentionOptions,
    /// Sending queued notifications and firing approval ladders.
    pub outbox: OutboxOptions,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            batch: 100,
            concurrency: 16,
            poll_interval: Duration::from_secs(1),
            delivery_grace: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            pass_timeout: Duration::from_secs(60),
            retention: RetentionOptions::default(),
            outbox: OutboxOptions::default(),
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
    /// Schedule ticks whose execution this pass started.
    pub ticks: usize,
    /// Events whose delivery this pass finished (their ingesting process had not).
    pub events: usize,
    /// Ended executions deleted because their retention passed (not counted in
    /// [`Self::total`]: deleting history advances nothing).
    pub purged: usize,
    /// Events nobody took deleted because their retention passed (not counted either).
    pub events_purged: u64,
    /// Stored events given their correlation keys (not counted either).
    pub events_keyed: u64,
    /// Approval rungs fired and notifications sent (not counted either: they advance
    /// no execution).
    pub outbox: OutboxReport,
}

impl TickReport {
    /// Total executions touched.
    pub fn total(&self) -> usize {
        self.timed_out + self.gates + self.leases + self.ticks + self.events
    }
}

/// Claims due work in batches and advances it with bounded concurrency.
#[derive(Debug, Clone)]
pub struct Worker {
    engine: Engine,
    options: WorkerOptions,
    wake: Arc<Notify>,
    /// One permit per execution advanced at once.
    slots: Arc<Semaphore>,
    /// Cancelled when the loop is told to stop: claimed executions still waiting for a
    /// slot then give their lease up instead of starting.
    stopping: CancellationToken,
    retention: Retention,
    keying: Keying,
}

impl Worker {
    /// A worker running executions with `engine`.
    pub fn new(engine: Engine, options: WorkerOptions) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(options.concurrency.max(1))),
            retention: Retention::new(engine.clone(), options.retention.clone()),
            keying: Keying::new(engine.clone(), options.delivery_grace),
            engine,
            options,
            wake: Arc::new(Notify::new()),
            stopping: CancellationToken::new(),
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
    /// each) and advances what it claimed, waiting for all of them (at most
    /// `concurrency` at once). For tests and tools that want a pass to be over when it
    /// returns; [`Self::run`] does not wait.
    pub async fn tick(&self) -> Result<TickReport> {
        let mut advancing = Vec::new();
        let report = self.pass(self.options.batch, &mut advancing).await;
        for task in advancing {
            if let Err(err) = task.await {
                tracing::error!("advancing task failed: {err}");
            }
        }
        report
    }

    /// Claims up to `limit` executions of each kind and starts advancing each in a task
    /// of its own, kept in `advancing` as it starts (so a pass abandoned half-way still
    /// leaves the caller every task it started); returns without waiting for them.
    async fn pass(&self, limit: u32, advancing: &mut Vec<JoinHandle<()>>) -> Result<TickReport> {
        let store = self.engine.store();
        let now = self.engine.clock().now();
        let ended = store.time_out_overdue(now, self.options.batch).await?;
        for execution in &ended {
            tracing::info!(execution_id = %execution.id, "execution timed out (workflow deadline)");
        }
        let mut left = limit;
        let gates = if left > 0 {
            store
                .claim_due_gates(now, &self.engine.claim(), left)
                .await?
        } else {
            Vec::new()
        };
        left = left.saturating_sub(gates.len() as u32);
        for execution in &gates {
            if let Some(deadline) = execution.gate.as_ref().and_then(|g| g.deadline) {
                let lag = (now - deadline).num_milliseconds().max(0) as f64 / 1000.0;
                metrics::histogram!("tollgate_timer_lag_seconds").record(lag);
            }
        }
        let report_gates = gates.len();
        advancing.extend(gates.into_iter().map(|e| self.spawn_advance(e)));
        let leases = if left > 0 {
            store
                .claim_expired_leases(now, &self.engine.claim(), left)
                .await?
        } else {
            Vec::new()
        };
        left = left.saturating_sub(leases.len() as u32);
        let report_leases = leases.len();
        advancing.extend(leases.into_iter().map(|e| self.spawn_advance(e)));
        let started = if left > 0 {
            self.fire_schedules(now, left).await?
        } else {
            Vec::new()
        };
        let report_ticks = started.len();
        advancing.extend(started.into_iter().map(|e| self.spawn_advance(e)));
        // Undelivered events are swept whatever the free slots: most resume nothing, and
        // an execution one does resume waits for a slot with its lease renewed.
        let (events, resumed) = self.deliver_pending(now, self.options.batch).await?;
        advancing.extend(resumed.into_iter().map(|e| self.spawn_advance(e)));
        // Deleting history is housekeeping: its failure is logged and retried on a later
        // pass, never a reason to count the pass as failed.
        let (purged, events_purged) = self.retention.pass(now).await;
        let events_keyed = self.keying.pass(now).await.unwrap_or_else(|err| {
            tracing::warn!("keying stored events failed (retried later): {err}");
            0
        });
        // Sends run in tasks of their own: a slow receiver never holds up the pass.
        let outbox = crate::outbox::pass(&self.engine, &self.options.outbox, now, advancing)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!("the outbox pass failed (retried later): {err}");
                OutboxReport::default()
            });
        let report = TickReport {
            timed_out: ended.len(),
            gates: report_gates,
            leases: report_leases,
            ticks: report_ticks,
            events,
            purged: purged.unwrap_or_else(|err| {
                tracing::warn!("history retention failed (retried later): {err}");
                0
            }),
            events_purged: events_purged.unwrap_or_else(|err| {
                tracing::warn!("event retention failed (retried later): {err}");
                0
            }),
            events_keyed,
            outbox,
        };
        Ok(report)
    }

    /// Advances a claimed execution in a task of its own, once a slot is free. While it
    /// waits for one it keeps renewing its lease, so a claimed execution is never left
    /// to lapse in the queue and be taken over as if this worker had died.
    fn spawn_advance(&self, execution: Execution) -> JoinHandle<()> {
        let engine = self.engine.clone();
        let slots = self.slots.clone();
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let id = execution.id;
            let Some(_slot) = wait_for_slot(&engine, &slots, &stopping, id).await else {
                return;
            };
            match engine.advance(execution).await {
                Ok(done) => {
                    tracing::debug!(execution_id = %id, status = %done.status, "advanced");
                }
                Err(tollgate_engine::Error::Lost(_)) => {
                    tracing::info!(execution_id = %id, "taken over elsewhere");
                }
                Err(err) => tracing::error!(execution_id = %id, "advancing failed: {err}"),
            }
        })
    }

    /// Finishes the delivery of events stored more than `delivery_grace` ago and not
    /// yet marked delivered: offers each to the executions waiting for it (again — an
    /// execution consumes an event once), then marks them. Returns how many were marked
    /// and the executions this pass claimed with them.
    async fn deliver_pending(
        &self,
        now: tollgate_model::records::Timestamp,
        limit: u32,
    ) -> Result<(usize, Vec<Execution>)> {
        let store = self.engine.store();
        let grace = chrono::TimeDelta::from_std(self.options.delivery_grace)
            .unwrap_or(chrono::TimeDelta::MAX);
        let before = now.checked_sub_signed(grace).unwrap_or(now);
        let pending = store.undelivered_events(before, limit).await?;
        let mut claimed = Vec::new();
        let mut delivered = Vec::with_capacity(pending.len());
        // Most events wait for nobody: one probe per event type and pass tells, instead
        // of a scan of the waiting executions per event.
        let mut awaited: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
        for event in pending {
            if event.correlation_id.is_none() {
                let waits = match awaited.get(&event.event_type) {
                    Some(waits) => *waits,
                    None => {
                        // Plain waits, or event gates of `first_of` steps.
                        let waits = !store
                            .waiting_for_event(&event.event_type, None, 1, now)
                            .await?
                            .is_empty()
                            || !store.first_of_shapes(&event.event_type).await?.is_empty();
                        awaited.insert(event.event_type.clone(), waits);
                        waits
                    }
                };
                if !waits {
                    delivered.push(event.id);
                    continue;
                }
            }
            // An event that cannot be delivered now (the store failed) stays pending
            // for the next pass; the others are marked.
            match crate::events::deliver(&self.engine, &event).await {
                Ok(resumed) => {
                    if !resumed.is_empty() {
                        tracing::warn!(event_id = %event.id, resumed = resumed.len(), "an event's delivery was finished by the worker: its ingesting process stopped before delivering it");
                    }
                    if let Err(err) =
                        crate::events::record_resumed(&self.engine, event.clone(), &resumed).await
                    {
                        tracing::warn!(event_id = %event.id, "cannot record the executions an event resumed: {err}");
                    }
                    claimed.extend(
                        resumed
                            .into_iter()
                            .filter(|(_, ours)| *ours)
                            .map(|(e, _)| e),
                    );
                    delivered.push(event.id);
                }
                Err(err) => {
                    tracing::error!(event_id = %event.id, "cannot deliver an event (retried next pass): {err}");
                }
            }
        }
        if !delivered.is_empty() {
            store.mark_events_delivered(&delivered).await?;
        }
        Ok((delivered.len(), claimed))
    }

    /// Claims due schedule ticks and starts one execution per tick (atomically with
    /// marking the tick started); returns the started executions, to be advanced. A
    /// tick whose workflow vanished is marked failed; one that another worker took over
    /// meanwhile is left to it.
    async fn fire_schedules(
        &self,
        now: tollgate_model::records::Timestamp,
        limit: u32,
    ) -> Result<Vec<Execution>> {
        let store = self.engine.store();
        let claim = self.engine.claim();
        let claimed = store.claim_ticks(now, &claim, limit).await?;
        let mut started = Vec::with_capacity(claimed.len());
        for ClaimedTick { tick, schedule } in claimed {
            let workflow = match store.get_workflow(schedule.workflow_id).await {
                Ok(workflow) => workflow,
                Err(err) if err.is_not_found() => {
                    let _ = store
                        .fail_tick(tick.id, &claim.owner, "the workflow was deleted", now)
                        .await;
                    continue;
                }
                Err(err) => {
                    // Left pending: its lease lapses and a later pass retries it.
                    tracing::error!(schedule_id = %schedule.id, "cannot load the workflow of a tick: {err}");
                    continue;
                }
            };
            let request = StartRequest {
                workflow,
                trigger_event: "schedule".into(),
                payload: json!({"schedule": {"id": schedule.id, "tick": tick.tick_time, "cron": schedule.cron}}),
                event_id: None,
                event_key: Some(format!(
                    "schedule:{}:{}",
                    schedule.id,
                    tick.tick_time.to_rfc3339()
                )),
                source: Some("schedule".into()),
                requested_by: None,
            };
            let execution = self.engine.prepare(request);
            match store
                .start_tick(tick.id, &claim.owner, execution, now)
                .await
            {
                Ok(execution) => {
                    let lag = (now - tick.tick_time).num_milliseconds().max(0) as f64 / 1000.0;
                    metrics::counter!("tollgate_schedule_ticks_fired_total").increment(1);
                    metrics::counter!("tollgate_executions_started_total").increment(1);
                    metrics::histogram!("tollgate_schedule_tick_lag_seconds").record(lag);
                    tracing::info!(execution_id = %execution.id, schedule_id = %schedule.id, tick = %tick.tick_time, "schedule tick started an execution");
                    started.push(execution);
                }
                Err(err) if err.is_conflict() => {
                    tracing::info!(schedule_id = %schedule.id, tick = %tick.tick_time, "tick taken over by another worker");
                }
                Err(err) => {
                    tracing::error!(schedule_id = %schedule.id, tick = %tick.tick_time, "cannot start a tick (retried after its lease): {err}");
                }
            }
        }
        Ok(started)
    }

    /// How long to sleep before the next pass: the poll interval, or less when a schedule
    /// fires sooner, so that ticks start on time rather than up to a poll interval late.
    async fn until_next_tick(&self) -> Duration {
        let poll = self.options.poll_interval;
        let next = tokio::time::timeout(
            self.options.pass_timeout,
            self.engine.store().next_fire_at(),
        )
        .await
        .unwrap_or_else(|_| Err(unanswered(self.options.pass_timeout)));
        match next {
            // Never below a few milliseconds: a schedule another process is claiming
            // right now looks due until that claim commits.
            Ok(Some(at)) => (at - self.engine.clock().now())
                .to_std()
                .map_or(MIN_PAUSE, |d| d.clamp(MIN_PAUSE, poll.max(MIN_PAUSE))),
            Ok(None) => poll,
            Err(err) => {
                tracing::warn!("cannot read the next schedule fire time: {err}");
                poll
            }
        }
    }

    /// Runs passes until `shutdown` is cancelled: immediately again after a full batch,
    /// otherwise after the poll interval or a wake-up. Work in flight finishes before it
    /// returns.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.stopping = shutdown.clone();
        tracing::info!(worker = %self.engine.worker_id(), "worker loop started");
        let concurrency = self.options.concurrency.max(1);
        let mut in_flight: Vec<JoinHandle<()>> = Vec::new();
        let mut heart = Heart::new(self.engine.clock().now());
        loop {
            // Finished tasks leave first: one whose end woke the loop below has been
            // polled to completion and must not be awaited again.
            in_flight.retain(|task| !task.is_finished());
            if shutdown.is_cancelled() {
                break;
            }
            // Claims keep flowing while executions run: a pass claims only as many as
            // there are free slots, starts them, and the loop goes on — a slow
            // execution never holds back deadlines, take-overs or schedule ticks.
            let free = concurrency.saturating_sub(in_flight.len());
            let limit = (self.options.batch as usize).min(free) as u32;
            let bound = self.options.pass_timeout;
            let pass = tokio::time::timeout(bound, self.pass(limit, &mut in_flight))
                .await
                .unwrap_or_else(|_| Err(unanswered(bound).into()));
            let full = match pass {
                Ok(report) => {
                    heart.claimed += report.total() as u64;
                    let claimed = report.gates + report.leases + report.ticks + report.events;
                    limit > 0 && claimed >= limit as usize
                }
                Err(err) => {
                    tracing::error!(worker = %self.engine.worker_id(), "worker pass failed: {err}");
                    false
                }
            };
            if tokio::time::timeout(bound, heart.beat_if_due(&self))
                .await
                .is_err()
            {
                tracing::warn!(worker = %self.engine.worker_id(), "the heartbeat was not recorded within {bound:?}");
            }
            let slots_left = in_flight.len() < concurrency;
            if full && slots_left {
                continue;
            }
            // Slots all taken: the next pass waits for one to free (or a wake-up, or
            // the poll interval), not for every execution in flight.
            let slot_freed = async {
                if in_flight.is_empty() || slots_left {
                    std::future::pending::<()>().await;
                } else {
                    let (_finished, _, _) =
                        futures_util::future::select_all(in_flight.iter_mut()).await;
                }
            };
            let pause = self.until_next_tick().await.min(heart.until_due());
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = slot_freed => {}
                () = self.wake.notified() => {
                    // Wake-ups come with every gate and released lease — under load,
                    // hundreds a second — while what they announce is due later, not
                    // now. Coalescing them keeps the worker from claiming in a tight
                    // loop against the writers it should leave alone.
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(WAKE_COALESCE.min(self.options.poll_interval)) => {}
                    }
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
        // Work in flight finishes before the loop returns.
        for task in in_flight {
            if let Err(err) = task.await {
                tracing::error!("advancing task failed: {err}");
            }
        }
        tracing::info!(worker = %self.engine.worker_id(), "worker loop stopped");
    }
}

/// A pass the database did not answer within `bound`.
fn unanswered(bound: Duration) -> tollgate_store::Error {
    tollgate_store::Error::Unavailable(format!(
        "the database did not answer within {bound:?}; the pass was abandoned"
    ))
}

/// First pause before a panicked loop is started again; it doubles per panic, up to
/// [`MAX_RESTART_BACKOFF`], and starts over once a loop has run for a minute.
const FIRST_RESTART_BACKOFF: Duration = Duration::from_millis(250);
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(30);

impl Worker {
    /// [`Self::run`], supervised: a loop that panics (a bug, or a row it cannot handle)
    /// is logged, counted (`tollgate_worker_restarts_total`) and started again after a
    /// growing pause, instead of leaving a process that looks alive while nothing
    /// claims deadlines. Executions the dead loop had claimed are taken over when their
    /// leases expire, as after a crash. Returns when `shutdown` is cancelled.
    pub async fn run_supervised(self, shutdown: CancellationToken) {
        let mut backoff = FIRST_RESTART_BACKOFF;
        loop {
            let started = tokio::time::Instant::now();
            let run = tokio::spawn(self.clone().run(shutdown.clone()));
            match run.await {
                Ok(()) => return,
                Err(err) => {
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = FIRST_RESTART_BACKOFF;
                    }
                    metrics::counter!("tollgate_worker_restarts_total").increment(1);
                    tracing::error!(
                        worker = %self.engine.worker_id(),
                        "the worker loop stopped unexpectedly ({err}); starting it again in {} ms",
                        backoff.as_millis()
                    );
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_RESTART_BACKOFF);
                }
            }
        }
    }
}

/// The loop's heartbeat: written at the first pass and then every
/// `heartbeat_interval`, with what the loop claimed in between. A failed write is
/// logged and retried at the next pass; the claims are kept for it.
struct Heart {
    started_at: tollgate_model::records::Timestamp,
    due: tokio::time::Instant,
    claimed: u64,
}

impl Heart {
    fn new(started_at: tollgate_model::records::Timestamp) -> Self {
        Self {
            started_at,
            due: tokio::time::Instant::now(),
            claimed: 0,
        }
    }

    fn until_due(&self) -> Duration {
        self.due
            .saturating_duration_since(tokio::time::Instant::now())
            .max(MIN_PAUSE)
    }

    async fn beat_if_due(&mut self, worker: &Worker) {
        if tokio::time::Instant::now() < self.due {
            return;
        }
        let now = worker.engine.clock().now();
        let id = worker.engine.worker_id();
        match worker
            .engine
            .store()
            .heartbeat(id, self.started_at, now, self.claimed)
            .await
        {
            Ok(()) => {
                self.claimed = 0;
                self.due = tokio::time::Instant::now() + worker.options.heartbeat_interval;
            }
            Err(err) => {
                tracing::warn!(worker = %id, "cannot record the worker's heartbeat: {err}");
            }
        }
    }
}

/// Waits for a free slot, renewing the execution's lease every third of its length
/// meanwhile; `None` when a renewal is refused (the execution was cancelled or taken
/// over while it queued), or when the loop is stopping (the lease is then given up).
async fn wait_for_slot(
    engine: &Engine,
    slots: &Arc<Semaphore>,
    stopping: &CancellationToken,
    id: uuid::Uuid,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let period = (engine.lease() / 3).max(Duration::from_millis(10));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let acquire = slots.clone().acquire_owned();
    tokio::pin!(acquire);
    loop {
        tokio::select! {
            biased;
            // Stopping: not started, so given back for another process to take at once
            // rather than when the lease runs out.
            () = stopping.cancelled() => {
                let owner = engine.claim().owner;
                match engine.store().release_lease(id, &owner, engine.clock().now()).await {
                    Ok(()) => tracing::info!(execution_id = %id, "stopping: lease given up before starting"),
                    Err(err) => tracing::warn!(execution_id = %id, "stopping: could not give the lease up (it runs out on its own): {err}"),
                }
                return None;
            }
            permit = &mut acquire => return permit.ok(),
            _ = renew.tick() => {
                let claim = engine.claim();
                match engine.store().renew_lease(id, &claim.owner, claim.expires_at).await {
                    Ok(()) => {}
                    Err(err) if err.is_conflict() => {
                        tracing::info!(execution_id = %id, "lost while waiting for a slot: {err}");
                        return None;
                    }
                    Err(err) => tracing::warn!(execution_id = %id, "lease renewal failed: {err}"),
                }
            }
        }
    }
}
