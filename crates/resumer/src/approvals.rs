//! Deciding approvals.

use std::sync::Arc;

use serde_json::{json, Value};
use tollgate_engine::Engine;
use tollgate_model::definition::{FormSpec, Step};
use tollgate_model::records::{
    ApprovalAssignment, ApprovalRequest, ApprovalSla, ApprovalStatus, Decision, DecisionKind,
    Execution, Permission, Principal, ResumeTrigger,
};
use tollgate_store::decision_batch::DecideRequest;
use tollgate_store::{AssignmentChange, Continuation, FormCheck, FormRefusal};
use uuid::Uuid;

use crate::{audit_refusal, refused, Error, Progress, Result, Tasks};

/// Records approval decisions and resumes the gated execution when one settles it.
#[derive(Debug, Clone)]
pub struct ApprovalService {
    engine: Engine,
    tasks: Option<Tasks>,
}

/// The outcome of a decision.
#[derive(Debug)]
pub struct Decided {
    /// The request after the decision.
    pub approval: ApprovalRequest,
    /// The execution: being advanced when the decision settled the request.
    pub progress: Progress,
    /// Who holds the request, as the decision's transaction read it.
    pub assignment: Option<ApprovalAssignment>,
    /// The request's service level, as the decision's transaction read it.
    pub sla: Option<ApprovalSla>,
}

impl ApprovalService {
    /// A service deciding with `engine`'s worker id.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            tasks: None,
        }
    }

    /// Advances the executions it claims on `tasks` (see [`Tasks`]).
    pub fn with_tasks(mut self, tasks: Tasks) -> Self {
        self.tasks = Some(tasks);
        self
    }

    /// Decides `approval_id` as `principal`: authorises (role, listed user or admin; not
    /// the requester unless self-approval is allowed), records the decision and — when it
    /// reaches the quorum or rejects — claims and resumes the execution, atomically.
    /// `Forbidden` for a caller who may not decide, `Conflict` for a request that is no
    /// longer pending or that this caller already approved, `Invalid` for a rejection
    /// without a reason. Refusals are audited.
    pub async fn decide(
        &self,
        approval_id: Uuid,
        principal: &Principal,
        kind: DecisionKind,
        reason: Option<String>,
        data: Value,
    ) -> Result<Decided> {
        self.decide_through(approval_id, principal, None, kind, reason, data)
            .await
    }

    /// `principal` takes the pending request ("I'm on it"), so the other approvers see
    /// who is on it. Only someone the request addresses may claim it (the rules of
    /// [`ApprovalRequest::authorize`]). `Conflict` while someone else holds it.
    pub async fn claim(
        &self,
        approval_id: Uuid,
        principal: &Principal,
    ) -> Result<Option<ApprovalAssignment>> {
        let store = self.engine.store();
        let request = store.get_approval(approval_id).await?;
        request
            .authorize(principal)
            .map_err(|refusal| Error::Forbidden(format!("cannot claim: {refusal}")))?;
        let change = AssignmentChange::Claim {
            by: principal.subject.clone(),
        };
        self.change_assignment(approval_id, &change).await
    }

    /// `principal` lets go of the request: their own claim or assignment, or anyone's
    /// for an operator ([`Permission::AssignApprovals`]). `Conflict` for someone else's
    /// without that permission.
    pub async fn unclaim(
        &self,
        approval_id: Uuid,
        principal: &Principal,
    ) -> Result<Option<ApprovalAssignment>> {
        let change = AssignmentChange::Release {
            by: principal.subject.clone(),
            force: principal.may(Permission::AssignApprovals),
        };
        self.change_assignment(approval_id, &change).await
    }

    /// An operator (`principal`, [`Permission::AssignApprovals`]) gives the request to
    /// `to`, replacing whoever held it. `to` must be someone the request addresses (a
    /// listed user or a holder of an approver role), or the assignment would hand work
    /// to someone who cannot do it: `Invalid` with the reason.
    pub async fn assign(
        &self,
        approval_id: Uuid,
        principal: &Principal,
        to: &Principal,
    ) -> Result<Option<ApprovalAssignment>> {
        if !principal.may(Permission::AssignApprovals) {
            return Err(Error::Forbidden(format!(
                "{} may not {}",
                principal.subject,
                Permission::AssignApprovals.describe()
            )));
        }
        let request = self.engine.store().get_approval(approval_id).await?;
        request.authorize(to).map_err(|refusal| {
            Error::Invalid(format!("cannot assign to {}: {refusal}", to.subject))
        })?;
        let change = AssignmentChange::Assign {
            to: to.subject.clone(),
            by: principal.subject.clone(),
        };
        self.change_assignment(approval_id, &change).await
    }

    async fn change_assignment(
        &self,
        approval_id: Uuid,
        change: &AssignmentChange,
    ) -> Result<Option<ApprovalAssignment>> {
        let now = self.engine.clock().now();
        let held = self
            .engine
            .store()
            .assign_approval(approval_id, change, now)
            .await?;
        tracing::info!(approval_id = %approval_id, ?change, holder = held.as_ref().map(|h| h.assignee.as_str()), "approval assignment changed");
        Ok(held)
    }

    /// [`Self::decide`] for a decision that reached Tollgate through `channel` (`link`:
    /// a signed decision link), recorded with the decision. The same rules apply.
    pub async fn decide_through(
        &self,
        approval_id: Uuid,
        principal: &Principal,
        channel: Option<&str>,
        kind: DecisionKind,
        reason: Option<String>,
        data: Value,
    ) -> Result<Decided> {
        self.record(approval_id, principal, None, channel, kind, reason, data)
            .await
    }

    /// [`Self::decide`] by `delegate` in `delegator`'s place, under a delegation from
    /// `delegator` to `delegate` that covers the request now (its workflow, role and
    /// period). The decision is `delegator`'s, made with the roles the delegation
    /// recorded, and says who made it. Neither may be the requester unless the step
    /// allows self-approval. `Forbidden` without such a delegation; delegations do not
    /// pass on, so only one made by `delegator` to `delegate` counts.
    #[allow(clippy::too_many_arguments)]
    pub async fn decide_on_behalf(
        &self,
        approval_id: Uuid,
        delegate: &Principal,
        delegator: &str,
        channel: Option<&str>,
        kind: DecisionKind,
        reason: Option<String>,
        data: Value,
    ) -> Result<Decided> {
        let store = self.engine.store();
        let request = store.get_approval(approval_id).await?;
        let execution = store.get_execution(request.execution_id).await?;
        let now = self.engine.clock().now();
        let delegation = store
            .delegations_to(&delegate.subject, now)
            .await?
            .into_iter()
            .find(|d| d.delegator == delegator && d.covers(&execution.workflow_key, &request, now))
            .ok_or_else(|| {
                Error::Forbidden(format!(
                    "{} holds no delegation from {delegator} that covers this request now (workflow {}, step {})",
                    delegate.subject, execution.workflow_key, request.step_id
                ))
            })?;
        // The requester may not approve through someone else, nor for someone else.
        if !request.allow_self_approval
            && request.requested_by.as_deref() == Some(delegate.subject.as_str())
        {
            return Err(Error::Forbidden(
                tollgate_model::records::DecisionRefusal::SelfApproval(delegate.subject.clone())
                    .to_string(),
            ));
        }
        self.record(
            approval_id,
            &delegation.delegator_principal(),
            Some(&delegate.subject),
            channel,
            kind,
            reason,
            data,
        )
        .await
    }

    /// The decision form of step `step_id` in the definition `snapshot_id` (an
    /// execution's pinned one), if the step has one: what an approver of its requests
    /// fills in to approve. Consoles render it; approvals are checked against it.
    pub async fn decision_form(
        &self,
        snapshot_id: &str,
        step_id: &str,
    ) -> Result<Option<FormSpec>> {
        let definition = self
            .engine
            .definition(snapshot_id)
            .await
            .map_err(Error::Engine)?;
        Ok(definition
            .step(step_id)
            .and_then(Step::approval_spec)
            .and_then(|a| a.decision_form.as_deref())
            .cloned())
    }

    /// The check of an approving decision's `data` against the step's decision form, if
    /// it has one, run inside the decision's transaction on this engine's cached
    /// definitions (no read of the request or its pin of its own): the editable fields
    /// the approver left out keep the request's values, and the whole must satisfy the
    /// form ([`FormRefusal::Invalid`], field by field, otherwise). The definition is the
    /// snapshot the execution is pinned to then, so a form added by a later version does
    /// not apply. One not compiled here yet is [`FormRefusal::Unloaded`]: [`Self::record`]
    /// loads it and decides again.
    fn form_check(&self) -> FormCheck {
        let engine = self.engine.clone();
        Arc::new(
            move |request: &ApprovalRequest, snapshot_id: &str, data: Value| {
                let Some(definition) = engine.cached_definition(snapshot_id) else {
                    return Err(FormRefusal::Unloaded(snapshot_id.to_owned()));
                };
                let Some(spec) = definition
                    .step(&request.step_id)
                    .and_then(Step::approval_spec)
                    .and_then(|a| a.decision_form.as_deref())
                else {
                    return Ok(data);
                };
                fill_form(spec, request, data).map_err(FormRefusal::Invalid)
            },
        )
    }

    /// Records a decision by `principal` (made by `delegate` in their place, if given).
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        approval_id: Uuid,
        principal: &Principal,
        delegate: Option<&str>,
        channel: Option<&str>,
        kind: DecisionKind,
        reason: Option<String>,
        data: Value,
    ) -> Result<Decided> {
        let store = self.engine.store();
        let audit_data =
            json!({"approval_id": approval_id, "decision": kind, "reason": reason, "data": data});
        if kind == DecisionKind::Reject && reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
            return Err(Error::Invalid(
                "a rejection needs a non-empty `reason`".into(),
            ));
        }
        let now = self.engine.clock().now();
        let decision = Decision {
            decided_by: principal.subject.clone(),
            decision: kind,
            reason,
            data,
            decided_at: now,
            channel: channel.map(str::to_owned),
            delegate: delegate.map(str::to_owned),
        };
        // The store authorises the decider against the request as it stands in the
        // decision's own transaction: no separate read, and no window between the check
        // and the decision. When the decision claims the execution, the engine continues
        // it in memory inside that transaction, so the decision is stored together with
        // the side-effect-free steps after it (up to the next gate or the end).
        let then: Continuation = {
            let engine = self.engine.clone();
            Arc::new(move |claimed: &Execution| engine.continue_ahead(claimed))
        };
        let form = (kind == DecisionKind::Approve).then(|| self.form_check());
        let request = || {
            DecideRequest::new(
                approval_id,
                decision.clone(),
                principal,
                &self.engine.claim(),
                now,
                Some(then.clone()),
            )
            .with_form(form.clone())
        };
        let began = std::time::Instant::now();
        let mut outcome = store.decide_request(request()).await;
        if let Err(tollgate_store::Error::Form(FormRefusal::Unloaded(snapshot))) = &outcome {
            // The step's definition is not compiled in this process yet: load it (a read
            // outside the decision's transaction) and decide again.
            self.engine
                .definition(snapshot)
                .await
                .map_err(Error::from)?;
            outcome = store.decide_request(request()).await;
        }
        match outcome {
            Ok(decided) => {
                metrics::counter!("tollgate_decisions_total",
                    "channel" => channel.unwrap_or("direct").to_owned(),
                    "decision" => if kind == DecisionKind::Approve { "approve" } else { "reject" })
                .increment(1);
                tracing::info!(execution_id = %decided.execution.id, approval_id = %approval_id, decided_by = %principal.subject, status = ?decided.approval.status, continued = decided.continued.is_some(), "approval decision");
                if decided.approval.status != ApprovalStatus::Pending {
                    let waited = (now - decided.approval.requested_at).num_milliseconds();
                    metrics::histogram!("tollgate_approval_decision_seconds",
                        "workflow" => decided.execution.workflow_key.clone(),
                        "step" => decided.approval.step_id.clone())
                    .record(waited.max(0) as f64 / 1000.0);
                }
                if let Some(stored) = &decided.continued {
                    self.engine.record_continued(stored);
                }
                // Claimed for this worker and still running (a continuation that
                // stopped before a step needing the stored row, or none at all): advance
                // it here. A continuation that reached a gate or the end is done.
                let needs_advancing = decided.claimed && decided.execution.is_held();
                let progress = if needs_advancing {
                    let begun = decided.continued.as_ref().and_then(|s| s.begun().cloned());
                    Progress::spawn_begun(
                        &self.engine,
                        self.tasks.as_ref(),
                        decided.execution,
                        begun,
                        "approval",
                    )
                } else if decided.continued.is_some() {
                    metrics::histogram!("tollgate_resume_latency_seconds", "trigger" => "approval")
                        .record(began.elapsed().as_secs_f64());
                    Progress::stopped(decided.execution)
                } else {
                    Progress::idle(decided.execution)
                };
                Ok(Decided {
                    approval: decided.approval,
                    progress,
                    assignment: decided.assignment,
                    sla: decided.sla,
                })
            }
            Err(tollgate_store::Error::Refused {
                execution_id,
                refusal,
            }) => {
                let message = refusal.to_string();
                audit_refusal(
                    &self.engine,
                    refused(
                        &self.engine,
                        execution_id,
                        ResumeTrigger::Approval,
                        Some(&principal.subject),
                        audit_data,
                        &message,
                    ),
                )
                .await;
                Err(if refusal.is_forbidden() {
                    Error::Forbidden(message)
                } else {
                    Error::Conflict(message)
                })
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// `data` under the decision form `spec` of `request`'s step: the editable fields left
/// out keep the request's values; the problems, field by field, when the whole does not
/// satisfy the form.
fn fill_form(
    spec: &FormSpec,
    request: &ApprovalRequest,
    data: Value,
) -> std::result::Result<Value, Vec<tollgate_model::form::FormProblem>> {
    let mut data = match data {
        Value::Null => Value::Object(serde_json::Map::new()),
        other => other,
    };
    if let Value::Object(map) = &mut data {
        for field in &spec.editable {
            if let (false, Some(value)) = (map.contains_key(field), request.data.get(field)) {
                map.insert(field.clone(), value.clone());
            }
        }
    }
    let problems = tollgate_model::form::check_data(spec, &data);
    if problems.is_empty() {
        Ok(data)
    } else {
        Err(problems)
    }
}
