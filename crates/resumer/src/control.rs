//! Operator commands: start by hand, pause, resume, cancel.

use serde_json::{json, Value};
use tollgate_engine::{Engine, StartRequest};
use tollgate_model::records::{Execution, ResumeTrigger};
use uuid::Uuid;

use crate::{audit_refusal, refused, Error, Progress, Result, Tasks};

/// Starts, pauses, resumes and cancels executions by hand (docs/execution-semantics.md,
/// "Gates").
#[derive(Debug, Clone)]
pub struct ExecutionControl {
    pub(crate) engine: Engine,
    pub(crate) tasks: Option<Tasks>,
}

impl ExecutionControl {
    /// Commands carried out with `engine`'s worker id.
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

    /// Starts an execution of workflow `workflow_id` by hand (`trigger_event` =
    /// `manual`); `requested_by` is the requester of its approvals. `Conflict` for a
    /// disabled workflow, `NotFound` for a missing one.
    pub async fn execute(
        &self,
        workflow_id: Uuid,
        payload: Value,
        requested_by: Option<&str>,
    ) -> Result<Progress> {
        self.execute_from(workflow_id, payload, requested_by, None)
            .await
    }

    /// [`Self::execute`], recording `source` — the channel the request came through,
    /// e.g. `mcp` — as the trigger's source (`context.trigger.source`).
    pub async fn execute_from(
        &self,
        workflow_id: Uuid,
        payload: Value,
        requested_by: Option<&str>,
        source: Option<&str>,
    ) -> Result<Progress> {
        let workflow = self.engine.store().get_workflow(workflow_id).await?;
        if !workflow.enabled {
            return Err(Error::Conflict(format!(
                "workflow {workflow_id} ({}) is disabled; enable it first",
                workflow.workflow_id()
            )));
        }
        let execution = self
            .engine
            .create(StartRequest {
                workflow,
                trigger_event: "manual".into(),
                payload,
                event_id: None,
                event_key: None,
                source: source.map(str::to_owned),
                requested_by: requested_by.map(str::to_owned),
            })
            .await?;
        Ok(Progress::spawn(
            &self.engine,
            self.tasks.as_ref(),
            execution,
            "start",
        ))
    }

    /// Pauses a running execution at its next step boundary (at once when no worker
    /// holds it). `Conflict` if it is not running.
    pub async fn pause(
        &self,
        id: Uuid,
        actor: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Execution> {
        let now = self.engine.clock().now();
        Ok(self
            .engine
            .store()
            .request_pause(id, actor, reason, now)
            .await?)
    }

    /// Resumes a manually paused execution, merging `data` into its context. `Conflict`
    /// (audited) if it is not manually paused — approval gates are resumed by deciding.
    pub async fn resume(&self, id: Uuid, actor: Option<&str>, data: Value) -> Result<Progress> {
        if !(data.is_object() || data.is_null()) {
            return Err(Error::Invalid("`data` must be an object".into()));
        }
        let data = if data.is_null() { json!({}) } else { data };
        let now = self.engine.clock().now();
        match self
            .engine
            .store()
            .resume_manual(id, actor, data.clone(), &self.engine.claim(), now)
            .await
        {
            Ok(execution) => Ok(Progress::spawn(
                &self.engine,
                self.tasks.as_ref(),
                execution,
                "manual",
            )),
            Err(tollgate_store::Error::Conflict(message)) => {
                audit_refusal(
                    &self.engine,
                    refused(
                        &self.engine,
                        id,
                        ResumeTrigger::Manual,
                        actor,
                        json!({"command": "resume", "data": data}),
                        &message,
                    ),
                )
                .await;
                Err(Error::Conflict(message))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Cancels a non-terminal execution; its open approvals become `cancelled`.
    /// `Conflict` if it already ended.
    pub async fn cancel(
        &self,
        id: Uuid,
        actor: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Execution> {
        let now = self.engine.clock().now();
        let execution = self
            .engine
            .store()
            .cancel_execution(id, actor, reason, now)
            .await?;
        tracing::info!(execution_id = %id, actor = ?actor, "execution cancelled");
        Ok(execution)
    }
}
