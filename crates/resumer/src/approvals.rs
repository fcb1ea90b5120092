//! Deciding approvals.

use serde_json::{json, Value};
use tollgate_engine::Engine;
use tollgate_model::records::{ApprovalRequest, Decision, DecisionKind, Principal, ResumeTrigger};
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
        };
        // The store authorises the decider against the request as it stands in the
        // decision's own transaction: no separate read, and no window between the check
        // and the decision.
        match store
            .decide(approval_id, decision, principal, &self.engine.claim(), now)
            .await
        {
            Ok(decided) => {
                tracing::info!(execution_id = %decided.execution.id, approval_id = %approval_id, decided_by = %principal.subject, status = ?decided.approval.status, "approval decision");
                let progress = if decided.claimed {
                    Progress::spawn(
                        &self.engine,
                        self.tasks.as_ref(),
                        decided.execution,
                        "approval",
                    )
                } else {
                    Progress::idle(decided.execution)
                };
                Ok(Decided {
                    approval: decided.approval,
                    progress,
                })
            }
            Err(tollgate_store::Error::Refused {
                execution_id,
                forbidden,
                message,
            }) => {
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
                Err(if forbidden {
                    Error::Forbidden(message)
                } else {
                    Error::Conflict(message)
                })
            }
            Err(err) => Err(err.into()),
        }
    }
}
