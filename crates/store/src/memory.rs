//! The in-memory store: every trait on one mutex-guarded state.
//!
//! It is the store of the engine's and resumer's tests and of embedders that want no
//! database. One lock around the whole state makes every method trivially atomic; the
//! contract test kit holds it to the same rules as the SQL backends, so a test that passes
//! here means the same thing there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use serde_json::{json, Value};
use tollgate_model::records::{
    ApiKey, ApprovalRequest, ApprovalStatus, ConsoleSession, Decision, Event, Execution, Lease,
    Notification, Principal, Record, ResumeOutcome, ResumeRequest, ResumeTrigger, StepRecord,
    Timestamp, Wake, Workflow,
};
use tollgate_model::schedule::{Schedule, Tick, TickStatus};
use tollgate_model::{ExecutionStatus, WorkflowDefinition};
use uuid::Uuid;

use crate::cursor::{decode_cursor, encode_cursor};
use crate::traits::{
    ApiKeyStore, ApprovalStore, EventStore, ExecutionStore, Health, NotificationStore, RecordStore,
    ResumeRequestStore, ScheduleStore, SessionStore, WorkflowStore,
};
use crate::types::{
    ApprovalFilter, ClaimedTick, Committed, Continuation, Decided, Delivery, Effect, EventInsert,
    ExecutionFilter, LeaseClaim, NotificationFilter, Page, PageRequest, ScheduleFilter, Starting,
    StepCommit, TickView, Transition, WorkflowFilter,
};
use crate::{rules, Error, Result};

/// A complete store in process memory. Cloning shares the same state.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    workflows: BTreeMap<Uuid, Workflow>,
    snapshots: HashMap<String, Arc<WorkflowDefinition>>,
    executions: BTreeMap<Uuid, Execution>,
    steps: HashMap<Uuid, Vec<StepRecord>>,
    approvals: BTreeMap<Uuid, ApprovalRequest>,
    /// Approval ids by execution, so ending an execution does not scan every request.
    approvals_by_execution: HashMap<Uuid, Vec<Uuid>>,
    events: BTreeMap<Uuid, Event>,
    event_ids: HashMap<String, Uuid>,
    /// Events stored but not yet marked delivered (see `EventStore::undelivered_events`).
    undelivered: BTreeSet<Uuid>,
    resume_requests: HashMap<Uuid, Vec<ResumeRequest>>,
    records: HashMap<(String, String), Record>,
    notifications: BTreeMap<Uuid, Notification>,
    api_keys: BTreeMap<Uuid, ApiKey>,
    schedules: BTreeMap<Uuid, Schedule>,
    ticks: BTreeMap<Uuid, Tick>,
    sessions: HashMap<String, ConsoleSession>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change behind: every
        // method validates before it mutates. So a poisoned lock is safe to keep using.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn paginate<K: Ord + Clone, T>(
    mut keyed: Vec<(K, T)>,
    descending: bool,
    after: Option<K>,
    limit: u32,
    encode: impl Fn(&K) -> String,
) -> Page<T> {
    keyed.sort_by(|a, b| {
        if descending {
            b.0.cmp(&a.0)
        } else {
            a.0.cmp(&b.0)
        }
    });
    let limit = limit as usize;
    let mut rest = keyed.into_iter().filter(|(k, _)| match &after {
        None => true,
        Some(after) if descending => k < after,
        Some(after) => k > after,
    });
    let mut items = Vec::new();
    let mut last = None;
    for (k, item) in rest.by_ref().take(limit) {
        last = Some(k);
        items.push(item);
    }
    let more = rest.next().is_some();
    Page {
        items,
        next_cursor: if more {
            last.as_ref().map(encode)
        } else {
            None
        },
    }
}

fn id_cursor(page: &PageRequest) -> Result<Option<Uuid>> {
    page.cursor
        .as_deref()
        .map(|c| {
            let parts = decode_cursor(c, 1)?;
            Uuid::parse_str(&parts[0])
                .map_err(|_| Error::Invalid(format!("`{c}` is not a cursor returned by this list")))
        })
        .transpose()
}

fn encode_id(id: &Uuid) -> String {
    encode_cursor(&[&id.to_string()])
}

impl State {
    /// Keeps the schedule mirroring `workflow_id`'s trigger in step with it.
    fn sync_trigger_schedule(&mut self, workflow_id: Uuid, now: Timestamp) {
        let id = rules::trigger_schedule_id(workflow_id);
        let Some(workflow) = self.workflows.get(&workflow_id) else {
            return;
        };
        match rules::trigger_schedule(workflow, self.schedules.get(&id), now) {
            Some(schedule) => {
                self.schedules.insert(id, schedule);
            }
            None => self.remove_schedule(id),
        }
    }

    fn remove_schedule(&mut self, id: Uuid) {
        if self.schedules.remove(&id).is_some() {
            self.ticks.retain(|_, t| t.schedule_id != id);
        }
    }

    fn execution_mut(&mut self, id: Uuid) -> Result<&mut Execution> {
        self.executions
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("execution", id))
    }

    fn close_approvals(&mut self, execution_id: Uuid, status: ApprovalStatus, now: Timestamp) {
        for id in self
            .approvals_by_execution
            .get(&execution_id)
            .into_iter()
            .flatten()
        {
            if let Some(approval) = self.approvals.get_mut(id) {
                if approval.status == ApprovalStatus::Pending {
                    approval.status = status;
                    approval.decided_at = Some(now);
                }
            }
        }
    }

    fn audit(
        &mut self,
        execution_id: Uuid,
        trigger: ResumeTrigger,
        actor: Option<&str>,
        data: Value,
        now: Timestamp,
    ) {
        self.resume_requests
            .entry(execution_id)
            .or_default()
            .push(ResumeRequest {
                id: Uuid::now_v7(),
                execution_id,
                trigger,
                actor: actor.map(str::to_owned),
                data,
                requested_at: now,
                executed_at: Some(now),
                outcome: ResumeOutcome::Resumed,
                error: None,
            });
    }

    fn check_workflow_key(&self, id: Uuid, definition: &WorkflowDefinition) -> Result<()> {
        let taken = self.workflows.values().any(|w| {
            w.id != id
                && w.workflow_id() == definition.workflow_id
                && w.version() == definition.version
        });
        if taken {
            return Err(Error::Conflict(format!(
                "workflow `{}` version `{}` already exists",
                definition.workflow_id, definition.version
            )));
        }
        Ok(())
    }

    /// Stores a new approval request and indexes it by execution.
    fn insert_approval(&mut self, approval: ApprovalRequest) {
        self.approvals_by_execution
            .entry(approval.execution_id)
            .or_default()
            .push(approval.id);
        self.approvals.insert(approval.id, approval);
    }

    fn apply_effect(&mut self, effect: Effect, now: Timestamp) {
        match effect {
            Effect::UpsertRecord {
                entity,
                entity_id,
                data,
                merge,
            } => {
                let key = (entity.clone(), entity_id.clone());
                match self.records.get_mut(&key) {
                    Some(record) => {
                        rules::merge_record_data(&mut record.data, data, merge);
                        record.version += 1;
                        record.updated_at = now;
                    }
                    None => {
                        self.records.insert(
                            key,
                            Record {
                                entity,
                                entity_id,
                                data,
                                version: 1,
                                updated_at: now,
                            },
                        );
                    }
                }
            }
            Effect::Notify(notification) => {
                self.notifications
                    .entry(notification.id)
                    .or_insert(notification);
            }
        }
    }
}

#[async_trait]
impl WorkflowStore for MemoryStore {
    async fn create_workflow(&self, workflow: Workflow) -> Result<Workflow> {
        let mut state = self.lock();
        if state.workflows.contains_key(&workflow.id) {
            return Err(Error::Conflict(format!(
                "workflow {} already exists",
                workflow.id
            )));
        }
        state.check_workflow_key(workflow.id, &workflow.definition)?;
        state
            .snapshots
            .entry(workflow.snapshot_id.clone())
            .or_insert_with(|| workflow.definition.clone());
        state.workflows.insert(workflow.id, workflow.clone());
        state.sync_trigger_schedule(workflow.id, workflow.updated_at);
        Ok(workflow)
    }

    async fn replace_workflow(
        &self,
        id: Uuid,
        definition: Arc<WorkflowDefinition>,
        now: Timestamp,
    ) -> Result<Workflow> {
        let mut state = self.lock();
        if !state.workflows.contains_key(&id) {
            return Err(Error::not_found("workflow", id));
        }
        state.check_workflow_key(id, &definition)?;
        let snapshot_id = tollgate_model::records::snapshot_id(&definition);
        state
            .snapshots
            .entry(snapshot_id.clone())
            .or_insert_with(|| definition.clone());
        let workflow = state
            .workflows
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("workflow", id))?;
        workflow.enabled = definition.enabled;
        workflow.definition = definition;
        workflow.snapshot_id = snapshot_id;
        workflow.updated_at = now;
        let workflow = workflow.clone();
        state.sync_trigger_schedule(id, now);
        Ok(workflow)
    }

    async fn set_workflow_enabled(
        &self,
        id: Uuid,
        enabled: bool,
        now: Timestamp,
    ) -> Result<Workflow> {
        let mut state = self.lock();
        let workflow = state
            .workflows
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("workflow", id))?;
        workflow.enabled = enabled;
        Arc::make_mut(&mut workflow.definition).enabled = enabled;
        workflow.updated_at = now;
        let workflow = workflow.clone();
        if enabled
            && !state
                .schedules
                .contains_key(&rules::trigger_schedule_id(id))
        {
            state.sync_trigger_schedule(id, now);
        }
        Ok(workflow)
    }

    async fn delete_workflow(&self, id: Uuid) -> Result<()> {
        let mut state = self.lock();
        state
            .workflows
            .remove(&id)
            .ok_or_else(|| Error::not_found("workflow", id))?;
        let owned: Vec<Uuid> = state
            .schedules
            .values()
            .filter(|s| s.workflow_id == id)
            .map(|s| s.id)
            .collect();
        for schedule in owned {
            state.remove_schedule(schedule);
        }
        Ok(())
    }

    async fn get_workflow(&self, id: Uuid) -> Result<Workflow> {
        self.lock()
            .workflows
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("workflow", id))
    }

    async fn list_workflows(
        &self,
        filter: &WorkflowFilter,
        page: &PageRequest,
    ) -> Result<Page<Workflow>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state
            .workflows
            .values()
            .filter(|w| filter.enabled.is_none_or(|e| w.enabled == e))
            .filter(|w| {
                filter
                    .workflow_id
                    .as_deref()
                    .is_none_or(|k| w.workflow_id() == k)
            })
            .filter(|w| {
                filter
                    .tag
                    .as_ref()
                    .is_none_or(|t| w.definition.tags.contains(t))
            })
            .map(|w| (w.id, w.clone()))
            .collect();
        Ok(paginate(items, false, after, page.limit, encode_id))
    }

    async fn workflows_for_event(&self, event_type: &str) -> Result<Vec<Workflow>> {
        let candidates: Vec<Workflow> = self.lock().workflows.values().cloned().collect();
        Ok(rules::triggered_workflows(candidates, event_type))
    }

    async fn get_snapshot(&self, snapshot_id: &str) -> Result<Arc<WorkflowDefinition>> {
        self.lock()
            .snapshots
            .get(snapshot_id)
            .cloned()
            .ok_or_else(|| Error::not_found("snapshot", snapshot_id))
    }
}

#[async_trait]
impl ExecutionStore for MemoryStore {
    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        let mut state = self.lock();
        if state.executions.contains_key(&execution.id) {
            return Err(Error::Conflict(format!(
                "execution {} already exists",
                execution.id
            )));
        }
        if !state.snapshots.contains_key(&execution.snapshot_id) {
            return Err(Error::not_found("snapshot", &execution.snapshot_id));
        }
        state.executions.insert(execution.id, execution.clone());
        Ok(execution)
    }

    async fn get_execution(&self, id: Uuid) -> Result<Execution> {
        self.lock()
            .executions
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("execution", id))
    }

    async fn list_executions(
        &self,
        filter: &ExecutionFilter,
        page: &PageRequest,
    ) -> Result<Page<Execution>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state
            .executions
            .values()
            .filter(|e| filter.status.is_none_or(|s| e.status == s))
            .filter(|e| filter.workflow_id.is_none_or(|w| e.workflow_id == w))
            .filter(|e| {
                filter
                    .workflow_key
                    .as_deref()
                    .is_none_or(|k| e.workflow_key == k)
            })
            .filter(|e| {
                filter.paused_reason.is_none_or(|r| {
                    e.status.is_gated() && e.gate.as_ref().is_some_and(|g| g.reason == r)
                })
            })
            .filter(|e| {
                filter.approver_role.as_ref().is_none_or(|role| {
                    e.status.is_gated()
                        && e.gate
                            .as_ref()
                            .and_then(|g| g.approval_id)
                            .and_then(|a| state.approvals.get(&a))
                            .is_some_and(|a| {
                                a.status == ApprovalStatus::Pending
                                    && a.approver_roles.contains(role)
                            })
                })
            })
            .map(|e| (e.id, e.clone()))
            .collect();
        Ok(paginate(items, true, after, page.limit, encode_id))
    }

    async fn count_by_status(&self) -> Result<Vec<(ExecutionStatus, u64)>> {
        let mut counts = BTreeMap::<&'static str, (ExecutionStatus, u64)>::new();
        for execution in self.lock().executions.values() {
            counts
                .entry(execution.status.as_str())
                .or_insert((execution.status, 0))
                .1 += 1;
        }
        Ok(counts.into_values().collect())
    }

    async fn count_in_flight(&self) -> Result<Vec<(ExecutionStatus, u64)>> {
        let mut counts = self.count_by_status().await?;
        counts.retain(|(status, _)| !status.is_terminal());
        Ok(counts)
    }

    async fn list_gated(&self, page: &PageRequest) -> Result<Page<Execution>> {
        let after = page
            .cursor
            .as_deref()
            .map(|c| {
                let parts = decode_cursor(c, 2)?;
                let bad = || Error::Invalid(format!("`{c}` is not a cursor returned by this list"));
                let at = chrono::DateTime::parse_from_rfc3339(&parts[0])
                    .map_err(|_| bad())?
                    .to_utc();
                let id = Uuid::parse_str(&parts[1]).map_err(|_| bad())?;
                Ok::<_, Error>((at, id))
            })
            .transpose()?;
        let state = self.lock();
        let items = state
            .executions
            .values()
            .filter(|e| e.status.is_gated())
            .filter_map(|e| e.gate.as_ref().map(|g| ((g.paused_at, e.id), e.clone())))
            .collect();
        Ok(paginate(items, false, after, page.limit, |(at, id)| {
            encode_cursor(&[
                &at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                &id.to_string(),
            ])
        }))
    }

    async fn list_steps(&self, execution_id: Uuid) -> Result<Vec<StepRecord>> {
        let state = self.lock();
        if !state.executions.contains_key(&execution_id) {
            return Err(Error::not_found("execution", execution_id));
        }
        Ok(state.steps.get(&execution_id).cloned().unwrap_or_default())
    }

    async fn begin_step(
        &self,
        execution_id: Uuid,
        owner: &str,
        expected_version: i64,
        record: StepRecord,
        now: Timestamp,
    ) -> Result<i64> {
        let mut state = self.lock();
        let execution = state.execution_mut(execution_id)?;
        rules::check_lease(execution, owner, Some(expected_version))?;
        execution.version += 1;
        execution.updated_at = now;
        let version = execution.version;
        upsert_step(state.steps.entry(execution_id).or_default(), record);
        Ok(version)
    }

    async fn commit_step(&self, commit: StepCommit) -> Result<Committed> {
        let mut state = self.lock();
        if let Transition::Gate {
            approval: Some(approval),
            ..
        } = &commit.transition
        {
            if state.approvals.contains_key(&approval.id) {
                return Err(Error::Conflict(format!(
                    "approval {} already exists",
                    approval.id
                )));
            }
        }
        let execution_id = commit.execution_id;
        let now = commit.now;
        let writes = rules::apply_commit(state.execution_mut(execution_id)?, commit)?;
        let steps = state.steps.entry(execution_id).or_default();
        for record in writes.records {
            upsert_step(steps, record);
        }
        for effect in writes.effects {
            state.apply_effect(effect, now);
        }
        if let Some(approval) = writes.approval {
            state.insert_approval(approval);
        }
        if let Some(status) = writes.close_approvals {
            state.close_approvals(execution_id, status, now);
        }
        Ok(writes.committed)
    }

    async fn renew_lease(&self, id: Uuid, owner: &str, expires_at: Timestamp) -> Result<()> {
        let mut state = self.lock();
        let execution = state.execution_mut(id)?;
        rules::check_lease(execution, owner, None)?;
        if let Some(lease) = execution.lease.as_mut() {
            lease.expires_at = expires_at;
        }
        Ok(())
    }

    async fn release_lease(&self, id: Uuid, owner: &str, now: Timestamp) -> Result<()> {
        let mut state = self.lock();
        let execution = state.execution_mut(id)?;
        rules::check_lease(execution, owner, None)?;
        execution.lease = Some(Lease {
            owner: None,
            expires_at: now,
        });
        execution.version += 1;
        execution.updated_at = now;
        Ok(())
    }

    async fn claim_expired_leases(
        &self,
        now: Timestamp,
        lease: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<Execution>> {
        let mut state = self.lock();
        let mut due: Vec<(Timestamp, Uuid)> = state
            .executions
            .values()
            .filter(|e| e.status == ExecutionStatus::Running)
            .filter_map(|e| match &e.lease {
                Some(l) if l.expires_at <= now => Some((l.expires_at, e.id)),
                Some(_) => None,
                None => Some((e.updated_at, e.id)),
            })
            .collect();
        due.sort();
        let mut claimed = Vec::new();
        for (_, id) in due.into_iter().take(limit as usize) {
            let execution = state.execution_mut(id)?;
            rules::claim(execution, lease, now);
            claimed.push(execution.clone());
        }
        Ok(claimed)
    }

    async fn claim_due_gates(
        &self,
        now: Timestamp,
        lease: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<Execution>> {
        let mut state = self.lock();
        let mut due: Vec<(Timestamp, Uuid)> = state
            .executions
            .values()
            .filter(|e| e.status.is_gated())
            .filter_map(|e| {
                e.gate
                    .as_ref()
                    .and_then(|g| g.deadline)
                    .filter(|d| *d <= now)
                    .map(|d| (d, e.id))
            })
            .collect();
        due.sort();
        let mut claimed = Vec::new();
        for (_, id) in due.into_iter().take(limit as usize) {
            let Some(gate) = state.executions.get(&id).and_then(|e| e.gate.clone()) else {
                continue;
            };
            if let Some(approval) = gate.approval_id.and_then(|a| state.approvals.get_mut(&a)) {
                if approval.status == ApprovalStatus::Pending {
                    approval.status = ApprovalStatus::Expired;
                    approval.decided_at = Some(now);
                }
            }
            let execution = state.execution_mut(id)?;
            rules::resume(execution, rules::deadline_wake(&gate, now), lease, now);
            let snapshot = execution.clone();
            state.audit(
                id,
                ResumeTrigger::Timer,
                None,
                json!({"deadline": gate.deadline, "step_id": gate.step_id}),
                now,
            );
            claimed.push(snapshot);
        }
        Ok(claimed)
    }

    async fn time_out_overdue(&self, now: Timestamp, limit: u32) -> Result<Vec<Execution>> {
        let mut state = self.lock();
        let mut due: Vec<(Timestamp, Uuid)> = state
            .executions
            .values()
            .filter(|e| rules::is_overdue(e, now))
            .filter_map(|e| e.deadline.map(|d| (d, e.id)))
            .collect();
        due.sort();
        let mut ended = Vec::new();
        for (deadline, id) in due.into_iter().take(limit as usize) {
            let execution = state.execution_mut(id)?;
            rules::time_out(execution, deadline, now);
            ended.push(execution.clone());
            state.close_approvals(id, ApprovalStatus::Expired, now);
            state.audit(
                id,
                ResumeTrigger::Timer,
                None,
                json!({"deadline": deadline, "workflow_timeout": true}),
                now,
            );
        }
        Ok(ended)
    }

    async fn request_pause(
        &self,
        id: Uuid,
        _actor: Option<&str>,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut state = self.lock();
        let execution = state.execution_mut(id)?;
        rules::request_pause(execution, reason, now)?;
        Ok(execution.clone())
    }

    async fn resume_manual(
        &self,
        id: Uuid,
        actor: Option<&str>,
        data: Value,
        lease: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut state = self.lock();
        let execution = state.execution_mut(id)?;
        rules::check_manually_paused(execution)?;
        rules::resume(
            execution,
            Wake::Manual {
                data: data.clone(),
                actor: actor.map(str::to_owned),
            },
            lease,
            now,
        );
        let snapshot = execution.clone();
        state.audit(id, ResumeTrigger::Manual, actor, data, now);
        Ok(snapshot)
    }

    async fn cancel_execution(
        &self,
        id: Uuid,
        actor: Option<&str>,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut state = self.lock();
        let execution = state.execution_mut(id)?;
        rules::cancel(execution, actor, reason, now)?;
        let snapshot = execution.clone();
        state.close_approvals(id, ApprovalStatus::Cancelled, now);
        Ok(snapshot)
    }

    async fn claim_wait(
        &self,
        id: Uuid,
        expected_version: Option<i64>,
        event: &Event,
        actor: Option<&str>,
        lease: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut state = self.lock();
        let execution = state.execution_mut(id)?;
        rules::check_wait_claim(execution, expected_version, event)?;
        rules::claim_wait(execution, event, lease, now);
        let snapshot = execution.clone();
        state.audit(
            id,
            ResumeTrigger::Event,
            actor,
            json!({"event_id": event.id, "event_type": event.event_type}),
            now,
        );
        Ok(snapshot)
    }

    async fn waiting_for_event(
        &self,
        event_type: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Execution>> {
        let state = self.lock();
        Ok(state
            .executions
            .values()
            .filter(|e| after.is_none_or(|a| e.id > a))
            .filter(|e| {
                e.status == ExecutionStatus::Waiting
                    && e.gate.as_ref().and_then(|g| g.event.as_deref()) == Some(event_type)
            })
            .take(limit as usize)
            .cloned()
            .collect())
    }
}

fn upsert_step(steps: &mut Vec<StepRecord>, record: StepRecord) {
    match steps.iter_mut().find(|s| s.id == record.id) {
        Some(slot) => *slot = record,
        None => steps.push(record),
    }
}

#[async_trait]
impl ApprovalStore for MemoryStore {
    async fn get_approval(&self, id: Uuid) -> Result<ApprovalRequest> {
        self.lock()
            .approvals
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("approval", id))
    }

    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state
            .approvals
            .values()
            .filter(|a| filter.status.is_none_or(|s| a.status == s))
            .filter(|a| {
                filter
                    .role
                    .as_ref()
                    .is_none_or(|r| a.approver_roles.contains(r))
            })
            .filter(|a| filter.execution_id.is_none_or(|e| a.execution_id == e))
            .filter(|a| {
                filter.decidable_by.as_ref().is_none_or(|p| {
                    a.status == ApprovalStatus::Pending
                        && a.authorize(p).is_ok()
                        && !a.decisions.iter().any(|d| d.decided_by == p.subject)
                })
            })
            .map(|a| (a.id, a.clone()))
            .collect();
        Ok(paginate(items, true, after, page.limit, encode_id))
    }

    async fn decide(
        &self,
        approval_id: Uuid,
        decision: Decision,
        decider: &Principal,
        lease: &LeaseClaim,
        now: Timestamp,
        then: Option<Continuation>,
    ) -> Result<Decided> {
        self.decide_with(approval_id, decision, decider, lease, now, then.as_ref())
    }
}

impl MemoryStore {
    fn decide_with(
        &self,
        approval_id: Uuid,
        decision: Decision,
        decider: &Principal,
        lease: &LeaseClaim,
        now: Timestamp,
        then: Option<&Continuation>,
    ) -> Result<Decided> {
        let mut state = self.lock();
        let mut approval = state
            .approvals
            .get(&approval_id)
            .cloned()
            .ok_or_else(|| Error::not_found("approval", approval_id))?;
        let mut execution = state
            .executions
            .get(&approval.execution_id)
            .cloned()
            .ok_or_else(|| Error::not_found("execution", approval.execution_id))?;
        let audit = json!({"approval_id": approval_id, "decision": decision.decision, "reason": decision.reason, "data": decision.data});
        let decided_by = decision.decided_by.clone();
        let claimed = rules::decide(&mut approval, &mut execution, decision, decider, lease, now)?;
        let next = match then {
            Some(then) if claimed => rules::continuation(&execution, then),
            _ => None,
        };
        state.approvals.insert(approval_id, approval.clone());
        if claimed {
            if let Some(next) = &next {
                // Leaving the gate closed its only open request (the decided one), so
                // an ending here has no other request to close.
                execution = next.execution.clone();
                let steps = state.steps.entry(execution.id).or_default();
                for record in &next.records {
                    upsert_step(steps, record.clone());
                }
                if let Some(approval) = &next.approval {
                    state.insert_approval(approval.clone());
                }
            }
            *state.execution_mut(execution.id)? = execution.clone();
            state.audit(
                execution.id,
                ResumeTrigger::Approval,
                Some(&decided_by),
                audit,
                now,
            );
        }
        Ok(Decided {
            approval,
            execution,
            claimed,
            continued: next,
        })
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    async fn insert_event(&self, event: Event) -> Result<EventInsert> {
        self.insert_event_starting(event, Vec::new()).await
    }

    async fn insert_event_starting(
        &self,
        event: Event,
        starts: Vec<Starting>,
    ) -> Result<EventInsert> {
        let mut state = self.lock();
        // This very event (same id) is stored: a retried write of it. It was inserted.
        if let Some(ours) = state.events.get(&event.id) {
            return Ok(EventInsert::Inserted(ours.clone()));
        }
        if let Some(key) = &event.event_id {
            if let Some(existing) = state.event_ids.get(key).and_then(|id| state.events.get(id)) {
                return Ok(EventInsert::Duplicate(existing.clone()));
            }
        }
        if let Some(taken) = starts
            .iter()
            .find(|s| state.executions.contains_key(&s.execution.id))
        {
            return Err(Error::Conflict(format!(
                "execution {} already exists",
                taken.execution.id
            )));
        }
        if let Some(taken) = starts
            .iter()
            .filter_map(|s| s.approval.as_ref())
            .find(|a| state.approvals.contains_key(&a.id))
        {
            return Err(Error::Conflict(format!(
                "approval {} already exists",
                taken.id
            )));
        }
        if let Some(key) = &event.event_id {
            state.event_ids.insert(key.clone(), event.id);
        }
        for start in starts {
            let id = start.execution.id;
            state.executions.insert(id, start.execution);
            let steps = state.steps.entry(id).or_default();
            for record in start.records {
                upsert_step(steps, record);
            }
            if let Some(approval) = start.approval {
                state.insert_approval(approval);
            }
        }

        state.undelivered.insert(event.id);
        state.events.insert(event.id, event.clone());
        Ok(EventInsert::Inserted(event))
    }

    async fn deliver_event(
        &self,
        mut event: Event,
        expected_version: Option<i64>,
        claim: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Delivery> {
        let mut state = self.lock();
        let target = rules::delivery_target(&event)?;
        if let Some(key) = &event.event_id {
            if let Some(existing) = state.event_ids.get(key).and_then(|id| state.events.get(id)) {
                return Ok(Delivery::Duplicate(existing.clone()));
            }
        }
        let execution = state.execution_mut(target)?;
        rules::check_wait_claim(execution, expected_version, &event)?;
        rules::claim_wait(execution, &event, claim, now);
        let claimed = execution.clone();
        event.resumed = vec![target];
        if let Some(key) = &event.event_id {
            state.event_ids.insert(key.clone(), event.id);
        }
        state.events.insert(event.id, event.clone());
        state.audit(
            target,
            ResumeTrigger::Event,
            event.submitted_by.as_deref(),
            json!({"event_id": event.id, "event_type": event.event_type}),
            now,
        );
        Ok(Delivery::Claimed {
            event,
            execution: Box::new(claimed),
        })
    }

    async fn set_event_outcome(
        &self,
        id: Uuid,
        started: Vec<Uuid>,
        resumed: Vec<Uuid>,
    ) -> Result<Event> {
        let mut state = self.lock();
        let event = state
            .events
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("event", id))?;
        event.started = started;
        event.resumed = resumed;
        Ok(event.clone())
    }

    async fn get_event(&self, id: Uuid) -> Result<Event> {
        self.lock()
            .events
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("event", id))
    }

    async fn events_for_wait(
        &self,
        event_type: &str,
        since: Timestamp,
        execution_id: Uuid,
        after: Option<(Timestamp, Uuid)>,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let state = self.lock();
        let mut events: Vec<&Event> = state
            .events
            .values()
            .filter(|e| e.event_type == event_type && e.received_at >= since)
            .filter(|e| e.correlation_id.is_none_or(|c| c == execution_id))
            .filter(|e| after.is_none_or(|a| (e.received_at, e.id) > a))
            .collect();
        events.sort_by_key(|e| (e.received_at, e.id));
        Ok(events.into_iter().take(limit as usize).cloned().collect())
    }

    async fn undelivered_events(
        &self,
        received_before: Timestamp,
        limit: u32,
    ) -> Result<Vec<Event>> {
        let state = self.lock();
        let mut events: Vec<&Event> = state
            .undelivered
            .iter()
            .filter_map(|id| state.events.get(id))
            .filter(|e| e.received_at <= received_before)
            .collect();
        events.sort_by_key(|e| (e.received_at, e.id));
        Ok(events.into_iter().take(limit as usize).cloned().collect())
    }

    async fn mark_events_delivered(&self, ids: &[Uuid]) -> Result<()> {
        let mut state = self.lock();
        for id in ids {
            state.undelivered.remove(id);
        }
        Ok(())
    }
}

#[async_trait]
impl ResumeRequestStore for MemoryStore {
    async fn record_resume_request(&self, request: ResumeRequest) -> Result<()> {
        self.lock()
            .resume_requests
            .entry(request.execution_id)
            .or_default()
            .push(request);
        Ok(())
    }

    async fn list_resume_requests(&self, execution_id: Uuid) -> Result<Vec<ResumeRequest>> {
        let state = self.lock();
        if !state.executions.contains_key(&execution_id) {
            return Err(Error::not_found("execution", execution_id));
        }
        Ok(state
            .resume_requests
            .get(&execution_id)
            .cloned()
            .unwrap_or_default())
    }
}

#[async_trait]
impl RecordStore for MemoryStore {
    async fn get_record(&self, entity: &str, entity_id: &str) -> Result<Record> {
        self.lock()
            .records
            .get(&(entity.to_owned(), entity_id.to_owned()))
            .cloned()
            .ok_or_else(|| Error::not_found("record", format!("{entity}/{entity_id}")))
    }
}

#[async_trait]
impl NotificationStore for MemoryStore {
    async fn put_notification(&self, notification: Notification) -> Result<()> {
        self.lock()
            .notifications
            .insert(notification.id, notification);
        Ok(())
    }

    async fn list_notifications(
        &self,
        filter: &NotificationFilter,
        page: &PageRequest,
    ) -> Result<Page<Notification>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state
            .notifications
            .values()
            .filter(|n| filter.execution_id.is_none_or(|e| n.execution_id == e))
            .map(|n| (n.id, n.clone()))
            .collect();
        Ok(paginate(items, false, after, page.limit, encode_id))
    }
}

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn create_api_key(&self, key: ApiKey) -> Result<ApiKey> {
        let mut state = self.lock();
        if state.api_keys.values().any(|k| k.name == key.name) {
            return Err(Error::Conflict(format!(
                "an API key named `{}` already exists",
                key.name
            )));
        }
        state.api_keys.insert(key.id, key.clone());
        Ok(key)
    }

    async fn list_api_keys(&self, page: &PageRequest) -> Result<Page<ApiKey>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state.api_keys.values().map(|k| (k.id, k.clone())).collect();
        Ok(paginate(items, false, after, page.limit, encode_id))
    }

    async fn delete_api_key(&self, id: Uuid) -> Result<()> {
        self.lock()
            .api_keys
            .remove(&id)
            .map(|_| ())
            .ok_or_else(|| Error::not_found("api key", id))
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        Ok(self
            .lock()
            .api_keys
            .values()
            .find(|k| k.key_hash == key_hash)
            .cloned())
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, session: ConsoleSession, now: Timestamp) -> Result<()> {
        let mut state = self.lock();
        state.sessions.retain(|_, s| s.expires_at > now);
        if state.sessions.contains_key(&session.id_hash) {
            return Err(Error::Conflict("session exists".into()));
        }
        state.sessions.insert(session.id_hash.clone(), session);
        Ok(())
    }

    async fn get_session(&self, id_hash: &str, now: Timestamp) -> Result<Option<ConsoleSession>> {
        Ok(self
            .lock()
            .sessions
            .get(id_hash)
            .filter(|s| s.expires_at > now)
            .cloned())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        self.lock().sessions.remove(id_hash);
        Ok(())
    }
}

#[async_trait]
impl Health for MemoryStore {
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl ScheduleStore for MemoryStore {
    async fn create_schedule(&self, schedule: Schedule) -> Result<Schedule> {
        let mut state = self.lock();
        if !state.workflows.contains_key(&schedule.workflow_id) {
            return Err(Error::not_found("workflow", schedule.workflow_id));
        }
        if state.schedules.contains_key(&schedule.id) {
            return Err(Error::Conflict(format!(
                "schedule {} already exists",
                schedule.id
            )));
        }
        state.schedules.insert(schedule.id, schedule.clone());
        Ok(schedule)
    }

    async fn get_schedule(&self, id: Uuid) -> Result<Schedule> {
        self.lock()
            .schedules
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("schedule", id))
    }

    async fn list_schedules(
        &self,
        filter: &ScheduleFilter,
        page: &PageRequest,
    ) -> Result<Page<Schedule>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state
            .schedules
            .values()
            .filter(|s| filter.workflow_id.is_none_or(|w| s.workflow_id == w))
            .map(|s| (s.id, s.clone()))
            .collect();
        Ok(paginate(items, false, after, page.limit, encode_id))
    }

    async fn update_schedule(&self, schedule: Schedule) -> Result<Schedule> {
        let mut state = self.lock();
        let slot = state
            .schedules
            .get_mut(&schedule.id)
            .ok_or_else(|| Error::not_found("schedule", schedule.id))?;
        slot.cron = schedule.cron;
        slot.timezone = schedule.timezone;
        slot.enabled = schedule.enabled;
        slot.catch_up = schedule.catch_up;
        slot.next_fire_at = schedule.next_fire_at;
        slot.updated_at = schedule.updated_at;
        Ok(slot.clone())
    }

    async fn delete_schedule(&self, id: Uuid) -> Result<()> {
        let mut state = self.lock();
        if !state.schedules.contains_key(&id) {
            return Err(Error::not_found("schedule", id));
        }
        state.remove_schedule(id);
        Ok(())
    }

    async fn claim_ticks(
        &self,
        now: Timestamp,
        claim: &LeaseClaim,
        limit: u32,
    ) -> Result<Vec<ClaimedTick>> {
        let mut state = self.lock();
        let mut claimed = Vec::new();
        let orphaned: Vec<Uuid> = state
            .ticks
            .values()
            .filter(|t| {
                t.status == TickStatus::Pending && t.lease_expires_at.is_some_and(|e| e <= now)
            })
            .map(|t| t.id)
            .take(limit as usize)
            .collect();
        for id in orphaned {
            let Some(tick) = state.ticks.get_mut(&id) else {
                continue;
            };
            tick.owner = Some(claim.owner.clone());
            tick.lease_expires_at = Some(claim.expires_at);
            let tick = tick.clone();
            if let Some(schedule) = state.schedules.get(&tick.schedule_id).cloned() {
                claimed.push(ClaimedTick { tick, schedule });
            }
        }
        let mut due: Vec<(Timestamp, Uuid)> = state
            .schedules
            .values()
            .filter(|s| {
                s.enabled
                    && s.next_fire_at.is_some_and(|t| t <= now)
                    && state
                        .workflows
                        .get(&s.workflow_id)
                        .is_some_and(|w| w.enabled)
            })
            .filter_map(|s| s.next_fire_at.map(|t| (t, s.id)))
            .collect();
        due.sort();
        for (_, id) in due.into_iter().take(limit as usize) {
            let Some(schedule) = state.schedules.get_mut(&id) else {
                continue;
            };
            let times = rules::fire_schedule(schedule, now);
            let schedule = schedule.clone();
            for time in times {
                let tick = rules::new_tick(id, time, claim, now);
                if state.ticks.contains_key(&tick.id) {
                    continue;
                }
                state.ticks.insert(tick.id, tick.clone());
                claimed.push(ClaimedTick {
                    tick,
                    schedule: schedule.clone(),
                });
            }
        }
        Ok(claimed)
    }

    async fn start_tick(
        &self,
        tick_id: Uuid,
        owner: &str,
        execution: Execution,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut state = self.lock();
        let tick = state
            .ticks
            .get(&tick_id)
            .ok_or_else(|| Error::not_found("tick", tick_id))?;
        rules::check_tick_owner(tick, owner)?;
        if state.executions.contains_key(&execution.id) {
            return Err(Error::Conflict(format!(
                "execution {} already exists",
                execution.id
            )));
        }
        state.executions.insert(execution.id, execution.clone());
        if let Some(tick) = state.ticks.get_mut(&tick_id) {
            tick.status = TickStatus::Started;
            tick.started_at = Some(now);
            tick.execution_id = Some(execution.id);
            tick.owner = None;
            tick.lease_expires_at = None;
        }
        Ok(execution)
    }

    async fn fail_tick(
        &self,
        tick_id: Uuid,
        owner: &str,
        error: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut state = self.lock();
        let tick = state
            .ticks
            .get_mut(&tick_id)
            .ok_or_else(|| Error::not_found("tick", tick_id))?;
        rules::check_tick_owner(tick, owner)?;
        tick.status = TickStatus::Failed;
        tick.error = Some(error.to_owned());
        tick.started_at = Some(now);
        tick.owner = None;
        tick.lease_expires_at = None;
        Ok(())
    }

    async fn next_fire_at(&self) -> Result<Option<Timestamp>> {
        let state = self.lock();
        Ok(state
            .schedules
            .values()
            .filter(|s| {
                s.enabled
                    && state
                        .workflows
                        .get(&s.workflow_id)
                        .is_some_and(|w| w.enabled)
            })
            .filter_map(|s| s.next_fire_at)
            .min())
    }

    async fn list_ticks(&self, schedule_id: Uuid, page: &PageRequest) -> Result<Page<TickView>> {
        let after = crate::cursor::decode_time_id_cursor(page.cursor.as_deref())?;
        let state = self.lock();
        let items = state
            .ticks
            .values()
            .filter(|t| t.schedule_id == schedule_id)
            .map(|t| {
                let outcome = t
                    .execution_id
                    .and_then(|e| state.executions.get(&e))
                    .map(|e| e.status);
                (
                    (t.tick_time.timestamp_micros(), t.id),
                    TickView {
                        tick: t.clone(),
                        outcome,
                    },
                )
            })
            .collect();
        Ok(paginate(items, true, after, page.limit, |(micros, id)| {
            crate::cursor::encode_cursor(&[&micros.to_string(), &id.to_string()])
        }))
    }
}
