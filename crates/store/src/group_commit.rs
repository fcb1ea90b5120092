//! Group commit for backends: one task that folds the requests queued at that moment
//! into one backend batch.
//!
//! A durable write costs a flush (or a round trip to another thread); writes of
//! different executions that arrive together can share it. The backend supplies how to
//! write a batch — every request keeping its own checks (compare-and-set, `event_id`
//! uniqueness, the quorum rules) — and this module does the queueing. A lone request pays
//! one channel hop more than it would alone. The SQL backends batch step commits this
//! way, and step begins, decisions and events too.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::types::{Committed, StepCommit};
use crate::{Error, Result};

/// Most requests folded into one batch.
pub const MAX_BATCH: usize = 64;

/// A request waiting for the batcher, with where its answer goes.
type Pending<T, R> = (T, oneshot::Sender<Result<R>>);

/// The batching task's input; cheap to clone. `T` is a request, `R` its answer.
#[derive(Debug)]
pub struct Batcher<T, R> {
    queue: mpsc::Sender<Pending<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

/// Step commits: the answer is the new state, or `None` when the commit's
/// compare-and-set did not match.
pub type GroupCommitter = Batcher<StepCommit, Option<Committed>>;

/// One [`crate::ExecutionStore::begin_step`] waiting for a backend's group committer of
/// step begins: the `running` record a side-effect step writes before it acts.
#[derive(Debug, Clone)]
pub struct BeginRequest {
    /// The execution.
    pub execution_id: uuid::Uuid,
    /// The lease owner it must have.
    pub owner: String,
    /// The version it must be at.
    pub expected_version: i64,
    /// The `running` record.
    pub record: tollgate_model::records::StepRecord,
    /// When.
    pub now: tollgate_model::records::Timestamp,
}

/// Step begins: the answer is the execution's new version, or `None` when the begin's
/// compare-and-set did not match (nothing written for it).
pub type BeginCommitter = Batcher<BeginRequest, Option<i64>>;

impl BeginCommitter {
    /// [`crate::ExecutionStore::begin_step`] through the batcher: the execution's new
    /// version, or — its compare-and-set not matching, nothing written — the precise
    /// refusal, from the row as `store` reads it afterwards.
    pub async fn begin(
        &self,
        store: &(impl crate::ExecutionStore + ?Sized),
        request: BeginRequest,
    ) -> Result<i64> {
        let (execution_id, owner, expected) = (
            request.execution_id,
            request.owner.clone(),
            request.expected_version,
        );
        match self.submit(request).await? {
            Some(version) => Ok(version),
            None => {
                let execution = store.get_execution(execution_id).await?;
                Err(crate::rules::refusal(&execution, &owner, Some(expected)))
            }
        }
    }
}

impl<T, R> Batcher<T, R>
where
    T: Clone + Send + Sync + 'static,
    R: Send + 'static,
{
    /// Starts the batching task on the current tokio runtime. `write_batch` writes a
    /// batch atomically and returns one answer per request, in order (an inner `Err` is
    /// that request's own refusal); an outer `Err` — a database error, nothing written —
    /// makes the task write each request of the batch alone, so the error reaches only
    /// the request that caused it. The task stops when every clone of the handle is gone.
    pub fn spawn<C, F>(write_batch: C) -> Self
    where
        C: Fn(Arc<Vec<T>>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Vec<Result<R>>>> + Send + 'static,
    {
        Self::spawn_in_flight(1, write_batch)
    }

    /// [`Batcher::spawn`] with up to `in_flight` batches written at once: the next batch
    /// is gathered when a slot frees, from what queued meanwhile. A request waits for a
    /// free slot and its own batch instead of for the batch in flight and then its own;
    /// `write_batch` must then be safe to run concurrently with itself (PostgreSQL's
    /// decisions lock their rows in id order, so concurrent batches serialise on shared
    /// requests and never deadlock).
    pub fn spawn_in_flight<C, F>(in_flight: usize, write_batch: C) -> Self
    where
        C: Fn(Arc<Vec<T>>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Vec<Result<R>>>> + Send + 'static,
    {
        let (queue, mut rx) = mpsc::channel::<Pending<T, R>>(1024);
        let write_batch = Arc::new(write_batch);
        let slots = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            // Requests taken off the channel but not yet in a batch.
            let mut queued: std::collections::VecDeque<Pending<T, R>> =
                std::collections::VecDeque::new();
            loop {
                if queued.is_empty() {
                    match rx.recv().await {
                        Some(first) => queued.push_back(first),
                        None => return,
                    }
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                while queued.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => queued.push_back(next),
                        Err(_) => break,
                    }
                }
                let take = batch_size(queued.len(), in_flight);
                let batch: Vec<_> = queued.drain(..take).collect();
                if in_flight <= 1 {
                    // One at a time: written by this task, without a hand-off.
                    write_guarded(&*write_batch, batch).await;
                    continue;
                }
                let write_batch = write_batch.clone();
                tokio::spawn(async move {
                    write_guarded(&*write_batch, batch).await;
                    drop(slot);
                });
            }
        });
        Self { queue }
    }

    /// Whether the batching task is still taking requests. It survives a panicking
    /// batch write (that batch's requests get an error); a backend reports itself not
    /// ready when this turns false, rather than failing every write while it looks
    /// healthy.
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Queues a request and waits for its batch's answer.
    pub async fn submit(&self, item: T) -> Result<R> {
        let stopped = || Error::Backend("the batching task has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((item, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Batches larger than this are split between the writers when several may write at
/// once.
const SPLIT_ABOVE: usize = 16;

/// How many of `queued` requests the next batch takes. One writer takes all (up to
/// [`MAX_BATCH`]). With several, a burst is shared out: a batch over [`SPLIT_ABOVE`]
/// takes only its share, and the rest goes to the next free writer. Measured on the
/// approval benchmark's opening burst: one decision went alone and the 30 that arrived
/// within the next millisecond in one batch, whose write took 23 ms while the other
/// writer idled after its single decision. Up to `SPLIT_ABOVE` a batch takes everything,
/// so the steady state (about 8 per batch there) keeps its batches whole.
fn batch_size(queued: usize, in_flight: usize) -> usize {
    let all = queued.min(MAX_BATCH);
    if in_flight <= 1 || all <= SPLIT_ABOVE {
        return all;
    }
    queued.div_ceil(in_flight).clamp(SPLIT_ABOVE, all)
}

/// [`write`], surviving a panic in `write_batch`: the batch's requests are answered
/// with an error (their replies are dropped, which `submit` reports) and the batching
/// task goes on with the next batch instead of dying with every later request.
async fn write_guarded<T, R, C, F>(write_batch: &C, batch: Vec<Pending<T, R>>)
where
    T: Clone,
    C: Fn(Arc<Vec<T>>) -> F,
    F: Future<Output = Result<Vec<Result<R>>>>,
{
    use futures_util::FutureExt;
    let written = std::panic::AssertUnwindSafe(write(write_batch, batch))
        .catch_unwind()
        .await;
    if written.is_err() {
        tracing::error!(
            "a batch write panicked: its requests were answered with an error; the batching task goes on"
        );
    }
}

/// Writes one batch and answers each request; a failed batch is written request by
/// request, so a database error reaches only the request that caused it.
async fn write<T, R, C, F>(write_batch: &C, batch: Vec<Pending<T, R>>)
where
    T: Clone,
    C: Fn(Arc<Vec<T>>) -> F,
    F: Future<Output = Result<Vec<Result<R>>>>,
{
    let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
    let items = Arc::new(items);
    match write_batch(items.clone()).await {
        Ok(answers) => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
        // No answer in time: the batch may have been written, and a request written alone
        // would wait as long again. Every request gets the error.
        Err(Error::Unavailable(message)) => {
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(message.clone())));
            }
        }
        Err(err) if replies.len() == 1 => {
            if let Some(reply) = replies.into_iter().next() {
                let _ = reply.send(Err(err));
            }
        }
        Err(err) => {
            tracing::warn!(
                batch = items.len(),
                "a batch write failed ({err}); writing its requests one by one"
            );
            for (item, reply) in items.iter().zip(replies) {
                let answer =
                    write_batch(Arc::new(vec![item.clone()]))
                        .await
                        .and_then(|mut answers| {
                            answers
                                .pop()
                                .unwrap_or_else(|| Err(Error::Backend("no answer".into())))
                        });
                let _ = reply.send(answer);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;

    /// A batcher whose batches double their items, fail as a whole when they hold 13
    /// among others, and refuse 13 alone.
    fn doubling() -> Batcher<u32, u32> {
        Batcher::spawn(|items: Arc<Vec<u32>>| async move {
            if items.len() > 1 && items.contains(&13) {
                return Err(Error::Backend("batch failed".into()));
            }
            Ok(items
                .iter()
                .map(|&i| {
                    if i == 13 {
                        Err(Error::Conflict("thirteen".into()))
                    } else {
                        Ok(i * 2)
                    }
                })
                .collect())
        })
    }

    /// A batch that got no answer in time may have been written: its requests all get
    /// the error, and none is written again alone (which would wait as long again, once
    /// per request).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unanswered_batch_is_not_retried_request_by_request() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let (open, gate) = watch::channel(false);
        let batcher: Batcher<u32, u32> = Batcher::spawn(move |_items: Arc<Vec<u32>>| {
            let counted = counted.clone();
            let mut gate = gate.clone();
            async move {
                // Hold the first batch until every request has queued behind it.
                let _ = gate.wait_for(|open| *open).await;
                counted.fetch_add(1, Ordering::SeqCst);
                Err(Error::Unavailable("no answer in time".into()))
            }
        });
        let submitted: Vec<_> = (0..4)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { batcher.submit(i).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        open.send(true).unwrap();
        for answer in submitted {
            assert!(matches!(answer.await.unwrap(), Err(Error::Unavailable(_))));
        }
        // Without the rule: the first batch, then each of the others alone.
        assert!(calls.load(Ordering::SeqCst) <= 2, "{calls:?}");
    }

    /// A batch write that panics fails only its own requests: the batching task lives
    /// on, later requests are written, and the batcher still reports itself running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_batch_fails_its_requests_and_the_task_goes_on() {
        for in_flight in [1, 2] {
            let batcher: Batcher<u32, u32> =
                Batcher::spawn_in_flight(in_flight, |items: Arc<Vec<u32>>| async move {
                    assert!(!items.contains(&7), "a bug in the batch writer");
                    Ok(items.iter().map(|&i| Ok(i + 1)).collect())
                });
            assert!(batcher.submit(7).await.is_err());
            assert!(batcher.is_running());
            assert_eq!(batcher.submit(1).await.unwrap(), 2);
            assert_eq!(batcher.submit(41).await.unwrap(), 42);
        }
    }

    #[test]
    fn bursts_are_shared_between_writers_and_small_batches_stay_whole() {
        assert_eq!(batch_size(1, 2), 1);
        assert_eq!(
            batch_size(16, 2),
            16,
            "up to the threshold a batch takes all"
        );
        assert_eq!(batch_size(30, 2), 16, "a burst of 30 is split 16 + 14");
        assert_eq!(batch_size(14, 2), 14);
        assert_eq!(batch_size(100, 2), MAX_BATCH.min(50));
        assert_eq!(batch_size(500, 2), MAX_BATCH, "never more than the maximum");
        assert_eq!(batch_size(30, 1), 30, "one writer takes everything");
        assert_eq!(batch_size(500, 1), MAX_BATCH);
        assert_eq!(batch_size(40, 3), 16);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_request_gets_its_own_answer_even_when_its_batch_fails() {
        let batcher = doubling();
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let batcher = batcher.clone();
                tokio::spawn(async move { (i, batcher.submit(i).await) })
            })
            .collect();
        for task in tasks {
            let (i, answer) = task.await.unwrap();
            match answer {
                Ok(doubled) => assert_eq!(doubled, i * 2),
                Err(err) => {
                    assert_eq!(i, 13, "only 13 is refused, not {i}: {err}");
                    assert!(err.is_conflict(), "13 gets its own refusal: {err}");
                }
            }
        }
    }

    /// Batches that wait for `open`, counting how many run at once.
    fn gated(
        in_flight: usize,
        open: watch::Receiver<bool>,
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    ) -> Batcher<u32, u32> {
        Batcher::spawn_in_flight(in_flight, move |items: Arc<Vec<u32>>| {
            let (mut open, running, most) = (open.clone(), running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let _ = open.wait_for(|open| *open).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(items.iter().map(|&i| Ok(i)).collect())
            }
        })
    }

    fn submitted(batcher: &Batcher<u32, u32>, item: u32) -> tokio::task::JoinHandle<Result<u32>> {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.submit(item).await })
    }

    async fn until(running: &AtomicUsize, n: usize) {
        for _ in 0..5_000 {
            if running.load(Ordering::SeqCst) == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never {n} batches running");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_batch_starts_while_the_first_is_in_flight() {
        let (gate, open) = watch::channel(false);
        let (running, most) = (Arc::default(), Arc::default());
        let batcher = gated(2, open, Arc::clone(&running), Arc::clone(&most));
        let first = submitted(&batcher, 1);
        until(&running, 1).await;
        let second = submitted(&batcher, 2);
        until(&running, 2).await;
        gate.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_in_flight_means_one_batch_at_a_time() {
        let (gate, open) = watch::channel(false);
        let (running, most) = (Arc::default(), Arc::default());
        let batcher = gated(1, open, Arc::clone(&running), Arc::clone(&most));
        let first = submitted(&batcher, 1);
        until(&running, 1).await;
        let second = submitted(&batcher, 2);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(running.load(Ordering::SeqCst), 1, "the second batch waits");
        gate.send(true).unwrap();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }
}
