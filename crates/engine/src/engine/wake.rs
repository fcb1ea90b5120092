//! What a woken execution does with the signal that woke it (docs/execution-semantics.md,
//! "Gates"): one method per kind of wake — a manual resume, an approval's decision, an
//! awaited event, a wait's deadline.

use serde_json::{json, Value};
use tollgate_model::definition::{Branch, ErrorClass, OnTimeout, Step, StepKind};
use tollgate_model::records::{ApprovalStatus, Gate, StepError, StepRecord, StepStatus, Wake};
use tollgate_model::{ErrorKind, ExecutionResult, ExecutionStatus};
use uuid::Uuid;

use super::gates::apply_event;
use super::run::{merge_into, set_step_output, Run};
use crate::error::Result;
use crate::steps::record_id;

/// Where an approval's outcome sends the execution.
enum Verdict {
    Approve,
    Reject,
    Fail,
    Goto(String),
}

impl Run<'_> {
    /// Acts on the signal that woke the execution, if any, and clears it.
    pub(super) async fn resolve_wake(&mut self) -> Result<()> {
        let Some(wake) = self.exec.wake.clone() else {
            return Ok(());
        };
        let Some(gate) = self.exec.gate.clone() else {
            // A manual resume of an execution paused at a step boundary.
            if let Wake::Manual { data, .. } = &wake {
                self.change_context(|context| merge_into(context, data));
            }
            self.exec.wake = None;
            return Ok(());
        };
        match wake {
            Wake::Manual { data, .. } => {
                self.change_context(|context| merge_into(context, &data));
                self.exec.wake = None;
                self.exec.gate = None;
                Ok(())
            }
            Wake::Approval {
                approval_id,
                outcome,
                decided_by,
                reason,
                data,
                decided_at,
                decisions,
            } => {
                // `decided_by` is the decision that settled it; `decisions` every vote.
                let decision = json!({
                    "approval_id": approval_id, "status": outcome, "decided_by": decided_by,
                    "reason": reason, "data": data, "decided_at": decided_at,
                    "decisions": decisions,
                });
                self.approval_decided(&gate, outcome, decision).await
            }
            Wake::Event {
                event_id,
                event_type,
                payload,
            } => {
                self.event_arrived(&gate, event_id, &event_type, &payload)
                    .await
            }
            Wake::WaitTimeout { at } => self.wait_timed_out(&gate, at).await,
        }
    }

    /// The gate's step in the pinned definition, and the record that completes it.
    fn gate_step(&self, gate: &Gate) -> Option<(Step, StepRecord)> {
        let step = self.definition().step(&gate.step_id).cloned()?;
        let attempt = self.exec.cursor.as_ref().map_or(1, |c| c.attempt);
        let record = StepRecord {
            id: record_id(self.exec.id, &step.id, gate.visit, None, attempt),
            execution_id: self.exec.id,
            step_id: step.id.clone(),
            step_type: step.kind.type_name().into(),
            parent_step_id: None,
            iteration: None,
            visit: gate.visit,
            attempt,
            status: StepStatus::Completed,
            input: Value::Null,
            output: Value::Null,
            warnings: Vec::new(),
            started_at: gate.paused_at,
            completed_at: Some(self.now()),
            error: None,
        };
        Some((step, record))
    }

    /// An approval was decided (or expired): the decision lands in the context, and the
    /// step's branches or its `on_timeout` say where to go.
    async fn approval_decided(
        &mut self,
        gate: &Gate,
        outcome: ApprovalStatus,
        decision: Value,
    ) -> Result<()> {
        let Some((step, mut record)) = self.gate_step(gate) else {
            return self.lost_step(&gate.step_id).await;
        };
        // An approved request's form data also lands where the step says.
        let merge_at = (outcome == ApprovalStatus::Approved)
            .then(|| step.approval_spec())
            .flatten()
            .and_then(|a| a.decision_form.as_ref())
            .and_then(|f| f.merge_into.clone());
        self.change_context(|context| {
            set_step_output(context, &step.id, decision.clone());
            if let (Some(path), Some(data)) = (&merge_at, decision.get("data")) {
                merge_at_path(context, path, data);
            }
            if let Value::Object(map) = context {
                let approvals = map.entry("approvals").or_insert_with(|| json!({}));
                if !approvals.is_object() {
                    *approvals = json!({});
                }
                if let Value::Object(a) = approvals {
                    a.insert(step.id.clone(), decision.clone());
                }
                map.insert("approval".into(), decision.clone());
            }
        });
        if let StepKind::FirstOf { first_of } = &step.kind {
            // The approval gate of a `first_of` step won: its branches say where to go.
            let (index, on_approve, on_reject) = first_of
                .iter()
                .enumerate()
                .find_map(|(j, b)| match b {
                    Branch::Approval {
                        on_approve,
                        on_reject,
                        ..
                    } => Some((j, on_approve.clone(), on_reject.clone())),
                    _ => None,
                })
                .unwrap_or((0, None, None));
            let mut output = decision;
            if let Value::Object(map) = &mut output {
                map.insert("gate".into(), json!("approval"));
                map.insert("branch".into(), json!(index));
            }
            let prior = set_step_output(&mut self.exec.context, &step.id, output.clone());
            self.note(prior);
            record.output = output;
            let records = vec![record];
            if outcome == ApprovalStatus::Approved {
                self.exec.result = Some(ExecutionResult::Allowed);
                self.leave_gate(on_approve, records).await?;
            } else {
                self.exec.result = Some(ExecutionResult::Blocked);
                self.leave_gate(on_reject, records).await?;
            }
            return Ok(());
        }
        record.output = decision;
        let records = vec![record];
        let (on_approve, on_reject, next) = match &step.kind {
            StepKind::Approval {
                on_approve,
                on_reject,
                ..
            } => (on_approve.clone(), on_reject.clone(), None),
            StepKind::Action {
                on_approve,
                on_reject,
                next,
                ..
            } => (on_approve.clone(), on_reject.clone(), next.clone()),
            _ => (None, None, None),
        };
        match verdict(&step, outcome) {
            Verdict::Approve => {
                self.exec.result = Some(ExecutionResult::Allowed);
                self.leave_gate(on_approve.or(next), records).await?;
            }
            Verdict::Reject => {
                self.exec.result = Some(ExecutionResult::Blocked);
                self.leave_gate(on_reject, records).await?;
            }
            Verdict::Goto(target) => {
                self.leave_gate(Some(target), records).await?;
            }
            Verdict::Fail => {
                let message = format!(
                    "approval `{}` expired and its step says on_timeout: fail",
                    step.id
                );
                self.finish(
                    ExecutionStatus::TimedOut,
                    Some((ErrorKind::TimedOut, message)),
                    records,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The awaited event arrived: its payload lands in the context and the wait moves on.
    async fn event_arrived(
        &mut self,
        gate: &Gate,
        event_id: Uuid,
        event_type: &str,
        payload: &Value,
    ) -> Result<()> {
        let Some((step, mut record)) = self.gate_step(gate) else {
            return self.lost_step(&gate.step_id).await;
        };
        self.change_context(|context| apply_event(context, &step.id, payload));
        record.output = json!({"event_id": event_id, "event_type": event_type});
        let next = match &step.kind {
            StepKind::Wait { next, .. } => next.clone(),
            StepKind::FirstOf { first_of } => {
                // The first event gate of this type whose match the event satisfies (the
                // claim checked that one does); its position is recorded with the output.
                let now = self.now();
                let won = gate
                    .branches
                    .iter()
                    .flatten()
                    .filter(|b| b.event == event_type)
                    .find(|b| {
                        super::gates::wait_matches(
                            b.event_match.as_ref(),
                            &self.exec.context,
                            payload,
                            now,
                        )
                    })
                    .or_else(|| {
                        gate.branches
                            .iter()
                            .flatten()
                            .find(|b| b.event == event_type)
                    })
                    .map(|b| b.index);
                let output = json!({"gate": "event", "branch": won, "event_id": event_id,
                    "event_type": event_type});
                let prior = set_step_output(&mut self.exec.context, &step.id, output.clone());
                self.note(prior);
                record.output = output;
                match won.and_then(|j| first_of.get(j as usize)) {
                    Some(Branch::Event { next, .. }) => next.clone(),
                    _ => None,
                }
            }
            _ => None,
        };
        self.goto(next, vec![record], Vec::new(), Vec::new())
            .await?;
        Ok(())
    }

    /// A wait reached its deadline without an event: its `on_timeout` step, or the
    /// execution times out.
    async fn wait_timed_out(
        &mut self,
        gate: &Gate,
        at: tollgate_model::records::Timestamp,
    ) -> Result<()> {
        let Some((step, mut record)) = self.gate_step(gate) else {
            return self.lost_step(&gate.step_id).await;
        };
        if let StepKind::FirstOf { first_of } = &step.kind {
            // The `after` gate won (any approval was closed `superseded` by the claim).
            if let Some((index, next)) = first_of.iter().enumerate().find_map(|(j, b)| match b {
                Branch::After { next, .. } => Some((j, next.clone())),
                _ => None,
            }) {
                let output = json!({"gate": "after", "branch": index, "timed_out": true, "at": at});
                let prior = set_step_output(&mut self.exec.context, &step.id, output.clone());
                self.note(prior);
                record.output = output;
                self.goto(next, vec![record], Vec::new(), Vec::new())
                    .await?;
                return Ok(());
            }
        }
        let on_timeout = match &step.kind {
            StepKind::Wait { wait, .. } => wait.on_timeout.clone(),
            _ => None,
        };
        let output = json!({"timed_out": true, "at": at});
        let prior = set_step_output(&mut self.exec.context, &step.id, output.clone());
        self.note(prior);
        record.output = output;
        match on_timeout {
            Some(target) => {
                self.goto(Some(target), vec![record], Vec::new(), Vec::new())
                    .await?;
            }
            None => {
                record.status = StepStatus::Failed;
                record.error = Some(StepError {
                    class: ErrorClass::Timeout,
                    message: "no event arrived before the deadline".into(),
                });
                let message = format!(
                    "wait `{}` reached its deadline without an event and has no on_timeout",
                    step.id
                );
                self.finish(
                    ExecutionStatus::TimedOut,
                    Some((ErrorKind::TimedOut, message)),
                    vec![record],
                )
                .await?;
            }
        }
        Ok(())
    }

    /// The gate's step is gone from the pinned definition: nothing can resume it.
    async fn lost_step(&mut self, step_id: &str) -> Result<()> {
        let message = format!("gate step `{step_id}` is not in the pinned definition");
        self.finish(
            ExecutionStatus::Failed,
            Some((ErrorKind::Interrupted, message)),
            Vec::new(),
        )
        .await
    }
}

/// Where an approval's outcome leads, by the step's `on_timeout` when it expired.
fn verdict(step: &Step, outcome: ApprovalStatus) -> Verdict {
    match outcome {
        ApprovalStatus::Approved => Verdict::Approve,
        ApprovalStatus::Expired => {
            let on_timeout = match &step.kind {
                StepKind::Approval { approval, .. } => approval.on_timeout.clone(),
                _ => step
                    .compat_approval()
                    .map_or(OnTimeout::Reject, |a| a.on_timeout.clone()),
            };
            match on_timeout {
                OnTimeout::Reject => Verdict::Reject,
                OnTimeout::Approve => Verdict::Approve,
                OnTimeout::Fail => Verdict::Fail,
                OnTimeout::Step(target) => Verdict::Goto(target),
            }
        }
        _ => Verdict::Reject,
    }
}

/// Merges the object `data` into the object at the dotted `path` of `context`,
/// creating the objects on the way (a value in the way is replaced by an object).
fn merge_at_path(context: &mut Value, path: &str, data: &Value) {
    let Value::Object(source) = data else {
        return;
    };
    let mut at = context;
    for segment in path.split('.') {
        if !at.is_object() {
            *at = json!({});
        }
        let Value::Object(map) = at else {
            return;
        };
        at = map.entry(segment.to_owned()).or_insert_with(|| json!({}));
    }
    if !at.is_object() {
        *at = json!({});
    }
    if let Value::Object(target) = at {
        for (k, v) in source {
            target.insert(k.clone(), v.clone());
        }
    }
}
