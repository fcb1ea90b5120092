//! One advancement of one execution: the step loop, its commits, and how a failed
//! attempt is retried or ends the run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate_model::definition::{Step, StepKind};
use tollgate_model::records::{
    ApprovalRequest, Cursor, Execution, ExecutionError, Gate, StepError, StepRecord, StepStatus,
    Timestamp, Wake,
};
use tollgate_model::undo::{diff, ContextUndo, Prior};
use tollgate_model::{
    ErrorKind, ExecutionResult, ExecutionStatus, PauseReason, WorkflowDefinition,
};
use tollgate_store::{Committed, Effect, Starting, StepCommit, Transition};
use tracing::Instrument;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::path::{set_path, Found};
use crate::steps::{record_id, Body, Env, Tools};
use crate::template::{redact_secrets, Mode, Resolved, Scope};

use super::compiled::Compiled;
use super::{record_commit_metrics, Ahead, Engine, Inner, CONTEXT_STEP};

/// Side-effect-free steps committed together at most.
pub(super) const MAX_PURE_BATCH: usize = 100;

/// One advancement of one execution: the local copy and what it is pinned to.
pub(super) struct Run<'e> {
    pub(super) engine: &'e Engine,
    pub(super) exec: Execution,
    pub(super) compiled: Arc<Compiled>,
    /// Records of side-effect-free steps run since the last commit. They are committed
    /// with the next commit (which any side effect, gate or end forces); a crash before
    /// that only loses steps that rerun identically from the committed cursor.
    pub(super) pending: Vec<StepRecord>,
    /// True when `exec` is known to equal the stored row: right after one of our
    /// commits, until another write (a step start) changes it.
    pub(super) exact: bool,
    /// Running ahead of storage ([`Engine::run_ahead`]): the execution is not stored yet,
    /// so only side-effect-free steps run, and the first commit is kept here instead of
    /// being sent — it stops the run.
    pub(super) ahead: Option<Deferred>,
    /// What the context changes since the last commit replaced, for the execution's undo
    /// trail (see [`tollgate_model::undo`]); it rides on the next commit.
    pub(super) trail: Vec<ContextUndo>,
    /// The top-level step visit the context changes belong to: the one entered last,
    /// `None` before the run enters one (a context load, a resume at a step boundary).
    pub(super) visit_at: Option<(String, u32)>,
    /// Set while a side effect's completion is not stored yet and rides on the next
    /// commit with the side-effect-free steps after it (see [`Run::commit`]).
    pub(super) boundary: Option<Boundary>,
    /// The `running` record of the step at the cursor when the write that handed this
    /// run the execution stored it too (a run ahead that stopped before a side effect,
    /// [`Starting::begun`]): the step acts without recording its begin again.
    pub(super) begun: Option<Box<StepRecord>>,
}

/// The run as it stood at the step boundary after a side effect, before the
/// side-effect-free steps that followed: where it stops instead if an operator's pause
/// request is pending when the next commit is sent. Without it the pause would only be
/// seen after those steps — possibly after the execution ended.
pub(super) struct Boundary {
    context: Value,
    cursor: Option<Cursor>,
    visits: BTreeMap<String, u32>,
    steps_run: u32,
    result: Option<ExecutionResult>,
    records: Vec<StepRecord>,
    trail: Vec<ContextUndo>,
    visit_at: Option<(String, u32)>,
}

/// The commit a run ahead stopped with, and the metrics to record once it is stored.
#[derive(Default)]
pub(super) struct Deferred {
    commit: Option<StepCommit>,
    metrics: Vec<(String, Option<i64>)>,
}

/// A step attempt's outcome at the top level.
pub(super) enum Outcome {
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
    pub(super) fn inner(&self) -> &Inner {
        &self.engine.inner
    }

    pub(super) fn now(&self) -> Timestamp {
        self.inner().clock.now()
    }

    /// The narrow environment step bodies run in.
    pub(super) fn tools(&self) -> Tools<'_> {
        let inner = self.inner();
        Tools {
            clock: inner.clock.as_ref(),
            secrets: &inner.options.secrets,
            http: &inner.http,
            http_timeout: inner.options.http_timeout,
            max_response_bytes: inner.options.max_response_bytes,
            notifier: inner.notifier.as_ref(),
            conditions: &self.compiled.conditions,
        }
    }

    pub(super) fn definition(&self) -> &WorkflowDefinition {
        &self.compiled.definition
    }

    /// Whether the next thing to do can run before the execution is stored: a step (or
    /// the end) that touches nothing outside the engine, cannot wait or sleep, and reads
    /// nothing stored — so that running it later, from the stored cursor, would do the
    /// same. Context loads, side effects, waits (which look for early events), retries
    /// and step timeouts wait for the stored execution.
    pub(super) fn can_run_ahead(&self) -> bool {
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
                    && !step.queues_notifications()
                    && !matches!(step.kind, StepKind::Wait { .. } | StepKind::FirstOf { .. })
                    && step.retry.is_none()
                    && step.timeout.is_none()
            })
    }

    /// A run of `exec`; `ahead` runs it ahead of storage (see [`Engine::run_ahead`]).
    pub(super) fn new(
        engine: &'e Engine,
        exec: Execution,
        compiled: Arc<Compiled>,
        ahead: bool,
    ) -> Self {
        // A run that starts inside a visit (at a gate, or between attempts) goes on
        // changing that visit's context; one at a step not entered yet changes nobody's.
        let visit_at = exec
            .cursor
            .as_ref()
            .filter(|c| exec.visits.get(&c.step_id) == Some(&c.visit))
            .map(|c| (c.step_id.clone(), c.visit));
        Self {
            engine,
            exec,
            compiled,
            pending: Vec::new(),
            exact: false,
            ahead: ahead.then(Deferred::default),
            trail: Vec::new(),
            visit_at,
            boundary: None,
            begun: None,
        }
    }

    /// The `running` record of an attempt of `step` at `cursor`, begun at `started`.
    fn running_record(&self, step: &Step, cursor: &Cursor, started: Timestamp) -> StepRecord {
        StepRecord {
            id: record_id(self.exec.id, &step.id, cursor.visit, None, cursor.attempt),
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
        }
    }

    /// When a run ahead stops before a step with side effects that the next holder will
    /// attempt at once, that attempt's `running` record, to store in the same write as
    /// the run ahead: recorded there, the begin costs no write of its own. `None` when
    /// something else comes first (a pause request, a signal, a context load, the
    /// workflow's deadline or step limit) — then the step begins as usual, later.
    fn begin_ahead(&self) -> Option<StepRecord> {
        let now = self.now();
        if !self.owned_by_me()
            || self.exec.pause_requested
            || self.exec.wake.is_some()
            || self.exec.deadline.is_some_and(|d| d <= now)
            || self.exec.steps_run >= self.definition().max_steps()
            || (!self.definition().context.load.is_empty()
                && !self.exec.visits.contains_key(CONTEXT_STEP))
        {
            return None;
        }
        let cursor = self.exec.cursor.as_ref()?;
        let step = self.compiled.definition.step(&cursor.step_id)?;
        step.has_side_effects()
            .then(|| self.running_record(step, cursor, now))
    }

    /// The run ahead as it stopped (see [`Engine::run_ahead`]).
    pub(super) fn into_ahead(mut self) -> Ahead {
        let deferred = self.ahead.take().unwrap_or_default();
        let (records, approval, transition, mut undo) = match deferred.commit {
            Some(commit) => {
                let approval = match &commit.transition {
                    Transition::Gate { approval, .. } => approval.as_deref().cloned(),
                    _ => None,
                };
                (
                    commit.records,
                    approval,
                    Some(commit.transition),
                    commit.undo,
                )
            }
            None => (Vec::new(), None, None, Vec::new()),
        };
        if self.exec.status == ExecutionStatus::Completed {
            undo.clear();
        } else {
            undo.append(&mut self.trail);
        }
        let starting = Starting {
            execution: self.exec,
            records,
            approval,
            undo,
        };
        Ahead {
            begun: starting.begun().cloned(),
            starting,
            metrics: deferred.metrics,
            ended_or_gated: transition,
        }
    }

    pub(super) fn owned_by_me(&self) -> bool {
        self.exec.status == ExecutionStatus::Running
            && self.exec.lease.as_ref().and_then(|l| l.owner.as_deref())
                == Some(self.inner().options.worker_id.as_str())
    }

    pub(super) async fn drive(&mut self) -> Result<()> {
        loop {
            if !self.owned_by_me() {
                return Ok(());
            }
            if let Some(deferred) = &self.ahead {
                if deferred.commit.is_some() || !self.can_run_ahead() {
                    if deferred.commit.is_none() {
                        let begin = self.begin_ahead();
                        if !self.pending.is_empty() || begin.is_some() {
                            self.commit(
                                begin.into_iter().collect(),
                                Vec::new(),
                                Vec::new(),
                                Transition::Continue,
                            )
                            .await?;
                        }
                    }
                    return Ok(());
                }
            }
            let now = self.now();
            if let Some(deadline) = self.exec.deadline.filter(|d| *d <= now) {
                let message = format!("the workflow deadline {} passed", deadline.to_rfc3339());
                // A step begun with the write that handed us the execution never acts.
                let unrun = self.begun.take().map(|mut record| {
                    record.status = StepStatus::Skipped;
                    record.completed_at = Some(now);
                    *record
                });
                return self
                    .finish(
                        ExecutionStatus::TimedOut,
                        Some((ErrorKind::TimedOut, message)),
                        unrun.into_iter().collect(),
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
    ///
    /// A commit that carries a side effect's completion together with the steps run
    /// after it is sent with [`StepCommit::refuse_if_pause_requested`]: if an operator
    /// asked for a pause meanwhile, the run goes back to the boundary after the side
    /// effect and pauses there (the execution is then no longer held; callers see that
    /// through [`Run::owned_by_me`]).
    pub(super) async fn commit(
        &mut self,
        records: Vec<StepRecord>,
        effects: Vec<Effect>,
        consumed: Vec<Uuid>,
        transition: Transition,
    ) -> Result<Committed> {
        let Some(boundary) = self.boundary.take() else {
            return self
                .send_commit(records, effects, consumed, transition, false)
                .await;
        };
        let expected = self.exec.version;
        match self
            .send_commit(records, effects, consumed, transition, true)
            .await
        {
            Err(Error::Store(tollgate_store::Error::Conflict(reason))) => {
                self.stop_at_boundary(boundary, expected, reason).await
            }
            other => other,
        }
    }

    /// A commit past `boundary` was refused with `reason`. When the execution is still
    /// ours at `expected` with a pause request, the request is why: the local state goes
    /// back to the boundary and the execution pauses there. Otherwise the refusal stands.
    async fn stop_at_boundary(
        &mut self,
        boundary: Boundary,
        expected: i64,
        reason: String,
    ) -> Result<Committed> {
        let stored = self.inner().store.get_execution(self.exec.id).await?;
        let ours = stored.status == ExecutionStatus::Running
            && stored.version == expected
            && stored.lease.as_ref().and_then(|l| l.owner.as_deref())
                == Some(self.inner().options.worker_id.as_str());
        if !(ours && stored.pause_requested) {
            return Err(Error::Store(tollgate_store::Error::Conflict(reason)));
        }
        let Boundary {
            context,
            cursor,
            visits,
            steps_run,
            result,
            records,
            trail,
            visit_at,
        } = boundary;
        self.exec.context = context;
        self.exec.cursor = cursor;
        self.exec.visits = visits;
        self.exec.steps_run = steps_run;
        self.exec.result = result;
        self.pending = records;
        self.trail = trail;
        self.visit_at = visit_at;
        self.exec.pause_requested = true;
        tracing::info!(execution_id = %self.exec.id, "paused on request at the step boundary after a side effect; the steps run since are dropped");
        let pause = self.manual_pause();
        self.send_commit(Vec::new(), Vec::new(), Vec::new(), pause, false)
            .await
    }

    /// Sends one commit of the local state (with the pending records and trail).
    async fn send_commit(
        &mut self,
        records: Vec<StepRecord>,
        effects: Vec<Effect>,
        consumed: Vec<Uuid>,
        transition: Transition,
        refuse_if_pause_requested: bool,
    ) -> Result<Committed> {
        let now = self.now();
        let records = if self.pending.is_empty() {
            records
        } else {
            let mut all = std::mem::take(&mut self.pending);
            all.extend(records);
            all
        };
        // A completed execution cannot be retried: its trail is dropped, not extended.
        let undo = if matches!(
            transition,
            Transition::Finish {
                status: ExecutionStatus::Completed,
                ..
            }
        ) {
            self.trail.clear();
            Vec::new()
        } else {
            std::mem::take(&mut self.trail)
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
            undo,
            effects,
            transition: transition.clone(),
            lease_expires_at: self.engine.lease_until(),
            now,
            refuse_if_pause_requested,
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
            undo: Vec::new(),
            effects: Vec::new(),
            transition,
            lease_expires_at,
            now,
            refuse_if_pause_requested: false,
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

    pub(super) async fn finish(
        &mut self,
        status: ExecutionStatus,
        error: Option<(ErrorKind, String)>,
        records: Vec<StepRecord>,
    ) -> Result<()> {
        if status == ExecutionStatus::Completed && self.exec.result.is_none() {
            self.exec.result = Some(ExecutionResult::Executed);
        }
        let error = error.map(|(kind, message)| ExecutionError { kind, message });
        let message = error.as_ref().map(|e| e.message.clone());
        self.commit(
            records,
            Vec::new(),
            Vec::new(),
            Transition::Finish { status, error },
        )
        .await?;
        // A pause at an earlier boundary may have stopped it instead (see `commit`).
        if self.exec.status == status {
            if let Some(message) = message {
                tracing::warn!(execution_id = %self.exec.id, status = %status, "execution ended: {message}");
            } else {
                tracing::info!(execution_id = %self.exec.id, status = %status, result = ?self.exec.result, "execution ended");
            }
        }
        Ok(())
    }

    pub(super) async fn pause_here(&mut self) -> Result<()> {
        tracing::info!(execution_id = %self.exec.id, "paused at a step boundary on request");
        let pause = self.manual_pause();
        self.commit(Vec::new(), Vec::new(), Vec::new(), pause)
            .await?;
        Ok(())
    }

    /// A manual pause at the cursor.
    fn manual_pause(&self) -> Transition {
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
            correlation: None,
            branches: None,
        };
        Transition::Gate {
            gate,
            approval: None,
        }
    }

    /// Adds a replaced value to the undo trail, under the visit changing the context.
    pub(super) fn note(&mut self, prior: Prior) {
        let current = self.trail.last_mut().filter(|entry| match &self.visit_at {
            Some((step, visit)) => entry.is_of(step, *visit),
            None => entry.step_id.is_none(),
        });
        match current {
            Some(entry) => entry.prior.push(prior),
            None => {
                let (step, visit) = self
                    .visit_at
                    .clone()
                    .map_or((None, 0), |(s, v)| (Some(s), v));
                let mut entry = ContextUndo::new(step, visit);
                entry.prior.push(prior);
                self.trail.push(entry);
            }
        }
    }

    /// Adds what turning `before` into `after` replaced to the undo trail.
    pub(super) fn note_changes(&mut self, before: &Value, after: &Value) {
        let mut priors = Vec::new();
        diff(before, after, &mut priors);
        for prior in priors {
            self.note(prior);
        }
    }

    /// Applies `change` to the context, noting on the undo trail what it replaced (for
    /// changes off the step loop's hot path: a decision, an event, an operator's data).
    pub(super) fn change_context(&mut self, change: impl FnOnce(&mut Value)) {
        let before = self.exec.context.clone();
        change(&mut self.exec.context);
        let after = std::mem::take(&mut self.exec.context);
        self.note_changes(&before, &after);
        self.exec.context = after;
    }

    pub(super) fn scope<'a>(&'a self, context: &'a Value, step_id: Option<&'a str>) -> Scope<'a> {
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

    pub(super) async fn load_context(&mut self) -> Result<()> {
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
        self.note_changes(&self.exec.context.clone(), &context);
        self.exec.context = context;
        self.exec.visits.insert(CONTEXT_STEP.into(), 1);
        self.commit(vec![record], Vec::new(), Vec::new(), Transition::Continue)
            .await?;
        Ok(())
    }

    /// Runs one attempt of the step at `cursor` and commits what follows. Returns whether
    /// to keep going.
    pub(super) async fn run_step(&mut self, cursor: Cursor) -> Result<bool> {
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
        let mut record = self.running_record(step, &cursor, self.now());
        // Only the first step of this run can have been begun by the write before it.
        let begun = self.begun.take().filter(|b| b.id == record.id);
        if step.has_side_effects() {
            if !self.pending.is_empty() {
                // Everything before a side effect is durable before it happens.
                self.commit(Vec::new(), Vec::new(), Vec::new(), Transition::Continue)
                    .await?;
                if !self.owned_by_me() {
                    // Paused at an earlier boundary instead (see `commit`).
                    return Ok(false);
                }
            }
            self.exact = false;
            match begun {
                // Stored `running` with the execution we hold, at this version.
                Some(begun) => record.started_at = begun.started_at,
                _ => {
                    self.exec.version = self
                        .inner()
                        .store
                        .begin_step(
                            self.exec.id,
                            &self.inner().options.worker_id,
                            self.exec.version,
                            record.clone(),
                            record.started_at,
                        )
                        .await?;
                }
            }
        }
        self.exec.visits.insert(step.id.clone(), cursor.visit);
        self.visit_at = Some((step.id.clone(), cursor.visit));
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
                if let Some(before) = &backup {
                    self.note_changes(before, &context);
                }
                let prior = set_step_output(&mut context, &step.id, body.output.clone());
                self.note(prior);
                self.exec.context = context;
                let mut records = body.children;
                records.push(record);
                let quiet = body.effects.is_empty() && consumed.is_empty();
                // A side effect's completion rides on the next commit too, with the
                // side-effect-free steps after it: a crash before that commit sends it
                // again (with the same idempotency key), as a crash just after the call
                // would. The boundary after it is kept, for a pause asked for meanwhile.
                let effect_done = step.has_side_effects()
                    && quiet
                    && self.ahead.is_none()
                    && self.boundary.is_none();
                if let Some(next) = next.clone().filter(|_| {
                    (effect_done || (!step.has_side_effects() && quiet))
                        && self.pending.len() < MAX_PURE_BATCH
                        && !self.exec.pause_requested
                }) {
                    let visit = self.exec.visits.get(&next).copied().unwrap_or(0) + 1;
                    self.exec.cursor = Some(Cursor::new(next, visit));
                    self.pending.extend(records);
                    if effect_done {
                        self.boundary = Some(Boundary {
                            context: self.exec.context.clone(),
                            cursor: self.exec.cursor.clone(),
                            visits: self.exec.visits.clone(),
                            steps_run: self.exec.steps_run,
                            result: self.exec.result,
                            records: self.pending.clone(),
                            trail: self.trail.clone(),
                            visit_at: self.visit_at.clone(),
                        });
                    }
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
                if let Some(before) = &backup {
                    self.note_changes(before, &context);
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
                if is_wait && self.exec.status == ExecutionStatus::Waiting {
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
    pub(super) async fn goto(
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
                if self.exec.status == ExecutionStatus::Completed {
                    tracing::info!(execution_id = %self.exec.id, result = ?self.exec.result, "execution completed");
                }
                Ok(false)
            }
        }
    }

    pub(super) async fn after_failure(
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
                if self.owned_by_me() {
                    tokio::time::sleep(delay).await;
                }
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
            let prior = set_step_output(
                &mut self.exec.context,
                &step.id,
                json!({"error": {"class": error.class, "message": error.message}}),
            );
            self.note(prior);
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
    pub(super) async fn heartbeat<T, F: std::future::Future<Output = T>>(
        &self,
        work: F,
    ) -> Result<T> {
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
    pub(super) async fn attempt(&self, step: &Step, context: &mut Value, env: &Env) -> Outcome {
        if let Some(error) = self.missing_paths(step, context) {
            return Outcome::Failed {
                body: Body::default(),
                error,
            };
        }
        match &step.kind {
            StepKind::Approval {
                approval,
                on_approve,
                ..
            } => {
                if let Some((output, next)) = Self::kept_approval(step, context, on_approve.clone())
                {
                    return kept(output, next);
                }
                let body = Body::default();
                self.enter_approval(step, approval, context, env, body)
            }
            StepKind::Wait { wait, next } => {
                self.enter_wait(step, wait, next.clone(), context, env)
                    .await
            }
            StepKind::FirstOf { first_of } => {
                self.enter_first_of(step, first_of, context, env).await
            }
            _ => {
                let body = crate::steps::run_body(&self.tools(), step, context, env).await;
                if let Some(error) = body.error.clone() {
                    return Outcome::Failed { body, error };
                }
                if let Some(spec) = step.compat_approval() {
                    let after = match &step.kind {
                        StepKind::Action {
                            on_approve, next, ..
                        } => on_approve.clone().or_else(|| next.clone()),
                        _ => None,
                    };
                    if let Some((output, next)) = Self::kept_approval(step, context, after) {
                        let mut body = body;
                        body.output = merge_output(body.output, output);
                        body.verb_result = Some(tollgate_model::ExecutionResult::Allowed);
                        return Outcome::Done {
                            body,
                            next,
                            consumed: Vec::new(),
                        };
                    }
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
                    StepKind::Approval { .. }
                    | StepKind::Wait { .. }
                    | StepKind::FirstOf { .. } => None,
                };
                Outcome::Done {
                    body,
                    next,
                    consumed: Vec::new(),
                }
            }
        }
    }
}

impl Run<'_> {
    /// Under `strict_paths`, the paths the step reads that the context lacks, as the
    /// step's failure — found before the step acts, so nothing is sent or written with
    /// a value rendered from a typo.
    fn missing_paths(&self, step: &Step, context: &Value) -> Option<StepError> {
        let reads = self.compiled.required_paths.get(&step.id)?;
        let scope = self.scope(context, Some(&step.id));
        let missing: Vec<String> = reads
            .iter()
            .filter(|(_, path)| {
                matches!(
                    scope.resolve(path, Mode::Redacted),
                    Resolved::Found(Found::Missing)
                )
            })
            .map(|(location, path)| format!("`{}` (at {location})", path.as_str()))
            .collect();
        if missing.is_empty() {
            return None;
        }
        Some(StepError {
            class: tollgate_model::definition::ErrorClass::Other,
            message: format!("strict_paths: the context has no {}", missing.join(", no ")),
        })
    }
}

pub(super) fn fill(record: &mut StepRecord, body: &mut Body) {
    record.input = std::mem::take(&mut body.input);
    record.output = body.output.clone();
    record.warnings = std::mem::take(&mut body.warnings);
}

/// Whether running `step` can change the context (a `set` sub-action, here or in a child).
pub(super) fn writes_context(step: &Step) -> bool {
    let own = match &step.kind {
        StepKind::Action { execute, .. } | StepKind::Execute { execute, .. } => {
            execute.iter().any(|a| {
                matches!(
                    a.kind,
                    tollgate_model::definition::SubActionKind::Set { .. }
                )
            })
        }
        // An early event lands in the context during the wait's attempt.
        StepKind::Wait { .. } | StepKind::FirstOf { .. } => true,
        _ => false,
    };
    own || step.children().iter().any(writes_context)
}

pub(super) fn merge_output(base: Value, extra: Value) -> Value {
    match (base, extra) {
        (Value::Object(mut a), Value::Object(b)) => {
            a.extend(b);
            Value::Object(a)
        }
        (Value::Null, extra) => extra,
        (base, _) => base,
    }
}

/// `steps.<id>` = output (ids may contain dots, so this is not a dotted path). Returns
/// what it replaced, for the undo trail.
pub(crate) fn set_step_output(context: &mut Value, step_id: &str, output: Value) -> Prior {
    let whole = |value: Option<Value>| Prior {
        path: Vec::new(),
        value,
    };
    if !context.is_object() {
        let replaced = whole(Some(std::mem::replace(context, json!({}))));
        set_step_output(context, step_id, output);
        return replaced;
    }
    let Value::Object(map) = context else {
        return whole(None);
    };
    match map.get_mut("steps") {
        Some(Value::Object(steps)) => Prior {
            path: vec!["steps".into(), step_id.to_owned()],
            value: steps.insert(step_id.to_owned(), output),
        },
        other => {
            let value = other.map(std::mem::take);
            let mut steps = serde_json::Map::new();
            steps.insert(step_id.to_owned(), output);
            map.insert("steps".into(), Value::Object(steps));
            Prior {
                path: vec!["steps".into()],
                value,
            }
        }
    }
}

/// Shallow-merges the keys of `data` (an object) into the context.
pub(super) fn merge_into(context: &mut Value, data: &Value) {
    if let (Value::Object(target), Value::Object(source)) = (context, data) {
        for (k, v) in source {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// ±20% jitter so the retries of many executions do not line up.
pub(super) fn jittered(delay: Duration, jitter: bool) -> Duration {
    if !jitter || delay.is_zero() {
        return delay;
    }
    let random = Uuid::new_v4().as_u128() % 10_000;
    let factor = 0.8 + 0.4 * (random as f64 / 10_000.0);
    delay.mul_f64(factor)
}

/// The outcome of an approval gate whose earlier grant a retry keeps: the step completes
/// with the decision as its output and the execution's result `allowed`, as the grant
/// itself did.
fn kept(output: Value, next: Option<String>) -> Outcome {
    let body = Body {
        output,
        verb_result: Some(tollgate_model::ExecutionResult::Allowed),
        ..Body::default()
    };
    Outcome::Done {
        body,
        next,
        consumed: Vec::new(),
    }
}
