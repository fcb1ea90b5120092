//! [`WorkflowStore`] in memory.

use std::sync::Arc;

use async_trait::async_trait;
use tollgate_model::records::{Timestamp, Workflow};
use tollgate_model::WorkflowDefinition;
use uuid::Uuid;

use super::{encode_id, id_cursor, paginate, MemoryStore};
use crate::traits::WorkflowStore;
use crate::types::{Page, PageRequest, WorkflowFilter};
use crate::{rules, Error, Result};

#[async_trait]
impl WorkflowStore for MemoryStore {
    async fn create_workflow(&self, workflow: Workflow) -> Result<Workflow> {
        let mut state = self.lock();
        if state.workflows.contains_key(&workflow.id) {
            return Err(Error::Conflict(format!(
                "workflow {} already exists",
                workflow.id
            )));
        }
        state.check_workflow_key(workflow.id, &workflow.definition)?;
        state
            .snapshots
            .entry(workflow.snapshot_id.clone())
            .or_insert_with(|| workflow.definition.clone());
        state.workflows.insert(workflow.id, workflow.clone());
        state.sync_trigger_schedule(workflow.id, workflow.updated_at);
        Ok(workflow)
    }

    async fn replace_workflow(
        &self,
        id: Uuid,
        definition: Arc<WorkflowDefinition>,
        now: Timestamp,
    ) -> Result<Workflow> {
        let mut state = self.lock();
        if !state.workflows.contains_key(&id) {
            return Err(Error::not_found("workflow", id));
        }
        state.check_workflow_key(id, &definition)?;
        let snapshot_id = tollgate_model::records::snapshot_id(&definition);
        state
            .snapshots
            .entry(snapshot_id.clone())
            .or_insert_with(|| definition.clone());
        let workflow = state
            .workflows
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("workflow", id))?;
        workflow.enabled = definition.enabled;
        workflow.definition = definition;
        workflow.snapshot_id = snapshot_id;
        workflow.updated_at = now;
        let workflow = workflow.clone();
        state.sync_trigger_schedule(id, now);
        Ok(workflow)
    }

    async fn set_workflow_enabled(
        &self,
        id: Uuid,
        enabled: bool,
        now: Timestamp,
    ) -> Result<Workflow> {
        let mut state = self.lock();
        let workflow = state
            .workflows
            .get_mut(&id)
            .ok_or_else(|| Error::not_found("workflow", id))?;
        workflow.enabled = enabled;
        Arc::make_mut(&mut workflow.definition).enabled = enabled;
        workflow.updated_at = now;
        let workflow = workflow.clone();
        if enabled
            && !state
                .schedules
                .contains_key(&rules::trigger_schedule_id(id))
        {
            state.sync_trigger_schedule(id, now);
        }
        Ok(workflow)
    }

    async fn delete_workflow(&self, id: Uuid) -> Result<()> {
        let mut state = self.lock();
        state
            .workflows
            .remove(&id)
            .ok_or_else(|| Error::not_found("workflow", id))?;
        let owned: Vec<Uuid> = state
            .schedules
            .values()
            .filter(|s| s.workflow_id == id)
            .map(|s| s.id)
            .collect();
        for schedule in owned {
            state.remove_schedule(schedule);
        }
        Ok(())
    }

    async fn get_workflow(&self, id: Uuid) -> Result<Workflow> {
        self.lock()
            .workflows
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::not_found("workflow", id))
    }

    async fn list_workflows(
        &self,
        filter: &WorkflowFilter,
        page: &PageRequest,
    ) -> Result<Page<Workflow>> {
        let after = id_cursor(page)?;
        let state = self.lock();
        let items = state
            .workflows
            .values()
            .filter(|w| filter.enabled.is_none_or(|e| w.enabled == e))
            .filter(|w| {
                filter
                    .workflow_id
                    .as_deref()
                    .is_none_or(|k| w.workflow_id() == k)
            })
            .filter(|w| {
                filter
                    .tag
                    .as_ref()
                    .is_none_or(|t| w.definition.tags.contains(t))
            })
            .map(|w| (w.id, w.clone()))
            .collect();
        Ok(paginate(items, false, after, page.limit, encode_id))
    }

    async fn workflows_for_event(&self, event_type: &str) -> Result<Vec<Workflow>> {
        let candidates: Vec<Workflow> = self.lock().workflows.values().cloned().collect();
        Ok(rules::triggered_workflows(candidates, event_type))
    }

    async fn get_snapshot(&self, snapshot_id: &str) -> Result<Arc<WorkflowDefinition>> {
        self.lock()
            .snapshots
            .get(snapshot_id)
            .cloned()
            .ok_or_else(|| Error::not_found("snapshot", snapshot_id))
    }
}
