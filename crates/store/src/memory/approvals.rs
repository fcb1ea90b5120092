//! [`ApprovalStore`] in memory.

use async_trait::async_trait;
use tollgate_model::records::{
    ApprovalAssignment, ApprovalComment, ApprovalRequest, ApprovalRung, ApprovalSla,
    ApprovalStatus, ResumeTrigger, Timestamp,
};
use tollgate_model::ExecutionStatus;
use uuid::Uuid;

use super::{encode_id, id_cursor, paginate, upsert_step, MemoryStore};
use crate::decision_batch::DecideRequest;
use crate::traits::ApprovalStore;
use crate::types::{ApprovalFilter, ApprovalPin, AssignmentChange, Decided, Page, PageRequest};
use crate::{rules, Error, Result};

#[async_trait]
impl ApprovalStore for MemoryStore {
    async fn get_approval(&self, id: Uuid) -> Result<ApprovalRequest> {
        self.lock()
            .approvals
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("approval", id))
    }

    async fn approval_pin(&self, approval_id: Uuid) -> Result<ApprovalPin> {
        let state = self.lock();
        let a = state
            .approvals
            .get(&approval_id)
            .ok_or_else(|| Error::not_found("approval", approval_id))?;
        let e = state
            .executions
            .get(&a.execution_id)
            .ok_or_else(|| Error::not_found("execution", a.execution_id))?;
        Ok(ApprovalPin {
            execution_id: a.execution_id,
            step_id: a.step_id.clone(),
            snapshot_id: e.snapshot_id.clone(),
        })
    }

    async fn count_pending_approvals(&self) -> Result<u64> {
        let state = self.lock();
        Ok(state
            .approvals
            .values()
            .filter(|a| a.status == ApprovalStatus::Pending)
            .count() as u64)
    }

    async fn list_approvals(
        &self,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>> {
        if filter.by_due {
            return self.list_by_due(filter, page);
        }
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state
            .approvals
            .values()
            .filter(|a| matches(&state, filter, a))
            .map(|a| (a.id, a.clone()))
            .collect();
        Ok(paginate(items, true, after, page.limit, encode_id))
    }

    async fn slas(&self, ids: &[Uuid]) -> Result<Vec<ApprovalSla>> {
        let state = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| state.slas.get(id).cloned())
            .collect())
    }

    async fn count_overdue_approvals(&self, now: Timestamp) -> Result<u64> {
        let state = self.lock();
        Ok(state
            .slas
            .values()
            .filter(|s| {
                state
                    .approvals
                    .get(&s.approval_id)
                    .is_some_and(|a| s.is_overdue(a.status, now))
            })
            .count() as u64)
    }

    async fn decide_request(&self, request: DecideRequest) -> Result<Decided> {
        self.decide_with(&request)
    }

    async fn add_comment(&self, comment: &ApprovalComment) -> Result<()> {
        let mut state = self.lock();
        if !state.approvals.contains_key(&comment.approval_id) {
            return Err(Error::not_found("approval", comment.approval_id));
        }
        state
            .comments
            .entry(comment.approval_id)
            .or_default()
            .push(comment.clone());
        Ok(())
    }

    async fn fire_due_rungs(&self, now: Timestamp, limit: u32) -> Result<Vec<ApprovalRung>> {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut due: Vec<(Timestamp, (Uuid, u32))> = state
            .rungs
            .iter()
            .filter(|(_, r)| r.fired_at.is_none() && r.due_at <= now)
            .map(|(k, r)| (r.due_at, *k))
            .collect();
        due.sort();
        due.truncate(limit as usize);
        let mut fired = Vec::with_capacity(due.len());
        for (_, key) in due {
            let (Some(rung), Some(approval)) =
                (state.rungs.get_mut(&key), state.approvals.get_mut(&key.0))
            else {
                // A rung whose request is gone (purged) has nothing to do.
                state.rungs.remove(&key);
                continue;
            };
            for n in rules::fire_rung(approval, rung, now) {
                state.notifications.insert(n.id, n);
            }
            fired.push(rung.clone());
        }
        Ok(fired)
    }

    async fn list_rungs(&self, approval_id: Uuid) -> Result<Vec<ApprovalRung>> {
        let state = self.lock();
        if !state.approvals.contains_key(&approval_id) {
            return Err(Error::not_found("approval", approval_id));
        }
        Ok(state
            .rungs
            .range((approval_id, 0)..=(approval_id, u32::MAX))
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn list_comments(
        &self,
        approval_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<ApprovalComment>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        if !state.approvals.contains_key(&approval_id) {
            return Err(Error::not_found("approval", approval_id));
        }
        let items = state
            .comments
            .get(&approval_id)
            .into_iter()
            .flatten()
            .map(|c| (c.id, c.clone()))
            .collect();
        Ok(paginate(items, false, after, page.limit, encode_id))
    }

    async fn assign_approval(
        &self,
        approval_id: Uuid,
        change: &AssignmentChange,
        now: Timestamp,
    ) -> Result<Option<ApprovalAssignment>> {
        let mut state = self.lock();
        let status = state
            .approvals
            .get(&approval_id)
            .ok_or_else(|| Error::not_found("approval", approval_id))?
            .status;
        let next = rules::assign(
            approval_id,
            status,
            state.assignments.get(&approval_id),
            change,
            now,
        )?;
        match &next {
            Some(a) => state.assignments.insert(approval_id, a.clone()),
            None => state.assignments.remove(&approval_id),
        };
        Ok(next)
    }

    async fn assignments(&self, ids: &[Uuid]) -> Result<Vec<ApprovalAssignment>> {
        let state = self.lock();
        Ok(ids
            .iter()
            .filter_map(|id| state.assignments.get(id).cloned())
            .collect())
    }
}

/// Whether `a` passes `filter`.
fn matches(state: &super::State, filter: &ApprovalFilter, a: &ApprovalRequest) -> bool {
    filter.status.is_none_or(|s| a.status == s)
        && filter
            .role
            .as_ref()
            .is_none_or(|r| a.approver_roles.contains(r))
        && filter.execution_id.is_none_or(|e| a.execution_id == e)
        && filter.workflow_key.as_ref().is_none_or(|key| {
            state
                .executions
                .get(&a.execution_id)
                .is_some_and(|e| &e.workflow_key == key)
        })
        && filter.step_id.as_ref().is_none_or(|s| &a.step_id == s)
        && filter.requested_before.is_none_or(|t| a.requested_at < t)
        && filter.decidable_by.as_ref().is_none_or(|p| {
            a.status == ApprovalStatus::Pending
                && a.authorize(p).is_ok()
                && !a.decisions.iter().any(|d| d.decided_by == p.subject)
        })
}

impl MemoryStore {
    /// [`ApprovalStore::list_approvals`] in due order: soonest first, none last,
    /// newest first among equals.
    fn list_by_due(
        &self,
        filter: &ApprovalFilter,
        page: &PageRequest,
    ) -> Result<Page<ApprovalRequest>> {
        let after = crate::decode_due_cursor(page.cursor.as_deref())?;
        let state = self.lock();
        let key = |due: Option<Timestamp>, id: Uuid| (due.is_none(), due, std::cmp::Reverse(id));
        let due_of = |id: &Uuid| state.slas.get(id).and_then(|s| s.due_at);
        let mut items: Vec<(Option<Timestamp>, ApprovalRequest)> = state
            .approvals
            .values()
            .filter(|a| matches(&state, filter, a))
            .map(|a| (due_of(&a.id), a.clone()))
            .filter(|(due, a)| after.is_none_or(|(d, id)| key(*due, a.id) > key(d, id)))
            .collect();
        items.sort_by_key(|(due, a)| key(*due, a.id));
        items.truncate(page.limit as usize + 1);
        let listed = crate::page_from_overfetch(items, page.limit, |(due, a)| {
            crate::encode_due_cursor(*due, a.id)
        });
        Ok(Page {
            items: listed.items.into_iter().map(|(_, a)| a).collect(),
            next_cursor: listed.next_cursor,
        })
    }

    fn decide_with(&self, request: &DecideRequest) -> Result<Decided> {
        let (approval_id, decider, lease, now) = (
            request.approval_id,
            &request.decider,
            &request.claim,
            request.now,
        );
        let mut decision = request.decision.clone();
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
        rules::check_form(request.form.as_ref(), &approval, &execution, &mut decision)?;
        let audit = rules::decision_audit(approval_id, &decision);
        let decided_by = decision.decided_by.clone();
        let claimed = rules::decide(&mut approval, &mut execution, decision, decider, lease, now)?;
        let next = match &request.then {
            Some(then) if claimed => rules::continuation(&execution, then),
            _ => None,
        };
        state.approvals.insert(approval_id, approval.clone());
        if claimed {
            if let Some(next) = &next {
                // Leaving the gate closed its only open request (the decided one), so
                // an ending here has no other request to close.
                execution = next.execution.clone();
                state.extend_trail(
                    execution.id,
                    execution.version,
                    next.undo.clone(),
                    execution.status == ExecutionStatus::Completed,
                );
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
            assignment: state.assignments.get(&approval.id).cloned(),
            sla: state.slas.get(&approval.id).cloned(),
            approval,
            execution,
            claimed,
            continued: next,
        })
    }
}
