//! [`ExecutionStore`] in memory.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{json, Value};
use tollgate_model::records::{
    ApprovalStatus, Event, Execution, Gate, Lease, Migration, ResumeTrigger, Retry, StepRecord,
    Timestamp, Wake,
};
use tollgate_model::undo::ContextUndo;
use tollgate_model::ExecutionStatus;
use uuid::Uuid;

use super::{encode_id, id_cursor, paginate, upsert_step, MemoryStore};
use crate::cursor::{decode_cursor, encode_cursor};
use crate::traits::ExecutionStore;
use crate::types::{
    Committed, ExecutionFilter, LeaseClaim, Overdue, Page, PageRequest, Purge, Purged, Quarantined,
    StepCommit, Transition, WaitKey, WaitShape,
};
use crate::{rules, Error, Result};

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

    async fn overdue_gates(&self, now: Timestamp) -> Result<Overdue> {
        let state = self.lock();
        let deadlines = state
            .executions
            .values()
            .filter(|e| e.status.is_gated())
            .filter_map(|e| e.gate.as_ref().and_then(|g| g.deadline))
            .filter(|d| *d <= now);
        Ok(deadlines.fold(Overdue::default(), |acc, d| Overdue {
            count: acc.count + 1,
            oldest_deadline: Some(acc.oldest_deadline.map_or(d, |o| o.min(d))),
        }))
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

    async fn context_trail(&self, execution_id: Uuid) -> Result<Vec<ContextUndo>> {
        let state = self.lock();
        if !state.executions.contains_key(&execution_id) {
            return Err(Error::not_found("execution", execution_id));
        }
        let mut trail = state.trails.get(&execution_id).cloned().unwrap_or_default();
        trail.sort_by_key(|(version, _)| *version);
        Ok(trail.into_iter().flat_map(|(_, undo)| undo).collect())
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
        let consumed = commit.consumed_events.clone();
        let writes = rules::apply_commit(state.execution_mut(execution_id)?, commit)?;
        for event in consumed {
            state.note_consumed(event, execution_id);
        }
        let steps = state.steps.entry(execution_id).or_default();
        for record in writes.records {
            upsert_step(steps, record);
        }
        state.extend_trail(
            execution_id,
            writes.committed.version,
            writes.undo,
            writes.drop_trail,
        );
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
                    // A `first_of` step's deadline is another gate winning, not an expiry.
                    approval.status = if gate.is_first_of() {
                        ApprovalStatus::Superseded
                    } else {
                        ApprovalStatus::Expired
                    };
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

    async fn retry_execution(
        &self,
        id: Uuid,
        retry: &Retry,
        actor: Option<&str>,
        lease: &LeaseClaim,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut state = self.lock();
        let execution = state.execution_mut(id)?;
        rules::retry(execution, retry, lease, now)?;
        let snapshot = execution.clone();
        state.extend_trail(id, snapshot.version, retry.undo.clone(), false);
        state.audit(id, ResumeTrigger::Manual, actor, retry.audit.clone(), now);
        Ok(snapshot)
    }

    async fn purge_ended(&self, purge: &Purge, limit: u32) -> Result<Vec<Purged>> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let due = purge_candidates(&state.executions, purge, limit);
        let mut purged = Vec::with_capacity(due.len());
        for (ended_at, id, cutoff) in due {
            let Some(execution) = state.executions.remove(&id) else {
                continue;
            };
            state.steps.remove(&id);
            state.trails.remove(&id);
            state.resume_requests.remove(&id);
            state.quarantined.remove(&id);
            for approval in state.approvals_by_execution.remove(&id).unwrap_or_default() {
                state.approvals.remove(&approval);
                state.comments.remove(&approval);
                state.assignments.remove(&approval);
                state.slas.remove(&approval);
                state.rungs.retain(|(a, _), _| *a != approval);
            }
            let notifications = &state.notifications;
            state
                .notification_claims
                .retain(|n, _| notifications.get(n).is_some_and(|n| n.execution_id != id));
            state.notifications.retain(|_, n| n.execution_id != id);
            for event_id in &execution.consumed_events {
                let old = state
                    .events
                    .get(event_id)
                    .is_some_and(|event| event.received_at < cutoff);
                if old {
                    if let Some(event) = state.events.remove(event_id) {
                        if let Some(sender_id) = &event.event_id {
                            state.event_ids.remove(sender_id);
                        }
                        state.undelivered.remove(event_id);
                    }
                }
            }
            purged.push(Purged {
                execution_id: id,
                workflow_key: execution.workflow_key,
                ended_at,
            });
        }
        Ok(purged)
    }

    async fn migrate_execution(
        &self,
        id: Uuid,
        migration: &Migration,
        actor: Option<&str>,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut state = self.lock();
        let execution = state.execution_mut(id)?;
        rules::migrate(execution, migration, now)?;
        let snapshot = execution.clone();
        state.audit(
            id,
            ResumeTrigger::Manual,
            actor,
            migration.audit.clone(),
            now,
        );
        Ok(snapshot)
    }

    async fn purgeable(&self, purge: &Purge, limit: u32) -> Result<Vec<Purged>> {
        let state = self.lock();
        Ok(purge_candidates(&state.executions, purge, limit)
            .into_iter()
            .filter_map(|(ended_at, id, _)| {
                state.executions.get(&id).map(|e| Purged {
                    execution_id: id,
                    workflow_key: e.workflow_key.clone(),
                    ended_at,
                })
            })
            .collect())
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
        state.trails.remove(&id);
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
        if snapshot
            .gate
            .as_ref()
            .and_then(Gate::superseded_approval)
            .is_some()
        {
            state.close_approvals(id, ApprovalStatus::Superseded, now);
        }
        state.note_consumed(event.id, id);
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
        _now: Timestamp,
    ) -> Result<Vec<Execution>> {
        let state = self.lock();
        Ok(state
            .executions
            .values()
            .filter(|e| after.is_none_or(|a| e.id > a))
            .filter(|e| waits_for(e, event_type).is_some())
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn first_of_shapes(&self, event_type: &str) -> Result<Vec<WaitShape>> {
        let state = self.lock();
        let mut shapes: Vec<WaitShape> = Vec::new();
        for branch in state
            .executions
            .values()
            .filter_map(|e| e.gate.as_ref())
            .flat_map(|g| g.branches.iter().flatten())
            .filter(|b| b.event == event_type)
        {
            let shape = branch.correlation.as_ref().map_or_else(
                || WaitShape {
                    shape: String::new(),
                    fields: Vec::new(),
                },
                |c| WaitShape {
                    shape: c.shape.clone(),
                    fields: c.fields.clone(),
                },
            );
            if !shapes.iter().any(|s| s.shape == shape.shape) {
                shapes.push(shape);
            }
        }
        Ok(shapes)
    }

    async fn waiting_at_first_of(
        &self,
        event_type: &str,
        keys: &[WaitKey],
        after: Option<Uuid>,
        limit: u32,
        _now: Timestamp,
    ) -> Result<Vec<Execution>> {
        let state = self.lock();
        Ok(state
            .executions
            .values()
            .filter(|e| after.is_none_or(|a| e.id > a))
            .filter(|e| {
                e.status == ExecutionStatus::Waiting
                    && e.gate.as_ref().is_some_and(|g| {
                        g.branches.iter().flatten().any(|b| {
                            b.event == event_type
                                && b.correlation.as_ref().is_none_or(|c| {
                                    keys.iter().any(|k| k.shape == c.shape && k.hash == c.hash)
                                })
                        })
                    })
            })
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn wait_shapes(&self, event_type: &str) -> Result<Vec<WaitShape>> {
        let state = self.lock();
        let mut shapes: Vec<WaitShape> = Vec::new();
        for execution in state.executions.values() {
            let Some(key) = waits_for(execution, event_type).and_then(|g| g.correlation.as_ref())
            else {
                continue;
            };
            if !shapes.iter().any(|s| s.shape == key.shape) {
                shapes.push(WaitShape {
                    shape: key.shape.clone(),
                    fields: key.fields.clone(),
                });
            }
        }
        shapes.sort_by(|a, b| a.shape.cmp(&b.shape));
        Ok(shapes)
    }

    async fn waiting_for_keys(
        &self,
        event_type: &str,
        keys: &[WaitKey],
        after: Option<Uuid>,
        limit: u32,
        _now: Timestamp,
    ) -> Result<Vec<Execution>> {
        let state = self.lock();
        Ok(state
            .executions
            .values()
            .filter(|e| after.is_none_or(|a| e.id > a))
            .filter(|e| {
                waits_for(e, event_type).is_some_and(|g| match &g.correlation {
                    None => true,
                    Some(key) => keys
                        .iter()
                        .any(|k| k.shape == key.shape && k.hash == key.hash),
                })
            })
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn quarantine_execution(
        &self,
        id: Uuid,
        detail: &str,
        now: Timestamp,
    ) -> Result<Execution> {
        let mut state = self.lock();
        let execution = state.execution_mut(id)?;
        let original = serde_json::to_value(&*execution).unwrap_or(Value::Null);
        rules::quarantine(execution, detail, now);
        let ended = execution.clone();
        state.close_approvals(id, ApprovalStatus::Cancelled, now);
        rules::report_quarantine(id, detail);
        state.quarantined.entry(id).or_insert_with(|| Quarantined {
            execution_id: id,
            detail: detail.to_owned(),
            original,
            quarantined_at: now,
        });
        Ok(ended)
    }

    async fn list_quarantined(&self, page: &PageRequest) -> Result<Page<Quarantined>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let keyed = state
            .quarantined
            .values()
            .map(|q| (q.execution_id, q.clone()))
            .collect();
        Ok(paginate(keyed, true, after, page.limit, encode_id))
    }
}

/// (end, id, cutoff) of the executions a purge takes, oldest end first, at most `limit`.
fn purge_candidates(
    executions: &BTreeMap<Uuid, Execution>,
    purge: &Purge,
    limit: u32,
) -> Vec<(Timestamp, Uuid, Timestamp)> {
    if purge.is_empty() {
        return Vec::new();
    }
    let mut due: Vec<(Timestamp, Uuid, Timestamp)> = executions
        .values()
        .filter(|e| purge.only.as_ref().is_none_or(|only| only.contains(&e.id)))
        .filter_map(|e| {
            let ended = e.completed_at?;
            let cutoff = purge.cutoff(&e.workflow_key)?;
            (ended < cutoff).then_some((ended, e.id, cutoff))
        })
        .collect();
    due.sort();
    due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    due
}

/// The gate of an execution waiting for `event_type`.
fn waits_for<'a>(execution: &'a Execution, event_type: &str) -> Option<&'a Gate> {
    let gate = execution.gate.as_ref()?;
    (execution.status == ExecutionStatus::Waiting && gate.event.as_deref() == Some(event_type))
        .then_some(gate)
}
