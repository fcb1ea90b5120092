//! Decisions judged as a batch: what the SQL backends' decision writers share.
//!
//! A backend reads every request of a batch and its execution in its transaction, then
//! applies the decisions here in arrival order — so several decisions on one request see
//! each other — and writes what [`DecisionWrites`] collected in one go. Each decision is
//! judged by [`crate::rules::decide`], exactly as a lone one is; a refusal changes nothing
//! and touches no other decision of its batch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tollgate_model::records::{
    ApprovalAssignment, ApprovalRequest, ApprovalSla, Decision, Execution, Principal, StepRecord,
    Timestamp,
};
use tollgate_model::undo::ContextUndo;
use tollgate_model::ExecutionStatus;
use uuid::Uuid;

use crate::{rules, Continuation, Decided, Error, FormCheck, LeaseClaim, Result};

/// One decision waiting for a backend's decision writer: the arguments of
/// [`crate::ApprovalStore::decide`].
#[derive(Clone)]
pub struct DecideRequest {
    /// The request decided.
    pub approval_id: Uuid,
    /// The decision.
    pub decision: Decision,
    /// Who decides, with their roles.
    pub decider: Principal,
    /// The lease a claiming decision takes.
    pub claim: LeaseClaim,
    /// The decision's time.
    pub now: Timestamp,
    /// What the claimed execution does next.
    pub then: Option<Continuation>,
    /// The check of an approval's data against its step's decision form.
    pub form: Option<FormCheck>,
    /// Set when a batch first tries to write this request (shared by the clones a
    /// batcher makes): found set, the request is being retried after a batch whose
    /// outcome was unknown, and its own decision may already be stored.
    tried: Arc<AtomicBool>,
}

impl DecideRequest {
    /// A decision not tried yet.
    pub fn new(
        approval_id: Uuid,
        decision: Decision,
        decider: &Principal,
        claim: &LeaseClaim,
        now: Timestamp,
        then: Option<Continuation>,
    ) -> Self {
        Self {
            approval_id,
            decision,
            decider: decider.clone(),
            claim: claim.clone(),
            now,
            then,
            form: None,
            tried: Arc::default(),
        }
    }

    /// The request with `form` checking an approving decision's data, in the decision's
    /// transaction ([`FormCheck`]).
    #[must_use]
    pub fn with_form(mut self, form: Option<FormCheck>) -> Self {
        self.form = form;
        self
    }

    /// Marks the request tried and says whether it had been before: a backend whose
    /// commit outcome can be unknown (a lost connection) retries such a request knowing
    /// its own decision may be stored already.
    pub fn retried(&self) -> bool {
        self.tried.swap(true, Ordering::SeqCst)
    }
}

impl std::fmt::Debug for DecideRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecideRequest")
            .field("approval_id", &self.approval_id)
            .field("decided_by", &self.decision.decided_by)
            .field("continues", &self.then.is_some())
            .field("checks_form", &self.form.is_some())
            .finish_non_exhaustive()
    }
}

/// The audit row of a claiming decision (a `resume_requests` row, trigger `approval`,
/// outcome `resumed`). Serialised as a row of the columns it fills.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DecisionAudit {
    /// The row's id.
    pub id: Uuid,
    /// The execution the decision resumed.
    pub execution_id: Uuid,
    /// Who decided.
    pub actor: String,
    /// [`rules::decision_audit`] of the decision.
    pub data: Value,
    /// When.
    pub at: Timestamp,
}

/// Context undo entries a continued execution stored under its new version. Serialised
/// as a `context_trail` row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TrailRows {
    /// The execution.
    pub execution_id: Uuid,
    /// Its version after the continuation.
    pub version: i64,
    /// The entries.
    pub undo: Vec<ContextUndo>,
}

/// Everything a batch of decisions writes, collected while they are applied in arrival
/// order. Each touched row appears once, in its final state.
#[derive(Debug, Default)]
pub struct DecisionWrites {
    /// Final state of each touched request, by id (its status, decisions and decision
    /// time are what changed).
    pub approvals: BTreeMap<Uuid, ApprovalRequest>,
    /// Final state of each claimed (or continued) execution, by id.
    pub executions: BTreeMap<Uuid, Execution>,
    /// One audit row per claiming decision.
    pub audits: Vec<DecisionAudit>,
    /// Step records of the steps continued executions ran after their decision.
    pub records: Vec<StepRecord>,
    /// Requests of the gates continued executions stopped at.
    pub new_approvals: Vec<ApprovalRequest>,
    /// Whether a continued execution stopped where the worker loops must look.
    pub wakes: bool,
    /// Undo trail entries of continued executions still under way.
    pub trails: Vec<TrailRows>,
    /// Continued executions that completed: their trails are deleted.
    pub completed: Vec<Uuid>,
}

impl DecisionWrites {
    /// Whether the batch writes nothing (every decision was refused).
    pub fn is_empty(&self) -> bool {
        self.approvals.is_empty()
    }
}

/// The requests and executions a batch read, changed in place as its decisions apply.
#[derive(Debug, Default)]
pub struct DecisionBatch {
    approvals: HashMap<Uuid, ApprovalRequest>,
    executions: HashMap<Uuid, Execution>,
    held: HashMap<Uuid, ApprovalAssignment>,
    slas: HashMap<Uuid, ApprovalSla>,
    /// Requests a decision changed: written in their final state by [`Self::into_writes`].
    touched_approvals: BTreeSet<Uuid>,
    /// Executions a decision claimed: likewise.
    touched_executions: BTreeSet<Uuid>,
    /// What the batch writes so far besides the touched rows.
    writes: DecisionWrites,
}

impl DecisionBatch {
    /// A batch over the rows read: requests and their executions.
    pub fn new(
        approvals: impl IntoIterator<Item = ApprovalRequest>,
        executions: impl IntoIterator<Item = Execution>,
    ) -> Self {
        Self {
            approvals: approvals.into_iter().map(|a| (a.id, a)).collect(),
            executions: executions.into_iter().map(|e| (e.id, e)).collect(),
            held: HashMap::new(),
            slas: HashMap::new(),
            touched_approvals: BTreeSet::new(),
            touched_executions: BTreeSet::new(),
            writes: DecisionWrites::default(),
        }
    }

    /// Everything the applied decisions write: each touched request and execution moved
    /// out in its final state (no copy of a row is kept per decision).
    pub fn into_writes(mut self) -> DecisionWrites {
        let mut writes = std::mem::take(&mut self.writes);
        for id in &self.touched_approvals {
            if let Some(approval) = self.approvals.remove(id) {
                writes.approvals.insert(*id, approval);
            }
        }
        for id in &self.touched_executions {
            if let Some(execution) = self.executions.remove(id) {
                writes.executions.insert(*id, execution);
            }
        }
        writes
    }

    /// The batch with who holds its requests and their service levels, read with them:
    /// each answer carries its own ([`Decided::assignment`], [`Decided::sla`]). A
    /// decision changes neither.
    #[must_use]
    pub fn with_service(
        mut self,
        held: impl IntoIterator<Item = ApprovalAssignment>,
        slas: impl IntoIterator<Item = ApprovalSla>,
    ) -> Self {
        self.held = held.into_iter().map(|h| (h.approval_id, h)).collect();
        self.slas = slas.into_iter().map(|s| (s.approval_id, s)).collect();
        self
    }

    /// Applies one decision to the batch's rows and records what to write; `Err` is this
    /// decision's refusal (nothing recorded for it). `retried` says the request may find
    /// its own decision stored by an earlier try whose outcome was unknown: then it is
    /// answered as done, writing nothing again — not `409 already approved`. If that try
    /// claimed the execution, the claim's lease lapses and another worker advances it.
    pub fn apply(&mut self, request: &DecideRequest, retried: bool) -> Result<Decided> {
        let approval_id = request.approval_id;
        let now = request.now;
        let Some(approval) = self.approvals.get_mut(&approval_id) else {
            return Err(Error::not_found("approval", approval_id));
        };
        let Some(execution) = self.executions.get_mut(&approval.execution_id) else {
            return Err(Error::not_found("execution", approval.execution_id));
        };
        let mut decision = request.decision.clone();
        rules::check_form(request.form.as_ref(), approval, execution, &mut decision)?;
        if retried && rules::holds_decision(approval, &decision) {
            return Ok(answer(
                approval, execution, &self.held, &self.slas, false, None,
            ));
        }
        let (decided_by, audit) = (
            decision.decided_by.clone(),
            rules::decision_audit(approval_id, &decision),
        );
        // A refusal leaves both rows as they were (`rules::decide`'s contract), so the
        // batch's own rows are decided in place, without a copy to fall back to.
        let claimed = rules::decide(
            approval,
            execution,
            decision,
            &request.decider,
            &request.claim,
            now,
        )?;
        let writes = &mut self.writes;
        self.touched_approvals.insert(approval_id);
        if !claimed {
            return Ok(answer(
                approval, execution, &self.held, &self.slas, false, None,
            ));
        }
        let next = request
            .then
            .as_ref()
            .and_then(|then| rules::continuation(execution, then));
        if let Some(next) = &next {
            // Leaving the gate closed its only open request (the decided one), so an
            // ending here has no other request to close.
            writes.wakes |= next.wakes_workers();
            execution.clone_from(&next.execution);
            writes.records.extend(next.records.iter().cloned());
            writes.new_approvals.extend(next.approval.iter().cloned());
            if execution.status == ExecutionStatus::Completed {
                writes.completed.push(execution.id);
            } else if !next.undo.is_empty() {
                writes.trails.push(TrailRows {
                    execution_id: execution.id,
                    version: execution.version,
                    undo: next.undo.clone(),
                });
            }
        }
        self.touched_executions.insert(execution.id);
        writes.audits.push(DecisionAudit {
            id: Uuid::now_v7(),
            execution_id: execution.id,
            actor: decided_by,
            data: audit,
            at: now,
        });
        Ok(answer(
            approval, execution, &self.held, &self.slas, true, next,
        ))
    }
}

/// A decision's answer: the request and its execution as the batch now holds them, and
/// who holds the request and its service level, read with it.
fn answer(
    approval: &ApprovalRequest,
    execution: &Execution,
    held: &HashMap<Uuid, ApprovalAssignment>,
    slas: &HashMap<Uuid, ApprovalSla>,
    claimed: bool,
    continued: Option<crate::Starting>,
) -> Decided {
    Decided {
        approval: approval.clone(),
        execution: execution.clone(),
        claimed,
        continued,
        assignment: held.get(&approval.id).cloned(),
        sla: slas.get(&approval.id).cloned(),
    }
}

#[cfg(all(test, feature = "testkit"))]
#[allow(clippy::unwrap_used)]
mod tests {
    use tollgate_model::records::DecisionKind;

    use super::*;
    use crate::testkit::{approval_for, decision, definition, lease, manager, new_execution, t0};

    /// An execution paused at the gate of `approval`'s request (made here).
    fn gated(required: u32) -> (Execution, ApprovalRequest) {
        let mut execution = paused();
        let approval = approval_for(&execution, required, None);
        let mut gate = crate::testkit::gate(tollgate_model::PauseReason::Approval, None);
        gate.approval_id = Some(approval.id);
        execution.gate = Some(gate);
        (execution, approval)
    }

    fn paused() -> Execution {
        let definition = definition("orders", "1", "order.created");
        let w = tollgate_model::records::Workflow {
            id: Uuid::now_v7(),
            snapshot_id: tollgate_model::records::snapshot_id(&definition),
            enabled: true,
            definition,
            created_at: t0(),
            updated_at: t0(),
        };
        let mut execution = new_execution(&w, "w1");
        execution.status = ExecutionStatus::Paused;
        execution
    }

    /// A decision retried after a batch whose outcome was unknown finds itself stored:
    /// answered as done, writing nothing. The same decision sent anew (not a retry) is
    /// refused as a second approval by the same decider.
    #[test]
    fn a_retried_decision_recognises_itself() {
        let execution = paused();
        let mut approval = approval_for(&execution, 2, None);
        let mine = decision("ann", DecisionKind::Approve);
        approval.decisions.push(mine.clone());
        let request = DecideRequest::new(
            approval.id,
            mine,
            &manager("ann"),
            &lease("api", t0()),
            t0(),
            None,
        );
        let mut batch = DecisionBatch::new([approval.clone()], [execution]);
        let fresh = batch.apply(&request, false);
        assert!(fresh.unwrap_err().is_conflict(), "a new request is refused");
        let retried = batch.apply(&request, true).unwrap();
        assert!(!retried.claimed);
        assert_eq!(retried.approval, approval);
        assert!(batch.into_writes().is_empty(), "nothing written again");
    }

    /// A decision refused after its request's quorum rules passed (the execution is not
    /// at that request's gate) leaves the batch's rows exactly as read and writes
    /// nothing: the batch decides its rows in place, so the next decision must find
    /// them untouched.
    #[test]
    fn a_refused_decision_leaves_the_rows_as_read() {
        let execution = paused();
        let approval = approval_for(&execution, 1, None);
        let request = DecideRequest::new(
            approval.id,
            decision("ann", DecisionKind::Approve),
            &manager("ann"),
            &lease("api", t0()),
            t0(),
            None,
        );
        let mut batch = DecisionBatch::new([approval.clone()], [execution.clone()]);
        let refused = batch.apply(&request, false);
        assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
        assert_eq!(batch.approvals[&approval.id], approval);
        assert_eq!(batch.executions[&execution.id], execution);
        assert!(batch.into_writes().is_empty());
    }

    /// Two approvals of one two-approver request in one batch: the first counts, the
    /// second reaches the quorum and claims the execution; the request is written once,
    /// in its final state, and one audit row names the second approver.
    #[test]
    fn decisions_on_one_request_see_each_other() {
        let (execution, approval) = gated(2);
        let ask = |who: &str| {
            DecideRequest::new(
                approval.id,
                decision(who, DecisionKind::Approve),
                &manager(who),
                &lease("api", t0()),
                t0(),
                None,
            )
        };
        let mut batch = DecisionBatch::new([approval.clone()], [execution.clone()]);
        let first = batch.apply(&ask("ann"), false).unwrap();
        assert!(!first.claimed);
        let again = batch.apply(&ask("ann"), false);
        assert!(again.unwrap_err().is_conflict(), "the same approver twice");
        let second = batch.apply(&ask("bob"), false).unwrap();
        assert!(second.claimed);
        let written = batch.into_writes();
        assert_eq!(written.approvals.len(), 1);
        assert_eq!(written.approvals[&approval.id].decisions.len(), 2);
        assert_eq!(written.executions.len(), 1);
        assert_eq!(written.audits.len(), 1);
        assert_eq!(written.audits[0].actor, "bob");
        assert_eq!(written.audits[0].execution_id, execution.id);
    }
}
