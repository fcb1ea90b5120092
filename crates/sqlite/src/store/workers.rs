//! [`WorkerStore`] on SQLite: worker loops' heartbeats.

use async_trait::async_trait;
use tollgate_model::records::{Timestamp, WorkerBeat};
use tollgate_store::{Result, WorkerStore, WORKERS_FORGOTTEN_AFTER};

use crate::rows::{self, backend, ts};
use crate::SqliteStore;

#[async_trait]
impl WorkerStore for SqliteStore {
    async fn heartbeat(
        &self,
        worker_id: &str,
        started_at: Timestamp,
        now: Timestamp,
        claimed: u64,
    ) -> Result<()> {
        let claimed = i64::try_from(claimed).unwrap_or(i64::MAX);
        let done = sqlx::query(
            "BEGIN IMMEDIATE; DELETE FROM worker_heartbeats WHERE beat_at < ? AND worker_id <> ?; \
             INSERT INTO worker_heartbeats (worker_id, started_at, beat_at, last_claim_at, claimed) \
             VALUES (?, ?, ?, CASE WHEN ? > 0 THEN ? END, ?) \
             ON CONFLICT (worker_id) DO UPDATE SET started_at = excluded.started_at, \
             beat_at = excluded.beat_at, \
             last_claim_at = COALESCE(excluded.last_claim_at, worker_heartbeats.last_claim_at), \
             claimed = worker_heartbeats.claimed + excluded.claimed; COMMIT;",
        )
        .bind(ts(now - WORKERS_FORGOTTEN_AFTER))
        .bind(worker_id)
        .bind(worker_id)
        .bind(ts(started_at))
        .bind(ts(now))
        .bind(claimed)
        .bind(ts(now))
        .bind(claimed);
        self.held().await?.fetch_all(done).await.map_err(backend)?;
        Ok(())
    }

    async fn list_workers(&self, since: Timestamp) -> Result<Vec<WorkerBeat>> {
        sqlx::query(
            "SELECT * FROM worker_heartbeats WHERE beat_at >= ? ORDER BY beat_at DESC, worker_id",
        )
        .bind(ts(since))
        .fetch_all(&self.reader)
        .await
        .map_err(backend)?
        .iter()
        .map(rows::worker_beat)
        .collect()
    }
}
