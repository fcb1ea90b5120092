//! Group commit for backends: one task that folds the requests queued at that moment
//! into one backend batch.
//!
//! A durable write costs a flush (or a round trip to another thread); writes of
//! different executions that arrive together can share it. The backend supplies how to
//! write a batch — every request keeping its own checks (compare-and-set, `event_id`
//! uniqueness, the quorum rules) — and this module does the queueing. A lone request pays
//! one channel hop more than it would alone. The SQL backends batch step commits this
//! way, and PostgreSQL also decisions and events.

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
        C: Fn(Arc<Vec<T>>) -> F + Send + 'static,
        F: Future<Output = Result<Vec<Result<R>>>> + Send,
    {
        let (queue, mut rx) = mpsc::channel::<Pending<T, R>>(1024);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                let items = Arc::new(items);
                match write_batch(items.clone()).await {
                    Ok(answers) => {
                        for (reply, answer) in replies.into_iter().zip(answers) {
                            let _ = reply.send(answer);
                        }
                    }
                    Err(err) if replies.len() == 1 => {
                        if let Some(reply) = replies.into_iter().next() {
                            let _ = reply.send(Err(err));
                        }
                    }
                    Err(_) => {
                        for (item, reply) in items.iter().zip(replies) {
                            let answer = write_batch(Arc::new(vec![item.clone()])).await.and_then(
                                |mut answers| {
                                    answers
                                        .pop()
                                        .unwrap_or_else(|| Err(Error::Backend("no answer".into())))
                                },
                            );
                            let _ = reply.send(answer);
                        }
                    }
                }
            }
        });
        Self { queue }
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
