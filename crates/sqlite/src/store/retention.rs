//! History retention: deleting ended executions in batches ([`ExecutionStore::purge_ended`]).
//!
//! [`ExecutionStore::purge_ended`]: tollgate_store::ExecutionStore::purge_ended

use sqlx::sqlite::Sqlite;
use sqlx::{QueryBuilder, Row};
use tollgate_store::{Purge, Purged, Result};
use uuid::Uuid;

use crate::rows::{backend, from_ts, ts};
use crate::{rows, SqliteStore};

use super::sql::commit;

impl SqliteStore {
    /// One `BEGIN IMMEDIATE` transaction on the single writer, so no other node can
    /// purge at the same time (SQLite has one writer process).
    pub(super) async fn purge(&self, purge: &Purge, limit: u32) -> Result<Vec<Purged>> {
        if purge.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut tx = self.write_tx().await?;
        let mut q = candidates(purge, limit);
        let rows = q.build().fetch_all(&mut *tx).await.map_err(backend)?;
        let mut purged = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get("id").map_err(backend)?;
            let workflow_key: String = row.try_get("workflow_key").map_err(backend)?;
            let ended: i64 = row.try_get("completed_at").map_err(backend)?;
            let consumed: String = row.try_get("consumed_events").map_err(backend)?;
            let consumed: Vec<Uuid> = serde_json::from_str(&consumed).unwrap_or_default();
            let Some(cutoff) = purge.cutoff(&workflow_key) else {
                continue;
            };
            for event in consumed {
                sqlx::query("DELETE FROM events WHERE id = ? AND received_at < ?")
                    .bind(event.to_string())
                    .bind(ts(cutoff))
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            // Through the indexed parent rows: these tables are keyed by their own ids.
            for sql in [
                "DELETE FROM notification_deliveries WHERE notification_id IN (SELECT id FROM notifications WHERE execution_id = ?)",
                "DELETE FROM approval_rungs WHERE approval_id IN (SELECT id FROM approvals WHERE execution_id = ?)",
            ] {
                sqlx::query(sql)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            for table in ["notifications", "quarantined_executions", "context_trail"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE execution_id = ?"))
                    .bind(&id)
                    .execute(&mut *tx)
                    .await
                    .map_err(backend)?;
            }
            // Step records, approvals, resume requests and the format row go with it
            // (ON DELETE CASCADE).
            sqlx::query("DELETE FROM executions WHERE id = ?")
                .bind(&id)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            purged.push(Purged {
                execution_id: Uuid::parse_str(&id).map_err(|e| rows::corrupt("execution id", e))?,
                workflow_key,
                ended_at: from_ts(ended),
            });
        }
        commit(tx).await?;
        Ok(purged)
    }
}

impl SqliteStore {
    /// What [`Self::purge`] would delete now, read without deleting.
    pub(super) async fn purgeable(&self, purge: &Purge, limit: u32) -> Result<Vec<Purged>> {
        if purge.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let rows = candidates(purge, limit)
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|row| {
                let id: String = row.try_get("id").map_err(backend)?;
                Ok(Purged {
                    execution_id: Uuid::parse_str(&id)
                        .map_err(|e| rows::corrupt("execution id", e))?,
                    workflow_key: row.try_get("workflow_key").map_err(backend)?,
                    ended_at: from_ts(row.try_get("completed_at").map_err(backend)?),
                })
            })
            .collect()
    }
}

/// The ended executions past their cutoff, oldest end first (the `executions_ended`
/// index), at most `limit`, restricted to `purge.only` when set.
fn candidates(purge: &Purge, limit: u32) -> QueryBuilder<'static, Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new(
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
            .push_bind(ts(*before))
            .push(")");
    }
    if let Some(before) = purge.default_before {
        if !std::mem::take(&mut first) {
            q.push(" OR ");
        }
        q.push("(completed_at < ").push_bind(ts(before));
        for (key, _) in &purge.per_workflow {
            q.push(" AND workflow_key <> ").push_bind(key.clone());
        }
        q.push(")");
    }
    q.push(")");
    if let Some(only) = &purge.only {
        q.push(" AND id IN (");
        let mut list = q.separated(", ");
        for id in only {
            list.push_bind(id.to_string());
        }
        q.push(")");
    }
    q.push(" ORDER BY completed_at, id LIMIT ")
        .push_bind(i64::from(limit));
    q
}
