//! History retention: deleting ended executions in batches ([`ExecutionStore::purge_ended`]).
//!
//! [`ExecutionStore::purge_ended`]: tollgate_store::ExecutionStore::purge_ended

use sqlx::postgres::Postgres;
use sqlx::{QueryBuilder, Row};
use tollgate_model::records::Timestamp;
use tollgate_store::{Purge, Purged, Result};
use uuid::Uuid;

use crate::rows::backend;
use crate::PgStore;

use super::sql::commit;

/// The transaction-scoped advisory lock that lets one node purge at a time: the others
/// find it taken and skip their pass instead of queueing behind it.
const PURGE_LOCK: i64 = 0x746f_6c6c_7075_7267;

impl PgStore {
    /// One transaction: the lock, the batch (`FOR UPDATE SKIP LOCKED`, so an operator's
    /// retry of the same row is never waited for), and four bulk deletes.
    pub(super) async fn purge(&self, purge: &Purge, limit: u32) -> Result<Vec<Purged>> {
        if purge.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.tx().await?;
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(PURGE_LOCK)
            .fetch_one(&mut *tx)
            .await
            .map_err(backend)?;
        if !locked {
            tx.rollback().await.map_err(backend)?;
            return Ok(Vec::new());
        }
        let mut q = candidates(purge, limit);
        q.push(" FOR UPDATE SKIP LOCKED");
        let rows = q.build().fetch_all(&mut *tx).await.map_err(backend)?;
        let mut purged = Vec::with_capacity(rows.len());
        let mut events: Vec<Uuid> = Vec::new();
        let mut event_cutoffs: Vec<Timestamp> = Vec::new();
        for row in rows {
            let id: Uuid = row.try_get("id").map_err(backend)?;
            let workflow_key: String = row.try_get("workflow_key").map_err(backend)?;
            let ended_at: Timestamp = row.try_get("completed_at").map_err(backend)?;
            let consumed: Vec<Uuid> = row.try_get("consumed_events").map_err(backend)?;
            if let Some(cutoff) = purge.cutoff(&workflow_key) {
                for event in consumed {
                    events.push(event);
                    event_cutoffs.push(cutoff);
                }
            }
            purged.push(Purged {
                execution_id: id,
                workflow_key,
                ended_at,
            });
        }
        if purged.is_empty() {
            commit(tx).await?;
            return Ok(purged);
        }
        let ids: Vec<Uuid> = purged.iter().map(|p| p.execution_id).collect();
        sqlx::query(
            "DELETE FROM events e USING unnest($1::uuid[], $2::timestamptz[]) AS c(id, cutoff) \
             WHERE e.id = c.id AND e.received_at < c.cutoff",
        )
        .bind(&events)
        .bind(&event_cutoffs)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        // Through the indexed parent rows: these tables are keyed by their own ids.
        for sql in [
            "DELETE FROM notification_deliveries WHERE notification_id IN (SELECT id FROM notifications WHERE execution_id = ANY($1))",
            "DELETE FROM approval_rungs WHERE approval_id IN (SELECT id FROM approvals WHERE execution_id = ANY($1))",
        ] {
            sqlx::query(sql)
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        for table in ["notifications", "quarantined_executions", "context_trail"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE execution_id = ANY($1)"))
                .bind(&ids)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        // Step records, approvals, resume requests and the format row go with it
        // (ON DELETE CASCADE).
        sqlx::query("DELETE FROM executions WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        commit(tx).await?;
        Ok(purged)
    }
}

impl PgStore {
    /// What [`Self::purge`] would delete now, read without deleting or locking.
    pub(super) async fn purgeable(&self, purge: &Purge, limit: u32) -> Result<Vec<Purged>> {
        if purge.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let rows = candidates(purge, limit)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(Purged {
                    execution_id: row.try_get("id").map_err(backend)?,
                    workflow_key: row.try_get("workflow_key").map_err(backend)?,
                    ended_at: row.try_get("completed_at").map_err(backend)?,
                })
            })
            .collect()
    }
}

/// The ended executions past their cutoff, oldest end first (the `executions_ended`
/// index), at most `limit`, restricted to `purge.only` when set.
fn candidates(purge: &Purge, limit: u32) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::<Postgres>::new(
        "SELECT id, workflow_key, completed_at, consumed_events FROM executions \
         WHERE completed_at IS NOT NULL AND (",
    );
    let mut first = true;
    for (key, before) in &purge.per_workflow {
        if !std::mem::take(&mut first) {
            q.push(" OR ");
        }
        q.push("(workflow_key = ")
            .push_bind(key.clone())
            .push(" AND completed_at < ")
            .push_bind(*before)
            .push(")");
    }
    if let Some(before) = purge.default_before {
        if !std::mem::take(&mut first) {
            q.push(" OR ");
        }
        let overridden: Vec<String> = purge.per_workflow.iter().map(|(k, _)| k.clone()).collect();
        q.push("(completed_at < ")
            .push_bind(before)
            .push(" AND workflow_key <> ALL(")
            .push_bind(overridden)
            .push("))");
    }
    q.push(")");
    if let Some(only) = &purge.only {
        q.push(" AND id = ANY(").push_bind(only.clone()).push(")");
    }
    q.push(" ORDER BY completed_at, id LIMIT ")
        .push_bind(i64::from(limit));
    q
}
