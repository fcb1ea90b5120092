//! Group commit of hot-path step commits.
//!
//! Commits of different executions that arrive together are folded by one task into a
//! single batch — one transaction, one hop to SQLite's connection thread — each keeping
//! its own compare-and-set. A lone commit pays one channel hop more than it would alone.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};
use tollgate_store::{Committed, Result, StepCommit, Transition};

use crate::store::commit_batch;

/// Most commits folded into one batch.
const MAX_BATCH: usize = 64;

/// A commit waiting for the committer: `None` back means its compare-and-set did not
/// match (the caller finds out why).
pub(crate) struct Pending {
    pub(crate) commit: StepCommit,
    pub(crate) reply: oneshot::Sender<Result<Option<Committed>>>,
}

/// Starts the committer; it stops when every sender (every store clone) is gone.
pub(crate) fn spawn(writer: sqlx::SqlitePool, wakeups: Arc<Notify>) -> mpsc::Sender<Pending> {
    let (tx, mut rx) = mpsc::channel::<Pending>(1024);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            let releases = batch
                .iter()
                .any(|p| matches!(p.commit.transition, Transition::Release { .. }));
            let commits: Vec<&StepCommit> = batch.iter().map(|p| &p.commit).collect();
            match commit_batch(&writer, &commits).await {
                Ok(results) => {
                    for (pending, result) in batch.into_iter().zip(results) {
                        let _ = pending.reply.send(Ok(result));
                    }
                }
                // An error fails the whole batch: retry each commit alone so the error
                // stays with the commit that caused it.
                Err(_) if batch.len() > 1 => {
                    for pending in batch {
                        let result = commit_batch(&writer, &[&pending.commit])
                            .await
                            .map(|mut r| r.pop().flatten());
                        let _ = pending.reply.send(result);
                    }
                }
                Err(err) => {
                    for pending in batch {
                        let _ = pending
                            .reply
                            .send(Err(tollgate_store::Error::Backend(err.to_string().into())));
                    }
                }
            }
            if releases {
                wakeups.notify_one();
            }
        }
    });
    tx
}
