//! The `tollgate_executions{status}` gauge without a scan of every execution per scrape.
//!
//! Counting every execution by status costs time in proportion to the history kept
//! (108–170 ms per scrape at a million rows on PostgreSQL, on two hosts), and every API
//! server pays it on every scrape. The statuses in flight (`running`, `paused`,
//! `waiting`) are read exactly on every scrape — that read costs in proportion to the
//! work in flight. The terminal statuses are final and only ever grow, so their counts
//! are read at most once per refresh interval (`--metrics-terminal-refresh`) and served
//! from memory in between.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tollgate_model::ExecutionStatus;
use tollgate_store::{ExecutionStore, Result};

/// Counts of executions per status.
type Counts = Vec<(ExecutionStatus, u64)>;

/// Executions per status for the gauge, with the terminal counts cached.
#[derive(Debug)]
pub struct StatusGauges {
    refresh: Duration,
    /// When the terminal counts were read, and what they were.
    terminal: Mutex<Option<(Instant, Counts)>>,
}

impl StatusGauges {
    /// Terminal counts are read again once they are `refresh` old.
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            terminal: Mutex::new(None),
        }
    }

    /// Every status with its count (0 when none): in-flight statuses as of now, terminal
    /// ones as of at most `refresh` ago. Concurrent callers share one full count.
    pub async fn read(
        &self,
        store: &dyn ExecutionStore,
    ) -> Result<[(ExecutionStatus, u64); ExecutionStatus::ALL.len()]> {
        let mut terminal = self.terminal.lock().await;
        let counts = match terminal.as_ref() {
            Some((at, cached)) if at.elapsed() < self.refresh => {
                let cached = cached.clone();
                drop(terminal);
                let mut counts = store.count_in_flight().await?;
                counts.extend(cached);
                counts
            }
            _ => {
                let all = store.count_by_status().await?;
                let ended = all.iter().filter(|(s, _)| s.is_terminal()).copied();
                *terminal = Some((Instant::now(), ended.collect()));
                all
            }
        };
        Ok(ExecutionStatus::ALL.map(|status| {
            let n = counts
                .iter()
                .find(|(s, _)| *s == status)
                .map_or(0, |(_, n)| *n);
            (status, n)
        }))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use tollgate_store::testkit::{running, t0, waiting, workflow};
    use tollgate_store::{MemoryStore, Store};

    use super::*;

    fn count(counts: &[(ExecutionStatus, u64)], status: ExecutionStatus) -> u64 {
        counts.iter().find(|(s, _)| *s == status).unwrap().1
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_counts_are_current_and_terminal_ones_refresh_on_schedule() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let w = workflow(&store, "orders", "1", "order.created").await;
        let first = running(&store, &w, "w1").await;
        let second = running(&store, &w, "w1").await;
        let gauges = StatusGauges::new(Duration::from_secs(60));

        let before = gauges.read(store.as_ref()).await.unwrap();
        assert_eq!(count(&before, ExecutionStatus::Running), 2);
        assert_eq!(count(&before, ExecutionStatus::Cancelled), 0);
        assert_eq!(before.len(), ExecutionStatus::ALL.len());

        store
            .cancel_execution(first.id, Some("ops"), None, t0())
            .await
            .unwrap();
        waiting(&store, &w, None).await;

        // In flight: read now. Terminal: the count read at the last refresh.
        tokio::time::advance(Duration::from_secs(59)).await;
        let after = gauges.read(store.as_ref()).await.unwrap();
        assert_eq!(count(&after, ExecutionStatus::Running), 1);
        assert_eq!(count(&after, ExecutionStatus::Waiting), 1);
        assert_eq!(count(&after, ExecutionStatus::Cancelled), 0);

        // Once the refresh interval has passed, terminal counts are read again.
        tokio::time::advance(Duration::from_secs(1)).await;
        let refreshed = gauges.read(store.as_ref()).await.unwrap();
        assert_eq!(count(&refreshed, ExecutionStatus::Cancelled), 1);
        assert_eq!(count(&refreshed, ExecutionStatus::Running), 1);
        assert_eq!(count(&refreshed, ExecutionStatus::Waiting), 1);

        // `0s`: everything is counted on every read.
        let exact = StatusGauges::new(Duration::ZERO);
        exact.read(store.as_ref()).await.unwrap();
        store
            .cancel_execution(second.id, Some("ops"), None, t0())
            .await
            .unwrap();
        let now = exact.read(store.as_ref()).await.unwrap();
        assert_eq!(count(&now, ExecutionStatus::Cancelled), 2);
        assert_eq!(count(&now, ExecutionStatus::Running), 0);
    }
}
