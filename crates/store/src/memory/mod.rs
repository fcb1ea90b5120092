//! The in-memory store: every trait on one mutex-guarded state.
//!
//! It is the store of the engine's and resumer's tests and of embedders that want no
//! database. One lock around the whole state makes every method trivially atomic; the
//! contract test kit holds it to the same rules as the SQL backends, so a test that passes
//! here means the same thing there. The state and what every aggregate shares are here;
//! each store trait has its own file.

mod approvals;
mod audit;
mod events;
mod executions;
mod keys;
mod schedules;
mod workers;
mod workflows;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::Value;
use tollgate_model::records::{
    ApiKey, ApprovalRequest, ApprovalStatus, ConsoleSession, Event, Execution, Notification,
    Record, ResumeOutcome, ResumeRequest, ResumeTrigger, StepRecord, Timestamp, WorkerBeat,
    Workflow,
};
use tollgate_model::schedule::{Schedule, Tick};
use tollgate_model::WorkflowDefinition;
use uuid::Uuid;

use crate::cursor::{decode_cursor, encode_cursor};
use crate::types::{Effect, Page, PageRequest};
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
    /// Each execution's context undo trail: (version, entries), oldest first.
    trails: HashMap<Uuid, Vec<(i64, Vec<tollgate_model::undo::ContextUndo>)>>,
    approvals: BTreeMap<Uuid, ApprovalRequest>,
    /// Approval ids by execution, so ending an execution does not scan every request.
    approvals_by_execution: HashMap<Uuid, Vec<Uuid>>,
    /// Each request's comments, oldest first.
    comments: HashMap<Uuid, Vec<tollgate_model::records::ApprovalComment>>,
    /// Each request's service level, when it has one.
    slas: HashMap<Uuid, tollgate_model::records::ApprovalSla>,
    /// Delegations by id.
    delegations: BTreeMap<Uuid, tollgate_model::records::Delegation>,
    /// Who holds each request that someone holds.
    assignments: HashMap<Uuid, tollgate_model::records::ApprovalAssignment>,
    events: BTreeMap<Uuid, Event>,
    event_ids: HashMap<String, Uuid>,
    /// Events stored but not yet marked delivered (see `EventStore::undelivered_events`).
    undelivered: BTreeSet<Uuid>,
    resume_requests: HashMap<Uuid, Vec<ResumeRequest>>,
    records: HashMap<(String, String), Record>,
    notifications: BTreeMap<Uuid, Notification>,
    /// Live claims on queued notifications: owner and until when.
    notification_claims: HashMap<Uuid, (String, Timestamp)>,
    /// Approval ladders by (request, position).
    rungs: BTreeMap<(Uuid, u32), tollgate_model::records::ApprovalRung>,
    api_keys: BTreeMap<Uuid, ApiKey>,
    schedules: BTreeMap<Uuid, Schedule>,
    ticks: BTreeMap<Uuid, Tick>,
    sessions: HashMap<String, ConsoleSession>,
    workers: HashMap<String, WorkerBeat>,
    quarantined: BTreeMap<Uuid, crate::types::Quarantined>,
    /// Shapes stored events are keyed for.
    event_shapes: Vec<crate::types::EventShape>,
    /// Stored event keys by (event type, shape, hash): (`received_at`, event id).
    event_keys: BTreeMap<(String, String, String), BTreeSet<(Timestamp, Uuid)>>,
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

    /// Lists `execution` in the `resumed` list of the event it consumed (if still kept).
    fn note_consumed(&mut self, event: Uuid, execution: Uuid) {
        if let Some(event) = self.events.get_mut(&event) {
            if !event.resumed.contains(&execution) {
                event.resumed.push(execution);
            }
        }
    }

    /// Stores a new approval request and indexes it by execution.
    /// Adds a commit's undo entries under `version`; `drop` deletes the trail instead.
    fn extend_trail(
        &mut self,
        execution_id: Uuid,
        version: i64,
        undo: Vec<tollgate_model::undo::ContextUndo>,
        drop: bool,
    ) {
        if drop {
            self.trails.remove(&execution_id);
        } else if !undo.is_empty() {
            self.trails
                .entry(execution_id)
                .or_default()
                .push((version, undo));
        }
    }

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
            Effect::Rung(rung) => {
                self.rungs
                    .entry((rung.approval_id, rung.position))
                    .or_insert(rung);
            }
            Effect::Sla(sla) => {
                self.slas.entry(sla.approval_id).or_insert(sla);
            }
        }
    }
}

fn upsert_step(steps: &mut Vec<StepRecord>, record: StepRecord) {
    match steps.iter_mut().find(|s| s.id == record.id) {
        Some(slot) => *slot = record,
        None => steps.push(record),
    }
}
