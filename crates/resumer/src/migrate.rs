//! Moving paused and waiting executions to another version of their workflow
//! (docs/operations.md, "Migrating paused executions"): one by id, or those a filter
//! selects, with a dry run.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use tollgate_model::definition::{GateKind, Step, StepKind};
use tollgate_model::records::{Execution, Migration, Workflow};
use tollgate_model::{ExecutionStatus, PauseReason};
use tollgate_store::{ExecutionFilter, PageRequest, WorkflowFilter};
use uuid::Uuid;

use crate::retry::check_bulk_limit;
use crate::{Error, ExecutionControl, Result};

/// Where to move executions, who asks, and why.
#[derive(Debug, Clone, Copy)]
pub struct MigrateCommand<'a> {
    /// The target version of the same workflow.
    pub to_version: &'a str,
    /// Old step id → new step id, for gates whose step was renamed.
    pub step_map: &'a BTreeMap<String, String>,
    /// Why (optional; kept in the audit).
    pub reason: Option<&'a str>,
    /// Who (the caller's subject).
    pub actor: Option<&'a str>,
    /// Where the command came from, for the audit.
    pub origin: Option<&'a str>,
}

/// Which executions a bulk migration looks at.
#[derive(Debug, Clone)]
pub struct MigrationSelection {
    /// The workflow (its string id).
    pub workflow_key: String,
    /// Only executions on this version.
    pub from_version: Option<String>,
    /// `Paused` or `Waiting`.
    pub status: ExecutionStatus,
    /// How many executions to look at (at most 100).
    pub limit: u32,
    /// Where a previous call stopped.
    pub cursor: Option<String>,
}

/// What a migration did, or would do, to one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationOutcome {
    /// Moved: it runs the target version from now on.
    Migrated,
    /// A dry run: the move would be accepted.
    WouldMigrate,
    /// Refused, with the reason; nothing changed.
    Refused(String),
}

/// One execution of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationItem {
    /// The execution.
    pub execution_id: Uuid,
    /// The version it ran.
    pub from_version: String,
    /// Its gate's step in the target version, when the move is possible.
    pub gate_step: Option<String>,
    /// What happened.
    pub outcome: MigrationOutcome,
}

/// The answer of a bulk migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// One entry per selected execution, newest first.
    pub items: Vec<MigrationItem>,
    /// More executions of that status exist beyond those looked at.
    pub next_cursor: Option<String>,
}

impl ExecutionControl {
    /// Moves a paused or waiting execution to `command.to_version` of its workflow, or
    /// (`dry_run`) says whether it could. The gate's step must exist in the target (same
    /// id, or as `step_map` renames it) and be the same kind of gate (a wait for the same
    /// event); its pending approval or wait carries over unchanged. `Conflict` (audited)
    /// with the reason otherwise, `Invalid` for an unknown version.
    pub async fn migrate(
        &self,
        id: Uuid,
        command: MigrateCommand<'_>,
        dry_run: bool,
    ) -> Result<MigrationItem> {
        let execution = self.engine.store().get_execution(id).await?;
        let from_version = execution.workflow_version.clone();
        let migration = match self.plan_migration(&execution, command).await {
            Ok(migration) => migration,
            Err(Error::Conflict(message)) => {
                if !dry_run {
                    self.refuse_migration(id, command, &message).await;
                }
                return Err(Error::Conflict(message));
            }
            Err(err) => return Err(err),
        };
        let gate_step = Some(migration.gate_step.clone());
        if dry_run {
            return Ok(MigrationItem {
                execution_id: id,
                from_version,
                gate_step,
                outcome: MigrationOutcome::WouldMigrate,
            });
        }
        let now = self.engine.clock().now();
        match self
            .engine
            .store()
            .migrate_execution(id, &migration, command.actor, now)
            .await
        {
            Ok(_) => {
                tracing::info!(execution_id = %id, from = %from_version, to = %migration.workflow_version, "execution migrated");
                Ok(MigrationItem {
                    execution_id: id,
                    from_version,
                    gate_step,
                    outcome: MigrationOutcome::Migrated,
                })
            }
            Err(tollgate_store::Error::Conflict(message)) => {
                self.refuse_migration(id, command, &message).await;
                Err(Error::Conflict(message))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// [`Self::migrate`] for the executions `selection` picks, each on its own: one
    /// refusal does not stop the others.
    pub async fn migrate_many(
        &self,
        selection: &MigrationSelection,
        command: MigrateCommand<'_>,
        dry_run: bool,
    ) -> Result<MigrationReport> {
        if !selection.status.is_gated() {
            return Err(Error::Invalid(format!(
                "`status` {} cannot be migrated: choose paused or waiting",
                selection.status
            )));
        }
        check_bulk_limit(selection.limit)?;
        // An unknown target version is the caller's mistake, said once.
        self.target(&selection.workflow_key, command.to_version)
            .await?;
        let filter = ExecutionFilter {
            status: Some(selection.status),
            workflow_key: Some(selection.workflow_key.clone()),
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
            if selection
                .from_version
                .as_ref()
                .is_some_and(|v| *v != execution.workflow_version)
            {
                continue;
            }
            let item = match self.migrate(execution.id, command, dry_run).await {
                Ok(item) => item,
                Err(Error::Conflict(reason) | Error::Invalid(reason) | Error::NotFound(reason)) => {
                    MigrationItem {
                        execution_id: execution.id,
                        from_version: execution.workflow_version.clone(),
                        gate_step: None,
                        outcome: MigrationOutcome::Refused(reason),
                    }
                }
                Err(err) => return Err(err),
            };
            items.push(item);
        }
        Ok(MigrationReport {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// The workflow row of `version` of `workflow_key`; `Invalid` naming the versions
    /// there are when it does not exist.
    async fn target(&self, workflow_key: &str, version: &str) -> Result<Workflow> {
        let filter = WorkflowFilter {
            workflow_id: Some(workflow_key.to_owned()),
            ..WorkflowFilter::default()
        };
        let mut page = PageRequest::first(500);
        let mut versions = Vec::new();
        loop {
            let workflows = self.engine.store().list_workflows(&filter, &page).await?;
            for w in workflows.items {
                if w.version() == version {
                    return Ok(w);
                }
                versions.push(w.version().to_owned());
            }
            match workflows.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        Err(Error::Invalid(format!(
            "`to_version`: workflow {workflow_key} has no version {version} (its versions: {})",
            versions.join(", ")
        )))
    }

    /// Checks that `execution` can move as `command` says, and how.
    async fn plan_migration(
        &self,
        execution: &Execution,
        command: MigrateCommand<'_>,
    ) -> Result<Migration> {
        let id = execution.id;
        let (Some(gate), true) = (&execution.gate, execution.status.is_gated()) else {
            return Err(Error::Conflict(format!(
                "execution {id} is {}: only paused or waiting executions can be migrated",
                execution.status
            )));
        };
        if execution.workflow_version == command.to_version {
            return Err(Error::Conflict(format!(
                "execution {id} already runs version {}",
                command.to_version
            )));
        }
        let target = self
            .target(&execution.workflow_key, command.to_version)
            .await?;
        let gate_step = command
            .step_map
            .get(&gate.step_id)
            .cloned()
            .unwrap_or_else(|| gate.step_id.clone());
        let Some(step) = target.definition.steps.iter().find(|s| s.id == gate_step) else {
            return Err(Error::Conflict(format!(
                "execution {id} is stopped at `{}`, and version {} has no top-level step `{gate_step}` \
                 (map it to one with step_map)",
                gate.step_id, command.to_version
            )));
        };
        let source = self
            .engine
            .store()
            .get_snapshot(&execution.snapshot_id)
            .await
            .ok();
        let source_step = source
            .as_ref()
            .and_then(|d| d.steps.iter().find(|s| s.id == gate.step_id));
        let mismatch = if gate.is_first_of() || matches!(step.kind, StepKind::FirstOf { .. }) {
            first_of_mismatch(gate, step)
        } else {
            gate_mismatch(gate.reason, gate.event.as_deref(), source_step, step)
        };
        if let Some(mismatch) = mismatch {
            return Err(Error::Conflict(format!(
                "execution {id} cannot move to version {}: {mismatch}",
                command.to_version
            )));
        }
        let mut audit = Map::new();
        audit.insert("command".into(), json!("migrate"));
        audit.insert("from_version".into(), json!(execution.workflow_version));
        audit.insert("to_version".into(), json!(command.to_version));
        audit.insert("gate_step".into(), json!(gate.step_id));
        if gate_step != gate.step_id {
            audit.insert("mapped_to".into(), json!(gate_step));
        }
        if let Some(reason) = command.reason {
            audit.insert("reason".into(), json!(reason));
        }
        if let Some(origin) = command.origin {
            audit.insert("origin".into(), json!(origin));
        }
        Ok(Migration {
            expected_version: execution.version,
            workflow_id: target.id,
            workflow_version: command.to_version.to_owned(),
            snapshot_id: target.snapshot_id.clone(),
            gate_step,
            audit: Value::Object(audit),
        })
    }

    async fn refuse_migration(&self, id: Uuid, command: MigrateCommand<'_>, message: &str) {
        let data = json!({"command": "migrate", "to_version": command.to_version, "reason": command.reason, "origin": command.origin});
        self.audit_command_refusal(id, command.actor, data, message)
            .await;
    }
}

/// Why a `first_of` step's gate cannot continue at `target`, if it cannot: the target
/// must be a `first_of` step with the same gates open — an event gate of the same type at
/// each stored event gate's position, an approval gate if an approval is pending, an
/// `after` gate if a deadline is set — so that every signal the stored gate can still
/// receive has a branch to take. A wait or approval never moves to a `first_of` step.
fn first_of_mismatch(gate: &tollgate_model::records::Gate, target: &Step) -> Option<String> {
    use tollgate_model::definition::Branch;
    let id = &target.id;
    let StepKind::FirstOf { first_of } = &target.kind else {
        return Some(format!(
            "it waits at a first_of step, but `{id}` there is a {} step",
            target.kind.type_name()
        ));
    };
    let Some(branches) = gate.branches.as_ref() else {
        return Some(format!(
            "it waits at a {} gate, but `{id}` there is a first_of step",
            if gate.reason == PauseReason::Approval {
                "approval"
            } else {
                "wait"
            }
        ));
    };
    for branch in branches {
        match first_of.get(branch.index as usize) {
            Some(Branch::Event { event, .. }) if *event == branch.event => {}
            _ => {
                return Some(format!(
                    "its gate {} waits for `{}`, but gate {} of `{id}` there does not",
                    branch.index, branch.event, branch.index
                ))
            }
        }
    }
    if gate.approval_id.is_some()
        && !first_of
            .iter()
            .any(|b| matches!(b, Branch::Approval { .. }))
    {
        return Some(format!(
            "its approval is pending, but `{id}` there has no approval gate"
        ));
    }
    if gate.deadline.is_some() && !first_of.iter().any(|b| matches!(b, Branch::After { .. })) {
        return Some(format!(
            "it has a deadline, but `{id}` there has no `after` gate"
        ));
    }
    None
}

/// Why the gate cannot continue at `target`, if it cannot: an approval needs an approval
/// step, a wait a wait for the same event, a manual pause a step of the same type.
fn gate_mismatch(
    reason: PauseReason,
    event: Option<&str>,
    source: Option<&Step>,
    target: &Step,
) -> Option<String> {
    let id = &target.id;
    match reason {
        PauseReason::Approval => (target.gate_kind() != Some(GateKind::Approval)).then(|| {
            format!(
                "it waits for an approval, but `{id}` there is a {} step",
                target.kind.type_name()
            )
        }),
        PauseReason::Event => match &target.kind {
            StepKind::Wait { wait, .. } if Some(wait.event.as_str()) == event => None,
            StepKind::Wait { wait, .. } => Some(format!(
                "it waits for `{}`, but `{id}` there waits for `{}`",
                event.unwrap_or("?"),
                wait.event
            )),
            other => Some(format!(
                "it waits for an event, but `{id}` there is a {} step",
                other.type_name()
            )),
        },
        PauseReason::Manual => source.and_then(|s| {
            (s.kind.type_name() != target.kind.type_name()).then(|| {
                format!(
                    "it is paused before a {} step, but `{id}` there is a {} step",
                    s.kind.type_name(),
                    target.kind.type_name()
                )
            })
        }),
    }
}
