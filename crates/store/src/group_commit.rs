//! Group commit for backends: one task that folds the step commits queued at that moment
//! into one backend batch.
//!
//! A durable commit costs a flush (or a round trip to another thread); commits of
//! different executions that arrive together can share it. The backend supplies how to
//! commit a batch — every commit keeping its own compare-and-set — and this module does
//! the queueing. A lone commit pays one channel hop more than it would alone.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::types::{Committed, StepCommit};
use crate::{Error, Result};

/// Most commits folded into one batch.
pub const MAX_BATCH: usize = 64;

/// A commit waiting for the committer.
#[derive(Debug)]
pub struct Pending {
    commit: StepCommit,
    reply: oneshot::Sender<Result<Option<Committed>>>,
}

/// The committer's input; cheap to clone.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    queue: mpsc::Sender<Pending>,
}

impl GroupCommitter {
    /// Starts the committer task on the current tokio runtime. `commit_batch` commits a
    /// batch atomically and returns, per commit, its new state or `None` when its
    /// compare-and-set did not match; `after_batch` runs after each batch (e.g. to wake
    /// workers). The task stops when every clone of the returned handle is gone.
    pub fn spawn<C, F>(
        commit_batch: C,
        after_batch: impl Fn(&[StepCommit]) + Send + 'static,
    ) -> Self
    where
        C: Fn(Arc<Vec<StepCommit>>) -> F + Send + 'static,
        F: Future<Output = Result<Vec<Option<Committed>>>> + Send,
    {
        let (queue, mut rx) = mpsc::channel::<Pending>(1024);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (commits, replies): (Vec<StepCommit>, Vec<_>) =
                    batch.into_iter().map(|p| (p.commit, p.reply)).unzip();
                let commits = Arc::new(commits);
                let outcome = commit_batch(commits.clone()).await;
                after_batch(&commits);
                match outcome {
                    Ok(results) => {
                        for (reply, result) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(result));
                        }
                    }
                    // An error fails the whole batch: retry each commit alone so the error
                    // reaches only the commit that caused it.
                    Err(_) if replies.len() > 1 => {
                        let commits =
                            Arc::try_unwrap(commits).unwrap_or_else(|shared| (*shared).clone());
                        for (commit, reply) in commits.into_iter().zip(replies) {
                            let result = commit_batch(Arc::new(vec![commit]))
                                .await
                                .map(|mut r| r.pop().flatten());
                            let _ = reply.send(result);
                        }
                    }
                    Err(err) => {
                        let message = err.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(Error::Backend(message.clone().into())));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Queues a commit and waits for its batch: its new state, or `None` when its
    /// compare-and-set did not match.
    pub async fn commit(&self, commit: StepCommit) -> Result<Option<Committed>> {
        let stopped = || Error::Backend("the commit task has stopped".into());
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { commit, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}
