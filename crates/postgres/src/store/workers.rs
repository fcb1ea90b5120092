//! [`WorkerStore`] on PostgreSQL: worker loops' heartbeats.

use async_trait::async_trait;
use tollgate_model::records::{Timestamp, WorkerBeat};
use tollgate_store::{Result, WorkerStore, WORKERS_FORGOTTEN_AFTER};

use crate::rows::{self, backend};
use crate::PgStore;

#[async_trait]
impl WorkerStore for PgStore {
    async fn heartbeat(
        &self,
        worker_id: &str,
        started_at: Timestamp,
        now: Timestamp,
        claimed: u64,
    ) -> Result<()> {
        let claimed = i64::try_from(claimed).unwrap_or(i64::MAX);
        sqlx::query(
            "WITH gone AS (DELETE FROM worker_heartbeats WHERE beat_at < $1 AND worker_id <> $2) \
             INSERT INTO worker_heartbeats (worker_id, started_at, beat_at, last_claim_at, claimed) \
             VALUES ($2, $3, $4, CASE WHEN $5 > 0 THEN $4 END, $5) \
             ON CONFLICT (worker_id) DO UPDATE SET started_at = EXCLUDED.started_at, \
             beat_at = EXCLUDED.beat_at, \
             last_claim_at = COALESCE(EXCLUDED.last_claim_at, worker_heartbeats.last_claim_at), \
             claimed = worker_heartbeats.claimed + EXCLUDED.claimed",
        )
        .bind(now - WORKERS_FORGOTTEN_AFTER)
        .bind(worker_id)
        .bind(started_at)
        .bind(now)
        .bind(claimed)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn list_workers(&self, since: Timestamp) -> Result<Vec<WorkerBeat>> {
        sqlx::query(concat!(
            "SELECT ",
            columns!(worker_heartbeats),
            " FROM worker_heartbeats WHERE beat_at >= $1 ORDER BY beat_at DESC, worker_id"
        ))
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?
        .iter()
        .map(rows::worker_beat)
        .collect()
    }
}
