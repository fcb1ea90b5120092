//! An operator's retry of failed and timed-out executions (docs/operations.md,
//! "Retrying a failed execution"): one by id, or those a filter selects, with a dry run.

use serde_json::{json, Map, Value};
use tollgate_engine::RETRY_ROOT;
use tollgate_model::records::{Cursor, Execution, ResumeTrigger, Retry, StepStatus};
use tollgate_model::undo::{diff, rewind, ContextUndo};
use tollgate_model::{ErrorKind, ExecutionStatus};
use tollgate_store::{ExecutionFilter, PageRequest};
use uuid::Uuid;

use crate::{audit_refusal, refused, Error, ExecutionControl, Progress, Result};

/// Most executions one bulk retry or migration looks at.
pub const MAX_BULK: u32 = 100;

/// Who retries, why, and from where.
#[derive(Debug, Clone, Copy)]
pub struct RetryCommand<'a> {
    /// The top-level step to continue from; `None`: the step that stopped it.
    pub from_step: Option<&'a str>,
    /// Why (required).
    pub reason: &'a str,
    /// Who (the caller's subject).
    pub actor: Option<&'a str>,
    /// Where the command came from (the caller's address, or a channel), for the audit.
    pub origin: Option<&'a str>,
}

/// Which executions a bulk retry looks at.
#[derive(Debug, Clone)]
pub struct RetrySelection {
    /// `Failed` or `TimedOut`.
    pub status: ExecutionStatus,
    /// Only executions of this workflow (its string id).
    pub workflow_key: Option<String>,
    /// Only executions that stopped at this step.
    pub failed_step: Option<String>,
    /// How many executions to look at (at most [`MAX_BULK`]).
    pub limit: u32,
    /// Where a previous dry run stopped.
    pub cursor: Option<String>,
}

/// What a bulk retry did, or would do, to one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Retried: it is running again.
    Retried,
    /// A dry run: a retry would be accepted.
    WouldRetry,
    /// Refused, with the reason; nothing changed.
    Refused(String),
}

/// One execution of a bulk retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryItem {
    /// The execution.
    pub execution_id: Uuid,
    /// The step it continues (or would continue) from, when known.
    pub from_step: Option<String>,
    /// What happened.
    pub outcome: RetryOutcome,
}

/// The answer of a bulk retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryReport {
    /// One entry per selected execution, newest first.
    pub items: Vec<RetryItem>,
    /// More executions of that status exist beyond those looked at.
    pub next_cursor: Option<String>,
}

impl ExecutionControl {
    /// Starts a `failed` or `timed_out` execution again from `command.from_step` (default:
    /// the step that stopped it), at that step's next visit, with the context it ended
    /// with plus a `retry` marker; approvals granted earlier on its path are kept. The
    /// retry is audited as a `manual` resume request. `Conflict` (audited) for another
    /// status or a lost race, `Invalid` for an unknown step or an empty reason.
    pub async fn retry(&self, id: Uuid, command: RetryCommand<'_>) -> Result<Progress> {
        check_reason(command.reason)?;
        let execution = self.engine.store().get_execution(id).await?;
        self.retry_loaded(&execution, command).await
    }

    /// [`Self::retry`] of `execution` as just read.
    async fn retry_loaded(
        &self,
        execution: &Execution,
        command: RetryCommand<'_>,
    ) -> Result<Progress> {
        let id = execution.id;
        let retry = match self.plan(execution, command).await {
            Ok(planned) => planned,
            Err(Error::Conflict(message)) => {
                self.refuse(id, command, &message).await;
                return Err(Error::Conflict(message));
            }
            Err(err) => return Err(err),
        };
        let now = self.engine.clock().now();
        match self
            .engine
            .store()
            .retry_execution(id, &retry, command.actor, &self.engine.claim(), now)
            .await
        {
            Ok(execution) => {
                tracing::info!(execution_id = %id, step_id = %retry.cursor.step_id, actor = ?command.actor, "execution retried");
                Ok(Progress::spawn(
                    &self.engine,
                    self.tasks.as_ref(),
                    execution,
                    "retry",
                ))
            }
            Err(tollgate_store::Error::Conflict(message)) => {
                self.refuse(id, command, &message).await;
                Err(Error::Conflict(message))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Retries (or, with `dry_run`, previews the retry of) the executions `selection`
    /// picks, each on its own as [`Self::retry`] does: one refusal does not stop the
    /// others. The executions it retried are advanced in the background.
    pub async fn retry_many(
        &self,
        selection: &RetrySelection,
        command: RetryCommand<'_>,
        dry_run: bool,
    ) -> Result<RetryReport> {
        check_reason(command.reason)?;
        if !matches!(
            selection.status,
            ExecutionStatus::Failed | ExecutionStatus::TimedOut
        ) {
            return Err(Error::Invalid(format!(
                "`status` {} cannot be retried: choose failed or timed_out",
                selection.status
            )));
        }
        check_bulk_limit(selection.limit)?;
        let filter = ExecutionFilter {
            status: Some(selection.status),
            workflow_key: selection.workflow_key.clone(),
            ..ExecutionFilter::default()
        };
        let page = self
            .engine
            .store()
            .list_executions(
                &filter,
                &PageRequest {
                    limit: selection.limit,
                    cursor: selection.cursor.clone(),
                },
            )
            .await?;
        let mut items = Vec::with_capacity(page.items.len());
        for execution in page.items {
            if let Some(step) = &selection.failed_step {
                if self.stopped_at(&execution).await?.as_deref() != Some(step.as_str()) {
                    continue;
                }
            }
            items.push(self.retry_one(&execution, command, dry_run).await?);
        }
        Ok(RetryReport {
            items,
            next_cursor: page.next_cursor,
        })
    }

    async fn retry_one(
        &self,
        execution: &Execution,
        command: RetryCommand<'_>,
        dry_run: bool,
    ) -> Result<RetryItem> {
        let id = execution.id;
        let refused = |reason: String| RetryItem {
            execution_id: id,
            from_step: command.from_step.map(str::to_owned),
            outcome: RetryOutcome::Refused(reason),
        };
        if !dry_run {
            return match self.retry_loaded(execution, command).await {
                Ok(progress) => Ok(RetryItem {
                    execution_id: id,
                    from_step: progress.execution.cursor.map(|c| c.step_id),
                    outcome: RetryOutcome::Retried,
                }),
                Err(Error::Conflict(reason) | Error::Invalid(reason) | Error::NotFound(reason)) => {
                    Ok(refused(reason))
                }
                Err(err) => Err(err),
            };
        }
        match self.plan(execution, command).await {
            Ok(planned) => Ok(RetryItem {
                execution_id: id,
                from_step: Some(planned.cursor.step_id),
                outcome: RetryOutcome::WouldRetry,
            }),
            Err(Error::Conflict(reason) | Error::Invalid(reason)) => Ok(refused(reason)),
            Err(err) => Err(err),
        }
    }

    /// Decides where and how `execution` would start again, or why it cannot.
    async fn plan(&self, execution: &Execution, command: RetryCommand<'_>) -> Result<Retry> {
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
        if execution
            .error
            .as_ref()
            .is_some_and(|e| e.kind == ErrorKind::MaxStepsExceeded)
        {
            return Err(Error::Conflict(format!(
                "execution {id} used its whole step budget ({} steps run, max_steps); a retry \
                 would stop at once: start a new execution instead",
                execution.steps_run
            )));
        }
        let definition = match self
            .engine
            .store()
            .get_snapshot(&execution.snapshot_id)
            .await
        {
            Ok(definition) => definition,
            Err(tollgate_store::Error::NotFound { .. }) => {
                return Err(Error::Conflict(format!(
                    "execution {id}'s definition snapshot {} is missing",
                    execution.snapshot_id
                )))
            }
            Err(err) => return Err(err.into()),
        };
        let step_id = match command.from_step {
            Some(step) => {
                if !definition.steps.iter().any(|s| s.id == step) {
                    let known: Vec<&str> = definition.steps.iter().map(|s| s.id.as_str()).collect();
                    return Err(Error::Invalid(format!(
                        "`from_step`: workflow {} version {} has no top-level step `{step}` \
                         (its steps: {})",
                        execution.workflow_key,
                        execution.workflow_version,
                        known.join(", ")
                    )));
                }
                step.to_owned()
            }
            None => self.stopped_at(execution).await?.ok_or_else(|| {
                Error::Conflict(format!(
                    "execution {id} has no record of the step that stopped it; name one with \
                     `from_step`"
                ))
            })?,
        };
        let now = self.engine.clock().now();
        let visit = execution.visits.get(&step_id).copied().unwrap_or(0) + 1;
        let count = execution
            .context
            .get(RETRY_ROOT)
            .and_then(|r| r.get("count"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            + 1;
        let (mut context, rewound) = self.context_at_entry(execution, &step_id).await?;
        if let Value::Object(map) = &mut context {
            map.insert(
                RETRY_ROOT.into(),
                json!({
                    "from_step": step_id,
                    "count": count,
                    "by": command.actor,
                    "reason": command.reason,
                    "at": now,
                    "kept": [],
                }),
            );
        }
        let mut undo = ContextUndo::new(None, 0);
        diff(&execution.context, &context, &mut undo.prior);
        let mut audit = Map::new();
        audit.insert("command".into(), json!("retry"));
        audit.insert("from_step".into(), json!(step_id));
        audit.insert("visit".into(), json!(visit));
        audit.insert("context_of_visit".into(), json!(rewound));
        audit.insert("reason".into(), json!(command.reason));
        audit.insert("previous_status".into(), json!(execution.status));
        if let Some(error) = &execution.error {
            audit.insert("previous_error".into(), json!(error));
        }
        if let Some(origin) = command.origin {
            audit.insert("origin".into(), json!(origin));
        }
        Ok(Retry {
            expected_version: execution.version,
            cursor: Cursor::new(step_id, visit),
            context,
            undo: vec![undo],
            deadline: definition.timeout.map(|t| now + t.as_chrono()),
            audit: Value::Object(audit),
        })
    }

    /// The context `execution` had when it last entered `step_id`, played back from its
    /// undo trail, with the decisions it ended with (`approvals`, `approval`) kept — that
    /// is how granted approvals on the way are passed without asking again — and the
    /// visit it was rewound to. A step it never entered, or whose visit the trail does
    /// not cover (history from before the trail was kept), gives the context it ended
    /// with and `None`.
    async fn context_at_entry(
        &self,
        execution: &Execution,
        step_id: &str,
    ) -> Result<(Value, Option<u32>)> {
        let ended = &execution.context;
        let Some(&visit) = execution.visits.get(step_id) else {
            return Ok((ended.clone(), None));
        };
        let trail = self.engine.store().context_trail(execution.id).await?;
        let mut context = ended.clone();
        if !rewind(&mut context, &trail, step_id, visit) {
            return Ok((context, None));
        }
        if let Value::Object(map) = &mut context {
            for kept in ["approvals", "approval"] {
                match ended.get(kept) {
                    Some(value) => {
                        map.insert(kept.into(), value.clone());
                    }
                    None => {
                        map.remove(kept);
                    }
                }
            }
        }
        Ok((context, Some(visit)))
    }

    /// The top-level step that stopped an ended execution: where its cursor stood when
    /// it ended (the failed step, or the gate it timed out at), else its latest top-level
    /// step record that did not complete.
    async fn stopped_at(&self, execution: &Execution) -> Result<Option<String>> {
        if let Some(cursor) = &execution.cursor {
            return Ok(Some(cursor.step_id.clone()));
        }
        let records = self.engine.store().list_steps(execution.id).await?;
        Ok(records
            .iter()
            .filter(|r| r.parent_step_id.is_none())
            .filter(|r| !matches!(r.status, StepStatus::Completed | StepStatus::Skipped))
            .max_by_key(|r| (r.started_at, r.id))
            .map(|r| r.step_id.clone()))
    }

    async fn refuse(&self, id: Uuid, command: RetryCommand<'_>, message: &str) {
        let data = json!({"command": "retry", "from_step": command.from_step, "reason": command.reason, "origin": command.origin});
        self.audit_command_refusal(id, command.actor, data, message)
            .await;
    }

    /// Records an operator command's refusal (`data` says which command, with what) in
    /// the execution's resume audit.
    pub(crate) async fn audit_command_refusal(
        &self,
        id: Uuid,
        actor: Option<&str>,
        data: Value,
        message: &str,
    ) {
        audit_refusal(
            &self.engine,
            refused(
                &self.engine,
                id,
                ResumeTrigger::Manual,
                actor,
                data,
                message,
            ),
        )
        .await;
    }
}

/// `Invalid` unless a bulk command's `limit` is between 1 and [`MAX_BULK`].
pub(crate) fn check_bulk_limit(limit: u32) -> Result<()> {
    if limit == 0 || limit > MAX_BULK {
        return Err(Error::Invalid(format!(
            "`limit` must be between 1 and {MAX_BULK}, not {limit}"
        )));
    }
    Ok(())
}

fn check_reason(reason: &str) -> Result<()> {
    if reason.trim().is_empty() {
        return Err(Error::Invalid(
            "`reason` is required: say why the execution is retried".into(),
        ));
    }
    Ok(())
}
