//! [`WorkflowStore`] on PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnection, Postgres};
use sqlx::types::Json;
use sqlx::QueryBuilder;
use sqlx::Row;
use tollgate_model::definition::Trigger;
use tollgate_model::records::{Timestamp, Workflow};
use tollgate_model::WorkflowDefinition;
use tollgate_store::{
    encode_id_cursor, page_from_overfetch, Error, Page, PageRequest, Result, WorkflowFilter,
    WorkflowStore,
};
use uuid::Uuid;

use crate::rows::{backend, to_json};
use crate::{rows, PgStore};

use super::sql::{commit, id_after, limit};

pub(super) fn event_pattern(definition: &WorkflowDefinition) -> Option<String> {
    match &definition.trigger {
        Trigger::Event { event } => Some(event.clone()),
        _ => None,
    }
}

pub(super) async fn insert_snapshot(
    conn: &mut PgConnection,
    id: &str,
    definition: &WorkflowDefinition,
    now: Timestamp,
) -> Result<()> {
    sqlx::query("INSERT INTO snapshots (id, definition, created_at, format) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING")
        .bind(id)
        .bind(to_json(definition))
        .bind(now)
        .bind(tollgate_store::STORED_FORMAT)
        .execute(conn)
        .await
        .map_err(backend)?;
    Ok(())
}

pub(super) fn taken(definition: &WorkflowDefinition) -> Error {
    Error::Conflict(format!(
        "workflow `{}` version `{}` already exists",
        definition.workflow_id, definition.version
    ))
}

#[async_trait]
impl WorkflowStore for PgStore {
    async fn create_workflow(&self, workflow: Workflow) -> Result<Workflow> {
        let mut tx = self.tx().await?;
        insert_snapshot(
            &mut tx,
            &workflow.snapshot_id,
            &workflow.definition,
            workflow.created_at,
        )
        .await?;
        let result = sqlx::query("INSERT INTO workflows (id, workflow_id, version, enabled, definition, snapshot_id, tags, event_pattern, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
            .bind(workflow.id)
            .bind(workflow.definition.workflow_id.clone())
            .bind(workflow.definition.version.clone())
            .bind(workflow.enabled)
            .bind(to_json(&*workflow.definition))
            .bind(workflow.snapshot_id.clone())
            .bind(workflow.definition.tags.clone())
            .bind(event_pattern(&workflow.definition))
            .bind(workflow.created_at)
            .bind(workflow.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(backend);
        match result {
            Err(Error::Conflict(_)) => return Err(taken(&workflow.definition)),
            other => other?,
        };
        super::schedules::sync_trigger_schedule(&mut tx, &workflow, workflow.updated_at, false)
            .await?;
        commit(tx).await?;
        Ok(workflow)
    }

    async fn replace_workflow(
        &self,
        id: Uuid,
        definition: Arc<WorkflowDefinition>,
        now: Timestamp,
    ) -> Result<Workflow> {
        let mut tx = self.tx().await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(workflows),
            " FROM workflows WHERE id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let mut workflow = row
            .as_ref()
            .map(rows::workflow)
            .transpose()?
            .ok_or_else(|| Error::not_found("workflow", id))?;
        let snapshot_id = tollgate_model::records::snapshot_id(&definition);
        insert_snapshot(&mut tx, &snapshot_id, &definition, now).await?;
        let result = sqlx::query("UPDATE workflows SET workflow_id = $1, version = $2, enabled = $3, definition = $4, snapshot_id = $5, tags = $6, event_pattern = $7, updated_at = $8 WHERE id = $9")
            .bind(definition.workflow_id.clone())
            .bind(definition.version.clone())
            .bind(definition.enabled)
            .bind(to_json(&*definition))
            .bind(snapshot_id.clone())
            .bind(definition.tags.clone())
            .bind(event_pattern(&definition))
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend);
        match result {
            Err(Error::Conflict(_)) => return Err(taken(&definition)),
            other => other?,
        };
        workflow.enabled = definition.enabled;
        workflow.definition = definition;
        workflow.snapshot_id = snapshot_id;
        workflow.updated_at = now;
        super::schedules::sync_trigger_schedule(&mut tx, &workflow, now, false).await?;
        commit(tx).await?;
        Ok(workflow)
    }

    async fn set_workflow_enabled(
        &self,
        id: Uuid,
        enabled: bool,
        now: Timestamp,
    ) -> Result<Workflow> {
        let mut tx = self.tx().await?;
        let row = sqlx::query(
            concat!("UPDATE workflows SET enabled = $1, definition = jsonb_set(definition, '{enabled}', to_jsonb($1)), updated_at = $2 WHERE id = $3 RETURNING ", columns!(workflows)),
        )
        .bind(enabled)
        .bind(now)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
        let workflow = row
            .as_ref()
            .map(rows::workflow)
            .transpose()?
            .ok_or_else(|| Error::not_found("workflow", id))?;
        if enabled {
            super::schedules::sync_trigger_schedule(&mut tx, &workflow, now, true).await?;
        }
        commit(tx).await?;
        Ok(workflow)
    }

    async fn delete_workflow(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("DELETE FROM workflows WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::not_found("workflow", id));
        }
        Ok(())
    }

    async fn get_workflow(&self, id: Uuid) -> Result<Workflow> {
        let row = sqlx::query(concat!(
            "SELECT ",
            columns!(workflows),
            " FROM workflows WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref()
            .map(rows::workflow)
            .transpose()?
            .ok_or_else(|| Error::not_found("workflow", id))
    }

    async fn list_workflows(
        &self,
        filter: &WorkflowFilter,
        page: &PageRequest,
    ) -> Result<Page<Workflow>> {
        let after = id_after(page)?;
        let mut q = QueryBuilder::<Postgres>::new(concat!(
            "SELECT ",
            columns!(workflows),
            " FROM workflows WHERE TRUE"
        ));
        if let Some(enabled) = filter.enabled {
            q.push(" AND enabled = ").push_bind(enabled);
        }
        if let Some(key) = &filter.workflow_id {
            q.push(" AND workflow_id = ").push_bind(key.clone());
        }
        if let Some(tag) = &filter.tag {
            q.push(" AND ").push_bind(tag.clone()).push(" = ANY(tags)");
        }
        if let Some(after) = after {
            q.push(" AND id > ").push_bind(after);
        }
        q.push(" ORDER BY id LIMIT ")
            .push_bind(limit(page.limit) + 1);
        let rows = q.build().fetch_all(&self.pool).await.map_err(backend)?;
        let items = rows
            .iter()
            .map(rows::workflow)
            .collect::<Result<Vec<_>>>()?;
        Ok(page_from_overfetch(items, page.limit, |w| {
            encode_id_cursor(w.id)
        }))
    }

    async fn workflows_for_event(&self, event_type: &str) -> Result<Vec<Workflow>> {
        self.triggered.submit(event_type.to_owned()).await
    }

    async fn get_snapshot(&self, snapshot_id: &str) -> Result<Arc<WorkflowDefinition>> {
        let row = sqlx::query("SELECT definition, format FROM snapshots WHERE id = $1")
            .bind(snapshot_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Err(Error::not_found("snapshot", snapshot_id));
        };
        let format: i64 = row.try_get("format").map_err(backend)?;
        if format > tollgate_store::STORED_FORMAT {
            return Err(Error::NewerFormat {
                what: "snapshot",
                id: snapshot_id.to_owned(),
                format,
            });
        }
        let Json(value): Json<Value> = row.try_get("definition").map_err(backend)?;
        let definition: WorkflowDefinition =
            serde_json::from_value(value).map_err(|e| rows::corrupt("snapshot", e))?;
        Ok(Arc::new(definition))
    }
}
