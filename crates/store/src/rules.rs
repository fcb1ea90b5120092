//! The execution state rules every backend applies: lease and version checks, claims,
//! resumes, endings, and what a step commit does. Pure functions on an [`Execution`]
//! loaded inside the caller's transaction, so SQL backends and the in-memory store
//! cannot disagree about a transition.

use serde_json::Value;
use tollgate_model::definition::Trigger;
use tollgate_model::records::{
    ApprovalAssignment, ApprovalRequest, ApprovalRung, ApprovalStatus, Decision, DecisionKind,
    DecisionRefusal, Event, Execution, ExecutionError, Gate, Lease, Migration, Notification,
    Principal, Retry, StepRecord, Timestamp, Wake, Workflow,
};
use tollgate_model::schedule::{CatchUp, CronSchedule, Schedule, Tick, TickStatus};
use tollgate_model::undo::ContextUndo;
use tollgate_model::{ErrorKind, ExecutionStatus, PauseReason};
use uuid::Uuid;

use crate::types::{Committed, Effect, LeaseClaim, StepCommit, Transition};
use crate::{Error, Result};

/// `Conflict` unless the execution is `running`, leased by `owner`, and (when given) at
/// `expected_version`.
pub fn check_lease(
    execution: &Execution,
    owner: &str,
    expected_version: Option<i64>,
) -> Result<()> {
    if execution.status != ExecutionStatus::Running {
        return Err(Error::Conflict(format!(
            "execution {} is {}, not running",
            execution.id, execution.status
        )));
    }
    if execution.lease.as_ref().and_then(|l| l.owner.as_deref()) != Some(owner) {
        return Err(Error::Conflict(format!(
            "execution {} is not leased by {owner}",
            execution.id
        )));
    }
    if let Some(expected) = expected_version {
        if execution.version != expected {
            return Err(Error::Conflict(format!(
                "execution {} is at version {}, not {expected}",
                execution.id, execution.version
            )));
        }
    }
    Ok(())
}

/// Why a compare-and-set on `execution` (as re-read after the write matched nothing) was
/// refused: the lease/version check's own error, or — when the execution changed between
/// the write and the re-read — a plain `Conflict`. Always an error.
pub fn refusal(execution: &Execution, owner: &str, expected_version: Option<i64>) -> Error {
    match check_lease(execution, owner, expected_version) {
        Err(err) => err,
        Ok(()) => Error::Conflict(format!(
            "execution {} changed during the write",
            execution.id
        )),
    }
}

/// Why a step commit's compare-and-set on `execution` (as re-read after it matched
/// nothing) was refused: [`refusal`]'s reasons, or the pause request a commit flagged
/// [`StepCommit::refuse_if_pause_requested`] stops at.
pub fn commit_refusal(
    execution: &Execution,
    owner: &str,
    expected_version: i64,
    refuse_if_pause_requested: bool,
) -> Error {
    match check_lease(execution, owner, Some(expected_version)) {
        Ok(()) if refuse_if_pause_requested && execution.pause_requested => {
            pause_refusal(execution)
        }
        _ => refusal(execution, owner, Some(expected_version)),
    }
}

fn pause_refusal(execution: &Execution) -> Error {
    Error::Conflict(format!(
        "execution {} has a pause request: the commit runs past the step boundary it stops at",
        execution.id
    ))
}

/// The workflows of `rows` that could be read; each that could not is logged and counted
/// (`tollgate_unreadable_workflows_total`) and left out, so that one unreadable workflow
/// (written by a newer release, or damaged) never stops the events of the others.
pub fn readable_workflows<R>(
    rows: &[R],
    read: impl Fn(&R) -> crate::Result<Workflow>,
) -> Vec<Workflow> {
    rows.iter()
        .filter_map(|row| match read(row) {
            Ok(workflow) => Some(workflow),
            Err(err) => {
                metrics::counter!("tollgate_unreadable_workflows_total").increment(1);
                tracing::error!("a stored workflow cannot be read and is skipped: {err}");
                None
            }
        })
        .collect()
}

/// The workflows an event of `event_type` starts, from a backend's candidates: enabled,
/// trigger matching, and for each `workflow_id` only its highest version.
pub fn triggered_workflows(
    candidates: impl IntoIterator<Item = Workflow>,
    event_type: &str,
) -> Vec<Workflow> {
    let mut best: std::collections::BTreeMap<String, Workflow> = std::collections::BTreeMap::new();
    for w in candidates {
        if !w.enabled || !w.definition.trigger.matches_event(event_type) {
            continue;
        }
        match best.get(w.workflow_id()) {
            Some(current)
                if !tollgate_model::definition::compare_versions(
                    w.version(),
                    current.version(),
                )
                .is_gt() => {}
            _ => {
                best.insert(w.workflow_id().to_owned(), w);
            }
        }
    }
    best.into_values().collect()
}

/// Makes the execution `running` under `claim` (new version).
pub fn claim(execution: &mut Execution, claim: &LeaseClaim, now: Timestamp) {
    execution.status = ExecutionStatus::Running;
    execution.lease = Some(Lease {
        owner: Some(claim.owner.clone()),
        expires_at: claim.expires_at,
    });
    execution.version += 1;
    execution.updated_at = now;
}

/// Claims a gated execution with the signal that woke it.
pub fn resume(execution: &mut Execution, wake: Wake, lease: &LeaseClaim, now: Timestamp) {
    claim(execution, lease, now);
    execution.wake = Some(wake);
    execution.resume_count += 1;
    execution.last_resumed_at = Some(now);
}

/// Applies `decision`, made by `decider`, to a request and the execution it gates, both
/// read inside the caller's transaction (docs/execution-semantics.md): authorises the decider,
/// applies the quorum rules, and — when the decision settles the request — resumes the
/// execution under `claim` with an approval wake signal. `Ok(true)` when the execution
/// was claimed. Every refusal is [`Error::Refused`] and leaves both arguments unchanged,
/// so a batch can go on with the next decision.
pub fn decide(
    approval: &mut ApprovalRequest,
    execution: &mut Execution,
    decision: Decision,
    decider: &Principal,
    claim: &LeaseClaim,
    now: Timestamp,
) -> Result<bool> {
    let refused = |refusal: DecisionRefusal| Error::Refused {
        execution_id: approval.execution_id,
        refusal,
    };
    if decision.decided_by != decider.subject {
        return Err(Error::Invalid(format!(
            "the decision is signed by {} but made by {}",
            decision.decided_by, decider.subject
        )));
    }

    let authorized = if decision.decision == DecisionKind::Approve {
        approval.authorize_approval(decider)
    } else {
        approval.authorize(decider)
    };
    authorized.map_err(refused)?;
    // A decision after the deadline is refused even before the worker has expired the
    // request: the deadline decides, and its route runs exactly once (when the worker
    // claims the due gate).
    if let Some(deadline) = approval
        .expires_at
        .filter(|d| *d <= now && approval.status == ApprovalStatus::Pending)
    {
        return Err(refused(DecisionRefusal::Expired {
            approval_id: approval.id,
            deadline,
        }));
    }
    let mut next = approval.clone();
    let (decided_by, reason, data) = (
        decision.decided_by.clone(),
        decision.reason.clone(),
        decision.data.clone(),
    );
    let status = next.apply(decision).map_err(refused)?;
    if status == ApprovalStatus::Pending {
        *approval = next;
        return Ok(false);
    }
    // A `first_of` step with event gates waits (`waiting`) while its approval is open.
    let at_gate = execution.status.is_gated()
        && execution.gate.as_ref().and_then(|g| g.approval_id) == Some(approval.id);
    if !at_gate {
        return Err(refused(DecisionRefusal::NotAtGate {
            execution_id: execution.id,
            status: execution.status,
            approval_id: approval.id,
        }));
    }
    let wake = Wake::Approval {
        approval_id: approval.id,
        outcome: status,
        decided_by: Some(decided_by),
        reason,
        data,
        decided_at: now,
        decisions: next.decisions.clone(),
    };
    resume(execution, wake, claim, now);
    *approval = next;
    Ok(true)
}

/// Who holds a request after `change`, given its status and who holds it now
/// (`None`: nobody). Every backend applies it inside the transaction that reads both.
/// `Conflict` when the request is no longer pending, when a claim meets someone else's
/// hold, and when someone lets go of a hold that is not theirs without `force`.
pub fn assign(
    approval_id: uuid::Uuid,
    status: ApprovalStatus,
    current: Option<&ApprovalAssignment>,
    change: &crate::AssignmentChange,
    now: Timestamp,
) -> Result<Option<ApprovalAssignment>> {
    if status != ApprovalStatus::Pending {
        return Err(Error::Conflict(format!(
            "approval {approval_id} is {} and can no longer be claimed or assigned",
            status.as_str()
        )));
    }
    let held = |who: &str, by: &str| ApprovalAssignment {
        approval_id,
        assignee: who.to_owned(),
        assigned_by: by.to_owned(),
        assigned_at: now,
    };
    match change {
        crate::AssignmentChange::Claim { by } => match current {
            Some(c) if c.assignee == *by => Ok(Some(c.clone())),
            Some(c) => Err(Error::Conflict(format!(
                "approval {approval_id} is already {} {}",
                if c.is_claim() { "claimed by" } else { "assigned to" },
                c.assignee
            ))),
            None => Ok(Some(held(by, by))),
        },
        crate::AssignmentChange::Release { by, force } => match current {
            Some(c) if c.assignee != *by && !force => Err(Error::Conflict(format!(
                "approval {approval_id} is held by {}, not {by}: only they or an operator can release it",
                c.assignee
            ))),
            _ => Ok(None),
        },
        crate::AssignmentChange::Assign { to, by } => match current {
            Some(c) if c.assignee == *to => Ok(Some(c.clone())),
            _ => Ok(Some(held(to, by))),
        },
    }
}

/// Revokes `delegation` at `now`: `Conflict` if it was revoked already or has ended
/// (there is nothing left to stop).
pub fn revoke_delegation(
    delegation: &mut tollgate_model::records::Delegation,
    now: Timestamp,
) -> Result<()> {
    if delegation.revoked_at.is_some() {
        return Err(Error::Conflict(format!(
            "delegation {} is already revoked",
            delegation.id
        )));
    }
    if delegation.ends_at <= now {
        return Err(Error::Conflict(format!(
            "delegation {} ended at {}",
            delegation.id,
            delegation.ends_at.to_rfc3339()
        )));
    }
    delegation.revoked_at = Some(now);
    Ok(())
}

/// The audit row's data for a decision that settled its request: what was decided, why,
/// with which data, and the channel it came through when it has one.
pub fn decision_audit(approval_id: uuid::Uuid, decision: &Decision) -> serde_json::Value {
    let mut audit = serde_json::json!({"approval_id": approval_id, "decision": decision.decision,
        "reason": decision.reason, "data": decision.data});
    if let (Some(channel), Some(map)) = (&decision.channel, audit.as_object_mut()) {
        map.insert("channel".into(), channel.clone().into());
    }
    if let (Some(delegate), Some(map)) = (&decision.delegate, audit.as_object_mut()) {
        map.insert("delegate".into(), delegate.clone().into());
    }
    audit
}

/// Runs the caller's [`crate::FormCheck`] on an approving `decision`'s data, against
/// the request and the snapshot its execution is pinned to, and puts the data to record
/// in its place. Rejections are not checked. [`Error::Form`] when the check refuses.
pub fn check_form(
    form: Option<&crate::FormCheck>,
    approval: &ApprovalRequest,
    execution: &Execution,
    decision: &mut Decision,
) -> Result<()> {
    if let (Some(form), DecisionKind::Approve) = (form, decision.decision) {
        let data = std::mem::take(&mut decision.data);
        decision.data = form(approval, &execution.snapshot_id, data).map_err(Error::Form)?;
    }
    Ok(())
}

/// Whether `decision` — this very one: decider, kind, reason, data and time — is already
/// on the request. A backend that retries a write whose outcome it could not know (the
/// connection died during COMMIT) uses it to answer that write as done instead of
/// telling the decider `409 already approved` about their own decision.
pub fn holds_decision(approval: &ApprovalRequest, decision: &Decision) -> bool {
    approval.decisions.iter().any(|d| d == decision)
}

/// What [`crate::ApprovalStore::decide`] with a continuation stores for an execution a decision has
/// just claimed: what `then` made of it when that is a continuation of this very claim
/// (same execution, later version, no longer holding the decided gate), else nothing
/// (the claimed row is stored).
pub fn continuation(claimed: &Execution, then: &crate::Continuation) -> Option<crate::Starting> {
    let next = then(claimed)?;
    let e = &next.execution;
    let follows = e.id == claimed.id
        && e.snapshot_id == claimed.snapshot_id
        && e.version > claimed.version
        && e.wake.is_none()
        && next.records.iter().all(|r| r.execution_id == claimed.id)
        && next
            .approval
            .as_ref()
            .is_none_or(|a| a.execution_id == claimed.id);
    follows.then_some(next)
}

/// Ends the execution with a terminal status.
pub fn end(
    execution: &mut Execution,
    status: ExecutionStatus,
    error: Option<ExecutionError>,
    now: Timestamp,
) {
    execution.status = status;
    execution.error = error;
    execution.completed_at = Some(now);
    execution.updated_at = now;
    execution.lease = None;
    execution.gate = None;
    execution.wake = None;
    execution.pause_requested = false;
    execution.version += 1;
}

/// Whether a live worker holds the execution at `now`.
pub fn is_held(execution: &Execution, now: Timestamp) -> bool {
    execution.status == ExecutionStatus::Running
        && execution
            .lease
            .as_ref()
            .is_some_and(|l| l.owner.is_some() && l.expires_at > now)
}

/// The writes a step commit makes besides the execution row.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitWrites {
    /// Step records to insert or replace.
    pub records: Vec<StepRecord>,
    /// Effects to apply.
    pub effects: Vec<Effect>,
    /// An approval request to insert (entering an approval gate).
    pub approval: Option<ApprovalRequest>,
    /// Pending approvals of the execution to close with this status (ending).
    pub close_approvals: Option<ApprovalStatus>,
    /// What to add to the execution's undo trail under `committed.version`.
    pub undo: Vec<ContextUndo>,
    /// The execution completed: its undo trail is deleted.
    pub drop_trail: bool,
    /// What to return to the worker.
    pub committed: Committed,
}

/// The status an execution has at `gate`: `waiting` for an event, else `paused`.
pub fn gated_status(gate: &Gate) -> ExecutionStatus {
    if gate.reason == PauseReason::Event {
        ExecutionStatus::Waiting
    } else {
        ExecutionStatus::Paused
    }
}

/// What an execution ending as `status` makes of its still-pending approval requests:
/// `expired` when it timed out, else `cancelled`.
pub fn closing_status(status: ExecutionStatus) -> ApprovalStatus {
    if status == ExecutionStatus::TimedOut {
        ApprovalStatus::Expired
    } else {
        ApprovalStatus::Cancelled
    }
}

/// Validates `commit` against the execution and applies it (see
/// [`crate::ExecutionStore::commit_step`]); on error nothing was changed.
pub fn apply_commit(execution: &mut Execution, commit: StepCommit) -> Result<CommitWrites> {
    check_lease(execution, &commit.owner, Some(commit.expected_version))?;
    if commit.refuse_if_pause_requested && execution.pause_requested {
        return Err(pause_refusal(execution));
    }
    let new_status = match &commit.transition {
        Transition::Continue | Transition::Release { .. } => ExecutionStatus::Running,
        Transition::Gate { gate, .. } => gated_status(gate),
        Transition::Finish { status, .. } => {
            if !status.is_terminal() {
                return Err(Error::Invalid(format!(
                    "a step commit cannot finish an execution as {status}"
                )));
            }
            *status
        }
    };
    if new_status != ExecutionStatus::Running {
        execution
            .status
            .transition_to(new_status)
            .map_err(|e| Error::Conflict(e.to_string()))?;
    }
    let StepCommit {
        records,
        context,
        cursor,
        visits,
        steps_run,
        result,
        consumed_events,
        effects,
        transition,
        lease_expires_at,
        now,
        undo,
        ..
    } = commit;
    execution.context = context;
    execution.cursor = cursor;
    execution.visits = visits;
    execution.steps_run = steps_run;
    execution.result = result;
    execution.consumed_events.extend(consumed_events);
    execution.wake = None;
    execution.updated_at = now;
    let mut approval = None;
    let mut close_approvals = None;
    match transition {
        Transition::Continue => {
            execution.gate = None;
            if let Some(lease) = execution.lease.as_mut() {
                lease.expires_at = lease_expires_at;
            }
            execution.version += 1;
        }
        Transition::Release { at } => {
            execution.gate = None;
            execution.lease = Some(Lease {
                owner: None,
                expires_at: at,
            });
            execution.version += 1;
        }
        Transition::Gate {
            gate,
            approval: request,
        } => {
            execution.status = new_status;
            execution.gate = Some(gate);
            execution.lease = None;
            execution.pause_requested = false;
            execution.version += 1;
            approval = request.map(|a| *a);
        }
        Transition::Finish { status, error } => {
            end(execution, status, error, now);
            close_approvals = Some(closing_status(status));
        }
    }
    let drop_trail = execution.status == ExecutionStatus::Completed;
    Ok(CommitWrites {
        records,
        effects,
        approval,
        close_approvals,
        undo: if drop_trail { Vec::new() } else { undo },
        drop_trail,
        committed: Committed {
            version: execution.version,
            pause_requested: execution.pause_requested,
        },
    })
}

/// A pause request (see [`crate::ExecutionStore::request_pause`]): sets the flag on a held
/// execution (version unchanged), or pauses one no live worker holds at its cursor.
pub fn request_pause(
    execution: &mut Execution,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    if execution.status != ExecutionStatus::Running {
        return Err(Error::Conflict(format!(
            "execution {} is {}, not running",
            execution.id, execution.status
        )));
    }
    execution.updated_at = now;
    // A held execution pauses at its next step boundary; so does one that holds a stored
    // signal no worker has acted on yet (a decision, event or deadline whose claimer died
    // or stalled): pausing it at once would put a manual gate over the signal and lose
    // it. The next worker to take it over acts on the signal, then pauses.
    if is_held(execution, now) || execution.wake.is_some() {
        execution.pause_requested = true;
        return Ok(());
    }
    let (step_id, visit) = execution
        .cursor
        .as_ref()
        .map(|c| (c.step_id.clone(), c.visit))
        .unwrap_or_default();
    execution.status = ExecutionStatus::Paused;
    execution.lease = None;
    execution.pause_requested = false;
    execution.gate = Some(Gate {
        reason: PauseReason::Manual,
        step_id,
        visit,
        paused_at: now,
        deadline: None,
        event: None,
        event_match: None,
        approval_id: None,
        note: reason.map(str::to_owned),
        correlation: None,
        branches: None,
    });
    execution.version += 1;
    Ok(())
}

/// `Conflict` unless the execution is paused for a manual reason.
pub fn check_manually_paused(execution: &Execution) -> Result<()> {
    let id = execution.id;
    match (execution.status, execution.gate.as_ref().map(|g| g.reason)) {
        (ExecutionStatus::Paused, Some(PauseReason::Manual)) => Ok(()),
        (ExecutionStatus::Paused, Some(PauseReason::Approval)) => Err(Error::Conflict(format!(
            "execution {id} is paused at an approval gate: decide the approval to resume it"
        ))),
        (status, _) => Err(Error::Conflict(format!(
            "execution {id} is {status}, not manually paused"
        ))),
    }
}

/// `Conflict` unless the execution waits for this event (type, version, addressee, not
/// yet consumed).
pub fn check_wait_claim(
    execution: &Execution,
    expected_version: Option<i64>,
    event: &Event,
) -> Result<()> {
    let id = execution.id;
    let waits = execution
        .gate
        .as_ref()
        .is_some_and(|g| g.reason == PauseReason::Event && g.awaits(&event.event_type));
    if execution.status != ExecutionStatus::Waiting || !waits {
        return Err(Error::Conflict(format!(
            "execution {id} is not waiting for `{}`",
            event.event_type
        )));
    }
    if expected_version.is_some_and(|v| v != execution.version) {
        return Err(Error::Conflict(format!(
            "execution {id} changed since it was read"
        )));
    }
    if event.correlation_id.is_some_and(|c| c != id) {
        return Err(Error::Conflict(format!(
            "event {} is addressed to another execution",
            event.id
        )));
    }
    if event.received_at < execution.started_at || event.started.contains(&id) {
        return Err(Error::Conflict(format!(
            "event {} came before execution {id} waited for it (it arrived before the execution started, or started it)",
            event.id
        )));
    }
    if execution.consumed_events.contains(&event.id) {
        return Err(Error::Conflict(format!(
            "event {} was already consumed by execution {id}",
            event.id
        )));
    }
    Ok(())
}

/// Whether `event` is one `execution` may take at a wait (its type aside): received at
/// or after the execution started, not the event that started it, addressed to nobody
/// or to it, and not consumed by it already. Every path that offers an event to a wait
/// — the sender's scan, the worker's redelivery, the claim itself — applies this.
pub fn may_take(execution: &Execution, event: &Event) -> bool {
    event.received_at >= execution.started_at
        && !event.started.contains(&execution.id)
        && event.correlation_id.is_none_or(|c| c == execution.id)
        && !execution.consumed_events.contains(&event.id)
}

/// The execution a direct delivery is addressed to (its `correlation_id`); `Invalid`
/// when it names none.
pub fn delivery_target(event: &Event) -> Result<Uuid> {
    event
        .correlation_id
        .ok_or_else(|| Error::Invalid("a direct delivery needs the event's correlation_id".into()))
}

/// Claims a waiting execution for an event.
pub fn claim_wait(execution: &mut Execution, event: &Event, lease: &LeaseClaim, now: Timestamp) {
    resume(
        execution,
        Wake::Event {
            event_id: event.id,
            event_type: event.event_type.clone(),
            payload: event.payload.clone(),
        },
        lease,
        now,
    );
    execution.consumed_events.push(event.id);
}

/// Cancels a non-terminal execution; `Conflict` if it already ended.
pub fn cancel(
    execution: &mut Execution,
    actor: Option<&str>,
    reason: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    if execution.status.is_terminal() {
        return Err(Error::Conflict(format!(
            "execution {} is already {}",
            execution.id, execution.status
        )));
    }
    let message = match (reason, actor) {
        (Some(reason), _) => reason.to_owned(),
        (None, Some(actor)) => format!("cancelled by {actor}"),
        (None, None) => "cancelled".to_owned(),
    };
    end(
        execution,
        ExecutionStatus::Cancelled,
        Some(ExecutionError {
            kind: ErrorKind::Cancelled,
            message,
        }),
        now,
    );
    Ok(())
}

/// Applies an operator's [`Retry`] to a `failed` or `timed_out` execution: `running`
/// under `claim` at the retry's cursor, with its context and deadline, the error and end
/// time cleared. `Conflict` (nothing changed) if it is in another status or has changed
/// since the retry was planned.
pub fn retry(
    execution: &mut Execution,
    retry: &Retry,
    claim_of: &LeaseClaim,
    now: Timestamp,
) -> Result<()> {
    let id = execution.id;
    if !matches!(
        execution.status,
        ExecutionStatus::Failed | ExecutionStatus::TimedOut
    ) {
        return Err(Error::Conflict(format!(
            "execution {id} is {}: only failed or timed_out executions can be retried",
            execution.status
        )));
    }
    if execution.version != retry.expected_version {
        return Err(Error::Conflict(format!(
            "execution {id} changed while its retry was prepared (version {} is now {}); \
             read it again",
            retry.expected_version, execution.version
        )));
    }
    claim(execution, claim_of, now);
    execution.cursor = Some(retry.cursor.clone());
    execution.context = retry.context.clone();
    execution.deadline = retry.deadline;
    execution.error = None;
    execution.completed_at = None;
    execution.gate = None;
    execution.wake = None;
    execution.pause_requested = false;
    Ok(())
}

/// Applies an operator's [`Migration`] to a paused or waiting execution: it runs the
/// target snapshot from now on, its gate (renamed when mapped) and everything else kept.
/// `Conflict` (nothing changed) if it is not at a gate or changed since the plan.
pub fn migrate(execution: &mut Execution, migration: &Migration, now: Timestamp) -> Result<()> {
    let id = execution.id;
    if !execution.status.is_gated() || execution.gate.is_none() {
        return Err(Error::Conflict(format!(
            "execution {id} is {}: only paused or waiting executions can be migrated",
            execution.status
        )));
    }
    if execution.version != migration.expected_version {
        return Err(Error::Conflict(format!(
            "execution {id} changed while its migration was prepared (version {} is now {}); \
             read it again",
            migration.expected_version, execution.version
        )));
    }
    if let Some(gate) = execution.gate.as_mut() {
        if gate.step_id != migration.gate_step {
            let old = std::mem::replace(&mut gate.step_id, migration.gate_step.clone());
            if let Some(visit) = execution.visits.remove(&old) {
                execution.visits.insert(migration.gate_step.clone(), visit);
            }
            if let Some(cursor) = execution.cursor.as_mut().filter(|c| c.step_id == old) {
                cursor.step_id.clone_from(&migration.gate_step);
            }
        }
    }
    execution.workflow_id = migration.workflow_id;
    execution
        .workflow_version
        .clone_from(&migration.workflow_version);
    execution.snapshot_id.clone_from(&migration.snapshot_id);
    execution.version += 1;
    execution.updated_at = now;
    Ok(())
}

/// Ends an execution whose workflow deadline passed.
pub fn time_out(execution: &mut Execution, deadline: Timestamp, now: Timestamp) {
    let error = ExecutionError {
        kind: ErrorKind::TimedOut,
        message: format!("the workflow deadline {} passed", deadline.to_rfc3339()),
    };
    end(execution, ExecutionStatus::TimedOut, Some(error), now);
}

/// The error a quarantined execution ends with
/// ([`crate::ExecutionStore::quarantine_execution`]).
pub fn quarantine_error(detail: &str) -> ExecutionError {
    ExecutionError {
        kind: ErrorKind::Interrupted,
        message: format!(
            "quarantined: what is stored for this execution cannot be read ({detail}); the stored row is kept in the quarantine list"
        ),
    }
}

/// Logs and counts (`tollgate_quarantined_executions_total`) an execution just
/// quarantined; every backend calls it once per quarantine it commits.
pub fn report_quarantine(id: uuid::Uuid, detail: &str) {
    metrics::counter!("tollgate_quarantined_executions_total").increment(1);
    tracing::error!(execution_id = %id, "execution quarantined, its stored row cannot be read: {detail}");
}

/// Quarantines each of `unreadable` (execution id, why) that a claim returned but could
/// not decode, so the claim hands out the others and the pass goes on. A quarantine
/// that fails is logged: the row stays leased by the claimer until its lease expires,
/// and the next claim of it tries again.
pub async fn quarantine_each<S: crate::ExecutionStore + ?Sized>(
    store: &S,
    unreadable: Vec<(uuid::Uuid, String)>,
    now: Timestamp,
) {
    for (id, detail) in unreadable {
        if let Err(err) = store.quarantine_execution(id, &detail, now).await {
            tracing::error!(execution_id = %id, "could not quarantine an unreadable execution: {err}");
        }
    }
}

/// Ends an execution as quarantined (`failed`, [`quarantine_error`]).
pub fn quarantine(execution: &mut Execution, detail: &str, now: Timestamp) {
    end(
        execution,
        ExecutionStatus::Failed,
        Some(quarantine_error(detail)),
        now,
    );
}

/// Whether a gated or unheld execution is overdue: its workflow deadline passed and no
/// live worker holds it.
pub fn is_overdue(execution: &Execution, now: Timestamp) -> bool {
    let unheld = match execution.status {
        ExecutionStatus::Paused | ExecutionStatus::Waiting => true,
        ExecutionStatus::Running => execution
            .lease
            .as_ref()
            .is_none_or(|l| l.owner.is_none() || l.expires_at <= now),
        _ => false,
    };
    unheld && execution.deadline.is_some_and(|d| d <= now)
}

/// The wake signal for a gate whose deadline passed (approvals become `expired`).
/// A `first_of` step's deadline is its `after` gate: a timeout, its approval superseded.
pub fn deadline_wake(gate: &Gate, now: Timestamp) -> Wake {
    match (gate.reason, gate.approval_id) {
        (PauseReason::Approval, Some(approval_id)) if !gate.is_first_of() => Wake::Approval {
            approval_id,
            outcome: ApprovalStatus::Expired,
            decided_by: None,
            reason: None,
            data: Value::Null,
            decided_at: now,
            decisions: Vec::new(),
        },
        _ => Wake::WaitTimeout { at: now },
    }
}

/// Merges (`merge`) or replaces record data.
pub fn merge_record_data(existing: &mut Value, data: Value, merge: bool) {
    match (merge, existing, data) {
        (true, Value::Object(existing), Value::Object(new)) => existing.extend(new),
        (_, slot, data) => *slot = data,
    }
}

/// The id of the schedule that mirrors a workflow's own `schedule` trigger: derived from
/// the workflow, so every backend and every process agrees on it.
pub fn trigger_schedule_id(workflow_id: Uuid) -> Uuid {
    Uuid::new_v5(&workflow_id, b"tollgate:schedule-trigger")
}

/// The schedule a workflow's trigger asks for, given the one it has: `None` when the
/// trigger is not a schedule. An unchanged expression keeps its next fire time and
/// history; a changed one starts counting from `now`. `enabled` and the catch-up policy
/// of an existing schedule are kept.
pub fn trigger_schedule(
    workflow: &Workflow,
    existing: Option<&Schedule>,
    now: Timestamp,
) -> Option<Schedule> {
    let Trigger::Schedule { cron, timezone } = &workflow.definition.trigger else {
        return None;
    };
    let timezone = timezone.clone().unwrap_or_else(|| "UTC".to_owned());
    if let Some(e) = existing {
        if &e.cron == cron && e.timezone == timezone {
            return Some(e.clone());
        }
    }
    let next_fire_at = CronSchedule::new(cron, Some(&timezone))
        .ok()
        .and_then(|c| c.next_after(now));
    Some(Schedule {
        id: trigger_schedule_id(workflow.id),
        workflow_id: workflow.id,
        cron: cron.clone(),
        timezone,
        enabled: existing.is_none_or(|e| e.enabled),
        catch_up: existing.map_or(CatchUp::Skip, |e| e.catch_up),
        from_trigger: true,
        next_fire_at,
        last_fired_at: existing.and_then(|e| e.last_fired_at),
        created_at: existing.map_or(now, |e| e.created_at),
        updated_at: now,
    })
}

/// Fires a due schedule at `now`: returns the tick times its catch-up policy fires and
/// advances `next_fire_at` past `now`. An expression that no longer parses stops the
/// schedule (`next_fire_at` = null) instead of failing every claim.
pub fn fire_schedule(schedule: &mut Schedule, now: Timestamp) -> Vec<Timestamp> {
    let Some(next) = schedule.next_fire_at else {
        return Vec::new();
    };
    let Ok(cron) = CronSchedule::new(&schedule.cron, Some(&schedule.timezone)) else {
        schedule.next_fire_at = None;
        schedule.updated_at = now;
        return Vec::new();
    };
    let (ticks, next) = cron.due(next, now, schedule.catch_up);
    schedule.next_fire_at = next;
    if let Some(last) = ticks.last() {
        schedule.last_fired_at = Some(*last);
    }
    schedule.updated_at = now;
    ticks
}

/// A new pending tick, leased to `claim.owner`. Its id is derived from (schedule, tick
/// time), so the same tick always has the same id.
pub fn new_tick(
    schedule_id: Uuid,
    tick_time: Timestamp,
    claim: &LeaseClaim,
    now: Timestamp,
) -> Tick {
    Tick {
        id: Uuid::new_v5(
            &schedule_id,
            tick_time
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .as_bytes(),
        ),
        schedule_id,
        tick_time,
        status: TickStatus::Pending,
        owner: Some(claim.owner.clone()),
        lease_expires_at: Some(claim.expires_at),
        claimed_at: now,
        started_at: None,
        execution_id: None,
        error: None,
    }
}

/// `Conflict` unless `owner` holds `tick` pending.
pub fn check_tick_owner(tick: &Tick, owner: &str) -> Result<()> {
    if tick.status == TickStatus::Pending && tick.owner.as_deref() == Some(owner) {
        Ok(())
    } else {
        Err(Error::Conflict(format!(
            "tick {} of schedule {} is {} and not held by {owner}",
            tick.tick_time,
            tick.schedule_id,
            tick.status.as_str()
        )))
    }
}

/// Parses `(status, count)` rows of a `GROUP BY status` query; an unknown status is a
/// backend error (the schema's CHECK makes it impossible).
pub fn status_counts(rows: Vec<(String, i64)>) -> Result<Vec<(ExecutionStatus, u64)>> {
    rows.into_iter()
        .map(|(status, n)| {
            let parsed = status.parse::<ExecutionStatus>().map_err(|_| {
                Error::Backend(format!("unknown status `{status}` in executions").into())
            })?;
            Ok((parsed, u64::try_from(n).unwrap_or(0)))
        })
        .collect()
}

/// Fires `rung` at `now` against its request (`ApprovalStore::fire_due_rungs`): for a
/// pending request, an escalation adds its approvers (those not there yet) and the
/// rung's notifications are returned to be queued, each with a fresh id, due now;
/// for any other request the rung is `skipped` and nothing is queued. Changes
/// `approval` and `rung` in place; the caller writes both and the notifications in one
/// transaction.
pub fn fire_rung(
    approval: &mut ApprovalRequest,
    rung: &mut ApprovalRung,
    now: Timestamp,
) -> Vec<Notification> {
    rung.fired_at = Some(now);
    if approval.status != ApprovalStatus::Pending {
        rung.outcome = Some("skipped".into());
        return Vec::new();
    }
    rung.outcome = Some("fired".into());
    for role in &rung.add_roles {
        if !approval.approver_roles.contains(role) {
            approval.approver_roles.push(role.clone());
        }
    }
    for user in &rung.add_users {
        if !approval.approver_users.contains(user) {
            approval.approver_users.push(user.clone());
        }
    }
    rung.notify
        .iter()
        .map(|n| Notification {
            id: Uuid::now_v7(),
            kind: rung.kind.clone(),
            approval_id: Some(approval.id),
            status: "queued".into(),
            created_at: now,
            next_attempt_at: Some(now),
            attempts: 0,
            last_error: None,
            sent_at: None,
            ..n.clone()
        })
        .collect()
}

/// The notification after `settle` at `now` (`NotificationStore::settle_notification`):
/// one more attempt, and the status, error and due time that follow. `Conflict` (and
/// nothing changed) unless it is still queued and `holder`, its claim's owner, is `owner`.
pub fn settle(
    notification: &mut Notification,
    holder: Option<&str>,
    owner: &str,
    now: Timestamp,
    settle: &crate::Settle,
) -> Result<()> {
    if holder != Some(owner) || notification.status != "queued" {
        return Err(Error::Conflict(format!(
            "notification {} is not claimed by {owner}",
            notification.id
        )));
    }
    notification.attempts = notification.attempts.saturating_add(1);
    match settle {
        crate::Settle::Sent => {
            notification.status = "sent".into();
            notification.sent_at = Some(now);
            notification.next_attempt_at = None;
        }
        crate::Settle::Retry { at, error } => {
            notification.last_error = Some(error.clone());
            notification.next_attempt_at = Some(*at);
        }
        crate::Settle::Failed { error } => {
            notification.status = "failed".into();
            notification.last_error = Some(error.clone());
            notification.next_attempt_at = None;
        }
        crate::Settle::Dropped { why } => {
            notification.status = "dropped".into();
            notification.last_error = Some(why.clone());
            notification.next_attempt_at = None;
        }
    }
    Ok(())
}
