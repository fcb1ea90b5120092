//! [`WorkerStore`] in memory: worker loops' heartbeats.

use async_trait::async_trait;
use tollgate_model::records::{Timestamp, WorkerBeat};

use super::MemoryStore;
use crate::traits::{WorkerStore, WORKERS_FORGOTTEN_AFTER};
use crate::Result;

#[async_trait]
impl WorkerStore for MemoryStore {
    async fn heartbeat(
        &self,
        worker_id: &str,
        started_at: Timestamp,
        now: Timestamp,
        claimed: u64,
    ) -> Result<()> {
        let mut state = self.lock();
        state
            .workers
            .retain(|_, w| w.beat_at >= now - WORKERS_FORGOTTEN_AFTER);
        let beat = state
            .workers
            .entry(worker_id.to_owned())
            .or_insert_with(|| WorkerBeat {
                worker_id: worker_id.to_owned(),
                started_at,
                beat_at: now,
                last_claim_at: None,
                claimed: 0,
            });
        beat.started_at = started_at;
        beat.beat_at = now;
        if claimed > 0 {
            beat.last_claim_at = Some(now);
            beat.claimed += claimed;
        }
        Ok(())
    }

    async fn list_workers(&self, since: Timestamp) -> Result<Vec<WorkerBeat>> {
        let mut workers: Vec<WorkerBeat> = self
            .lock()
            .workers
            .values()
            .filter(|w| w.beat_at >= since)
            .cloned()
            .collect();
        workers.sort_by(|a, b| {
            b.beat_at
                .cmp(&a.beat_at)
                .then(a.worker_id.cmp(&b.worker_id))
        });
        Ok(workers)
    }
}
