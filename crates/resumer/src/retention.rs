//! History retention in the worker loop (docs/operations.md, "History retention"): ended
//! executions older than their workflow's retention are deleted in small batches, one
//! node at a time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tollgate_engine::Engine;
use tollgate_model::definition::compare_versions;
use tollgate_model::records::Timestamp;
use tollgate_store::{PageRequest, Purge, WorkflowFilter};

use crate::archive::ArchiveDir;
use crate::Result;

/// How long ended executions are kept, and how fast they are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionOptions {
    /// Kept this long after they end, for workflows whose definition sets no
    /// `retention`; `None` keeps them (a definition's `retention` still applies).
    pub default: Option<Duration>,
    /// Executions deleted per transaction: small, so no purge holds locks for long.
    pub batch: u32,
    /// How often the loop looks for expired history when the last batch was not full
    /// (a full batch is followed by the next one on the next pass).
    pub interval: Duration,
    /// Where each batch is written before it is deleted; `None`: deleted only.
    pub archive: Option<ArchiveDir>,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        Self {
            default: None,
            batch: 500,
            interval: Duration::from_secs(60),
            archive: None,
        }
    }
}

/// The retention part of a worker: when it next looks, and what it does then.
#[derive(Debug, Clone)]
pub(crate) struct Retention {
    engine: Engine,
    options: RetentionOptions,
    next_at: Arc<Mutex<Option<Timestamp>>>,
}

impl Retention {
    pub(crate) fn new(engine: Engine, options: RetentionOptions) -> Self {
        Self {
            engine,
            options,
            next_at: Arc::new(Mutex::new(None)),
        }
    }

    /// Deletes one batch of expired history when it is time to look; returns how many
    /// executions it deleted.
    pub(crate) async fn pass(&self, now: Timestamp) -> Result<usize> {
        let due = self
            .next_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none_or(|at| at <= now);
        if !due || self.options.batch == 0 {
            return Ok(0);
        }
        let later = now
            + chrono::TimeDelta::from_std(self.options.interval).unwrap_or(chrono::TimeDelta::MAX);
        // A failed look is tried again after the interval, not on every pass.
        *self.next_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(later);
        let purge = self.policy(now).await?;
        let purged = if purge.is_empty() {
            Vec::new()
        } else if let Some(archive) = &self.options.archive {
            // Archive first, then delete only what the archive holds. A crash between
            // the two leaves the batch in the database, and the next pass archives it
            // again (lines may repeat; none is lost).
            let batch = self
                .engine
                .store()
                .purgeable(&purge, self.options.batch)
                .await?;
            if batch.is_empty() {
                Vec::new()
            } else {
                archive.keep(&self.engine, &batch).await?;
                let archived = Purge {
                    only: Some(batch.iter().map(|p| p.execution_id).collect()),
                    ..purge
                };
                self.engine
                    .store()
                    .purge_ended(&archived, self.options.batch)
                    .await?
            }
        } else {
            self.engine
                .store()
                .purge_ended(&purge, self.options.batch)
                .await?
        };
        let full = purged.len() >= self.options.batch as usize;
        if full {
            *self.next_at.lock().unwrap_or_else(PoisonError::into_inner) = Some(now);
        }
        if !purged.is_empty() {
            metrics::counter!("tollgate_executions_purged_total").increment(purged.len() as u64);
            let oldest = purged.iter().map(|p| p.ended_at).min();
            tracing::info!(count = purged.len(), oldest_end = ?oldest, "deleted ended executions past their retention");
        }
        Ok(purged.len())
    }

    /// The cutoffs at `now`: the server's default, and each workflow whose highest
    /// version's definition sets `retention`.
    async fn policy(&self, now: Timestamp) -> Result<Purge> {
        let store = self.engine.store();
        let mut highest: BTreeMap<String, (String, Option<tollgate_model::Duration>)> =
            BTreeMap::new();
        let mut page = PageRequest::first(500);
        loop {
            let workflows = store
                .list_workflows(&WorkflowFilter::default(), &page)
                .await?;
            for w in &workflows.items {
                let key = w.workflow_id().to_owned();
                let version = w.version().to_owned();
                let newer = highest
                    .get(&key)
                    .is_none_or(|(seen, _)| compare_versions(&version, seen).is_gt());
                if newer {
                    highest.insert(key, (version, w.definition.retention));
                }
            }
            match workflows.next_cursor {
                Some(cursor) => page.cursor = Some(cursor),
                None => break,
            }
        }
        let before = |keep: Duration| {
            chrono::TimeDelta::from_std(keep)
                .ok()
                .and_then(|keep| now.checked_sub_signed(keep))
        };
        Ok(Purge {
            default_before: self.options.default.and_then(before),
            per_workflow: highest
                .into_iter()
                .filter_map(|(key, (_, keep))| Some((key, before(keep?.as_std())?)))
                .collect(),
            only: None,
        })
    }
}
