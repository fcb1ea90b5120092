//! The `tollgate_executions{status}` gauge without a scan of every execution per scrape.
//!
//! Counting every execution by status costs time in proportion to the history kept
//! (108–170 ms per scrape at a million rows on PostgreSQL, on two hosts), and every API
//! server pays it on every scrape. The statuses in flight (`running`, `paused`,
//! `waiting`) are read exactly on every scrape — that read costs in proportion to the
//! work in flight. The terminal statuses are final and only ever grow, so their counts
//! are read at most once per refresh interval (`--metrics-terminal-refresh`) and served
//! from memory in between.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tollgate_model::ExecutionStatus;
use tollgate_store::{Result, Store};

/// Counts of executions per status.
type Counts = Vec<(ExecutionStatus, u64)>;

/// Every status with its count.
pub type StatusCounts = [(ExecutionStatus, u64); ExecutionStatus::ALL.len()];

/// Executions per status for the gauge, with the terminal counts cached.
#[derive(Debug)]
pub struct StatusGauges {
    refresh: Duration,
    /// When the terminal counts were last read, and what they were.
    terminal: Arc<watch::Sender<Option<(Instant, Counts)>>>,
    /// A full count is under way (at most one at a time).
    refreshing: Arc<AtomicBool>,
}

impl StatusGauges {
    /// Terminal counts are read again once they are `refresh` old.
    pub fn new(refresh: Duration) -> Self {
        Self {
            refresh,
            terminal: Arc::new(watch::Sender::new(None)),
            refreshing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Every status with its count (0 when none): in-flight statuses as of now, terminal
    /// ones as of at most `refresh` ago, or of the last count that finished.
    ///
    /// The full count runs in a task of its own, one at a time: a scrape that gives up
    /// on it (its time limit is shorter than a count of a large history) does not
    /// abandon it, and the next scrape does not start another. Only a scrape that comes
    /// before any count finished waits for one (the server starts the first as it
    /// starts: [`Self::warm`]); later ones serve the last counts while a fresher one is
    /// under way.
    pub async fn read(&self, store: &Arc<dyn Store>) -> Result<StatusCounts> {
        let full = Arc::clone(store);
        self.read_with(store.count_in_flight(), move || async move {
            full.count_by_status().await
        })
        .await
    }

    /// Starts the first count of every status now, in the background, when none has
    /// landed: the server calls it as it starts, so that neither the first scrape nor
    /// the first requests after a start wait for, or run beside, a count of a long
    /// history (seconds at ten million ended executions). With `0s`, every scrape counts
    /// and there is nothing to start.
    pub fn warm(&self, store: &Arc<dyn Store>) {
        if self.refresh.is_zero() {
            return;
        }
        let full = Arc::clone(store);
        self.refresh_if_stale(move || async move { full.count_by_status().await });
    }

    /// Starts `full` in a task of its own when the terminal counts are due and no count
    /// is under way.
    fn refresh_if_stale<F, Fut>(&self, full: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Counts>> + Send + 'static,
    {
        let stale = self
            .terminal
            .borrow()
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= self.refresh);
        if stale && !self.refreshing.swap(true, Ordering::AcqRel) {
            let count = full();
            let terminal = Arc::clone(&self.terminal);
            let refreshing = Arc::clone(&self.refreshing);
            tokio::spawn(async move {
                match count.await {
                    Ok(all) => {
                        let ended = all.into_iter().filter(|(s, _)| s.is_terminal());
                        terminal.send_replace(Some((Instant::now(), ended.collect())));
                    }
                    Err(err) => tracing::warn!("cannot count ended executions for /metrics: {err}"),
                }
                refreshing.store(false, Ordering::Release);
            });
        }
    }

    /// [`Self::read`] with the two counts given: `in_flight` now, and `full` (every
    /// status) when the terminal counts are due.
    async fn read_with<F, Fut>(
        &self,
        in_flight: impl Future<Output = Result<Counts>>,
        full: F,
    ) -> Result<StatusCounts>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Counts>> + Send + 'static,
    {
        // `0s`: the operator asked for exact counts on every scrape.
        if self.refresh.is_zero() {
            return Ok(by_status(&full().await?));
        }
        let cached = self.terminal.borrow().clone();
        self.refresh_if_stale(full);
        let ended = match cached {
            Some((_, counts)) => counts,
            None => {
                let mut first = self.terminal.subscribe();
                let landed = first.wait_for(Option::is_some).await;
                landed
                    .ok()
                    .and_then(|v| v.as_ref().map(|(_, c)| c.clone()))
                    .unwrap_or_default()
            }
        };
        let mut counts = in_flight.await?;
        counts.extend(ended);
        Ok(by_status(&counts))
    }
}

/// Every status with its count in `counts` (0 when absent).
fn by_status(counts: &[(ExecutionStatus, u64)]) -> StatusCounts {
    ExecutionStatus::ALL.map(|status| {
        let n = counts
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n);
        (status, n)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use tollgate_store::testkit::{running, t0, waiting, workflow};
    use tollgate_store::{MemoryStore, Store};

    use super::*;

    /// Lets the spawned count run (time is paused in these tests).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

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

        let before = gauges.read(&store).await.unwrap();
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
        let after = gauges.read(&store).await.unwrap();
        assert_eq!(count(&after, ExecutionStatus::Running), 1);
        assert_eq!(count(&after, ExecutionStatus::Waiting), 1);
        assert_eq!(count(&after, ExecutionStatus::Cancelled), 0);

        // Once the refresh interval has passed, terminal counts are read again: that
        // scrape starts the count, and the next serves it.
        tokio::time::advance(Duration::from_secs(1)).await;
        let stale = gauges.read(&store).await.unwrap();
        assert_eq!(count(&stale, ExecutionStatus::Cancelled), 0);
        settle().await;
        let refreshed = gauges.read(&store).await.unwrap();
        assert_eq!(count(&refreshed, ExecutionStatus::Cancelled), 1);
        assert_eq!(count(&refreshed, ExecutionStatus::Running), 1);
        assert_eq!(count(&refreshed, ExecutionStatus::Waiting), 1);

        // `0s`: everything is counted on every read.
        let exact = StatusGauges::new(Duration::ZERO);
        exact.read(&store).await.unwrap();
        store
            .cancel_execution(second.id, Some("ops"), None, t0())
            .await
            .unwrap();
        let now = exact.read(&store).await.unwrap();
        assert_eq!(count(&now, ExecutionStatus::Cancelled), 2);
        assert_eq!(count(&now, ExecutionStatus::Running), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_count_runs_once_and_outlives_the_scrapes_that_gave_up_on_it() {
        use std::sync::atomic::AtomicU32;
        let gauges = StatusGauges::new(Duration::from_secs(60));
        let started = Arc::new(AtomicU32::new(0));
        // A count of a large history: longer than a scrape waits for the database.
        let full = || {
            started.fetch_add(1, Ordering::SeqCst);
            async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok(vec![(ExecutionStatus::Completed, 7)])
            }
        };
        let in_flight = || async { Ok(vec![(ExecutionStatus::Running, 1)]) };
        for _ in 0..4 {
            let scrape = gauges.read_with(in_flight(), full);
            assert!(
                tokio::time::timeout(Duration::from_secs(2), scrape)
                    .await
                    .is_err(),
                "the first scrapes give up waiting"
            );
        }
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "one count, not one per scrape"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let counts =
            tokio::time::timeout(Duration::from_secs(2), gauges.read_with(in_flight(), full))
                .await
                .expect("the count that the scrapes gave up on landed")
                .unwrap();
        assert_eq!(count(&counts, ExecutionStatus::Completed), 7);
        assert_eq!(count(&counts, ExecutionStatus::Running), 1);
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_warmed_gauge_answers_its_first_scrape_without_counting_again() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let w = workflow(&store, "orders", "1", "order.created").await;
        let done = running(&store, &w, "w1").await;
        store
            .cancel_execution(done.id, Some("ops"), None, t0())
            .await
            .unwrap();
        let gauges = StatusGauges::new(Duration::from_secs(60));
        gauges.warm(&store);
        settle().await;
        // The count landed before any scrape: the first one is served from it, and a
        // full count that would block is never started.
        let never = || async {
            std::future::pending::<()>().await;
            Ok(Vec::new())
        };
        let in_flight = || async { Ok(vec![(ExecutionStatus::Running, 0)]) };
        let first =
            tokio::time::timeout(Duration::from_secs(1), gauges.read_with(in_flight(), never))
                .await
                .expect("the first scrape does not wait")
                .unwrap();
        assert_eq!(count(&first, ExecutionStatus::Cancelled), 1);
    }
}
